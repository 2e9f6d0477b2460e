"""The sweep's cells as jobs (issue 36): submitit's local executor and a real SLURM write the pool's records and
tables, a killed or preempted job resumes from its checkpoint and writes one record, --emit_jobs lines run by hand
write the same records, --status names every cell's state, and bad job flags are refused before anything runs."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llava_df.errors import RunError
from llava_df.sweep.compare import main, parse, plan
from llava_df.sweep.jobs import CellJob, job_name, state_file
from llava_df.sweep.record import key_inputs

REPO = Path(__file__).resolve().parent.parent
# The smallest sweep the other sweep tests run (--quick's data and batch), one projector, long enough (24 steps,
# a checkpoint every 4) that a job can be stopped between two checkpoints.
SWEEP = ["--quick", "--skip_probes", "--projectors", "mlp2x_gelu", "--max_steps", "24",
         "--save_strategy", "steps", "--save_steps", "4"]  # fmt: skip
MEASURED_RECORD = ("time", "peak_memory", "memory_check")  # what a run measures of its machine, not computes
MEASURED_COLUMNS = ("peak_memory_mib", "s_per_step")


def _dirs(root: Path) -> list[str]:
    return ["--results_dir", str(root / "results"), "--runs_dir", str(root / "runs")]


def _set_aside(root: Path, name: str) -> None:
    """Move the last sweep's results and runs aside, so the next one writes to the very same paths (its records'
    output_dir included) and can be compared field by field."""
    for folder in ("results", "runs"):
        if (root / folder).exists():
            (root / folder).rename(root / f"{name}_{folder}")


def _records(results: Path) -> dict[str, dict]:
    return {
        p.stem: {k: v for k, v in json.loads(p.read_text()).items() if k not in MEASURED_RECORD}
        for p in sorted((results / "comparison" / "runs").glob("*.json"))
    }


def _table(results: Path) -> list[dict]:
    with (results / "comparison.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in MEASURED_COLUMNS} for row in csv.DictReader(f)]


def _same_as_the_pool(root: Path, results: Path) -> None:
    pool = root / "pool_results"
    jobs, expected = _records(results), _records(pool)
    assert (
        sorted(jobs) == sorted(expected) == ["mlp2x_gelu__lora__seed0", "mlp2x_gelu__projector_only__seed0"]
    )
    for name in expected:
        assert jobs[name] == expected[name], name  # metrics, scores per image, config, key, parameters, env
    assert _table(results) == _table(pool)
    assert (results / "comparison_summary.md").read_text() == (pool / "comparison_summary.md").read_text()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """The reference: the pool's records and tables of SWEEP, set aside as pool_results / pool_runs."""
    root = tmp_path_factory.mktemp("jobs")
    main([*SWEEP, *_dirs(root)])
    _set_aside(root, "pool")
    return root


@pytest.mark.slow
def test_local_jobs_write_the_pools_records_and_tables(pool, capsys):
    pytest.importorskip("submitit")
    _set_aside(pool, "before_local")
    main([*SWEEP, *_dirs(pool), "--executor", "local", "--workers", "2"])
    _same_as_the_pool(pool, pool / "results")
    jobs = pool / "runs" / "jobs" / "comparison"
    assert len(json.loads((jobs / "jobs.json").read_text())) == 2  # one submitit job per cell
    capsys.readouterr()
    status = main([*SWEEP, *_dirs(pool), "--status"])
    assert [c["state"] for c in status["cells"]] == ["done", "done"]
    assert "2 cells: 2 done, 0 running, 0 failed, 0 pending" in capsys.readouterr().out


@pytest.mark.slow
def test_emitted_lines_run_by_hand_write_the_same_records_and_status_shows_the_half_done_study(pool, capsys):
    _set_aside(pool, "before_emit")
    lines_file = pool / "cells.txt"
    main([*SWEEP, *_dirs(pool), "--emit_jobs", str(lines_file)])
    lines = lines_file.read_text().splitlines()
    assert [line.rsplit(" --cell ", 1)[1] for line in lines] == [
        "mlp2x_gelu__projector_only__seed0",
        "mlp2x_gelu__lora__seed0",
    ]
    assert all(line.startswith(f"cd {REPO} && ") and "--emit_jobs" not in line for line in lines)
    done = subprocess.run(
        ["sh", "-c", lines[0]], capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = pool / "results" / "comparison" / "runs" / "mlp2x_gelu__projector_only__seed0.json"
    assert _records(pool / "results") == {record.stem: _records(pool / "pool_results")[record.stem]}
    capsys.readouterr()
    status = main([*SWEEP, *_dirs(pool), "--status"])
    assert {c["name"]: c["state"] for c in status["cells"]} == {
        "mlp2x_gelu__projector_only__seed0": "done",
        "mlp2x_gelu__lora__seed0": "pending",
    }
    out = capsys.readouterr().out
    assert "2 cells: 1 done, 0 running, 0 failed, 1 pending" in out
    # what is left to run: the emitted file now holds the other cell only
    main([*SWEEP, *_dirs(pool), "--emit_jobs", str(lines_file)])
    assert [line.rsplit(" --cell ", 1)[1] for line in lines_file.read_text().splitlines()] == [
        "mlp2x_gelu__lora__seed0"
    ]


def _task(driver_pid: int):
    """The submitit job process running the cell (the local executor's controller starts it)."""
    import psutil

    for proc in psutil.Process(driver_pid).children(recursive=True):
        if "submitit.core._submit" in " ".join(proc.cmdline()):
            return proc
    return None


def _wait_for(predicate, what: str, timeout: float = 180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _complete_checkpoints(run: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in run.glob("checkpoint-*/llava_df_complete.json"))


def _in_thread(argv: list[str]) -> tuple[threading.Thread, dict]:
    """main(argv) in a thread of this process (the test stops its job meanwhile); what it returned or raised."""
    outcome: dict = {}

    def target():
        try:
            outcome["result"] = main(argv)
        except BaseException as err:  # SystemExit from cli_entry: the sweep's one error line
            outcome["error"] = err

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


@pytest.mark.slow
def test_a_killed_job_resubmitted_and_a_preempted_one_resume_and_write_one_record(pool, capsys):
    pytest.importorskip("submitit")
    _set_aside(pool, "before_kill")
    argv = [*SWEEP, "--strategies", "projector_only", *_dirs(pool), "--executor", "local"]
    run = pool / "runs" / "mlp2x_gelu__projector_only__seed0"
    # 1. the job is killed outright (SIGKILL: out of memory, a node lost) after its first checkpoints
    thread, outcome = _in_thread(argv)
    _wait_for(lambda: _complete_checkpoints(run) and _complete_checkpoints(run)[-1] >= 4, "a checkpoint")
    _wait_for(lambda: _task(os.getpid()), "the job's process").send_signal(signal.SIGKILL)
    thread.join(120)
    assert (
        isinstance(outcome.get("error"), SystemExit) and outcome["error"].code != 0
    )  # the sweep says it failed
    killed_at = _complete_checkpoints(run)[-1]
    assert not (pool / "results" / "comparison" / "runs").exists()
    capsys.readouterr()
    main([*argv, "--status"])
    assert (
        "pending  mlp2x_gelu__projector_only__seed0  stopped: its process is gone" in capsys.readouterr().out
    )
    # 2. resubmitted (the same command): it resumes; preempted (SIGUSR2, as SLURM signals it) past a new checkpoint,
    # submitit requeues it and it resumes again
    thread, outcome = _in_thread(argv)
    _wait_for(lambda: _complete_checkpoints(run)[-1] >= killed_at + 4, "a checkpoint after the resume")
    _wait_for(lambda: _task(os.getpid()), "the job's process").send_signal(signal.SIGUSR2)
    thread.join(180)
    assert "result" in outcome, outcome
    segments = json.loads((run / "run_config.json").read_text())["segments"]
    assert [s["from_step"] for s in segments][:2] == [0, killed_at] and len(segments) == 3
    assert segments[2]["from_step"] > killed_at and "--resume_from_checkpoint" in segments[2]["argv"]
    assert [p.name for p in (pool / "results" / "comparison" / "runs").iterdir()] == [
        "mlp2x_gelu__projector_only__seed0.json"
    ]
    # resumed twice, it computed what the pool's uninterrupted run did
    resumed = _records(pool / "results")["mlp2x_gelu__projector_only__seed0"]
    reference = _records(pool / "pool_results")["mlp2x_gelu__projector_only__seed0"]
    assert resumed["metrics"] == reference["metrics"] and resumed["scores"] == reference["scores"]
    assert resumed["key"] == reference["key"] and resumed["steps"] == reference["steps"] == 24


def _slurm_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return done.returncode == 0 and any(s in done.stdout for s in ("idle", "mixed"))


@pytest.mark.slow
@pytest.mark.skipif(not _slurm_up(), reason="no SLURM answers here (bash tools/slurm_single_node.sh start)")
def test_a_slurm_array_writes_the_pools_records_and_tables(pool):
    pytest.importorskip("submitit")
    _set_aside(pool, "before_slurm")
    main([*SWEEP, *_dirs(pool), "--executor", "slurm", "--time_min", "30", "--gpus_per_task", "0",
          "--cpus_per_task", "1"])  # fmt: skip
    _same_as_the_pool(pool, pool / "results")
    submission = next(
        (pool / "runs" / "jobs" / "comparison" / "submitit").glob("*_submission.sh")
    ).read_text()
    assert "#SBATCH --array=0-1" in submission and "#SBATCH --time=30" in submission


# ---- without training: --status from files, --emit_jobs, flags ------------------------------
STATUS_SWEEP = ["--quick", "--skip_probes", "--seeds", "0,1"]  # 2 projectors x 2 strategies x 2 seeds


def test_status_names_each_cells_state_from_records_state_files_and_job_logs(tmp_path, capsys):
    argv = [*STATUS_SWEEP, *_dirs(tmp_path)]
    args, train_flags = parse(argv)
    todo, _ = plan(args, train_flags)
    cells = {job_name(args.mode, path): (cell, cell_argv, path, key) for cell, cell_argv, path, key in todo}
    names = list(cells)
    jobs = args.jobs_dir

    # done: its record holds the current key
    _, _, path, key = cells[names[0]]
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"key": key, "metrics": {"test": {"auc": 0.75}}}))

    # failed: the cell raised (a CellJob around a cell function that fails, as the pool's would)
    def boom(*args):
        raise RunError("--data_dir /nowhere: no such folder. Pass your image folder.")

    with pytest.raises(RunError):
        CellJob(boom, names[1], jobs)(*cells[names[1]])
    # failed before its cell started: submitit's result file holds the traceback
    index = {names[2]: {"job": "41_2", "executor": "slurm", "at": time.time()}}
    (jobs / "submitit").mkdir(parents=True)
    traceback = "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'llava_df'\n"
    with (jobs / "submitit" / "41_2_0_result.pkl").open("wb") as f:
        pickle.dump(("error", traceback), f)
    # submitted, not started yet
    index[names[3]] = {"job": "41_3", "executor": "slurm", "at": time.time()}
    (jobs / "jobs.json").write_text(json.dumps(index))
    # stopped: its process is gone (killed) without a word
    state = state_file(jobs, names[4])
    state.write_text(json.dumps({"name": names[4], "state": "running", "job": "41_4", "host": "node7", "pid": 1,
                                 "started": "2026-01-01 00:00:00", "log": "x.log"}))  # fmt: skip
    os.utime(state, (time.time() - 3600, time.time() - 3600))  # its heartbeat stopped an hour ago
    # running: the status is asked from inside a live cell
    seen = {}

    def look(*args):
        seen["status"] = main([*argv, "--status"])
        seen["out"] = capsys.readouterr().out
        with pytest.raises(SystemExit) as twice:  # the same cell by hand (an --emit_jobs line) meanwhile
            main([*argv, "--cell", names[5]])
        seen["twice"] = (twice.value.code, capsys.readouterr().err.strip().splitlines()[-1])
        return {"cell": names[5], "auc": 0.5}

    CellJob(look, names[5], jobs)(*cells[names[5]])
    states = {c["name"]: (c["state"], c["detail"]) for c in seen["status"]["cells"]}
    assert states[names[0]] == ("done", "test AUC 0.750")
    assert states[names[1]][0] == "failed"
    assert states[names[1]][1].startswith(
        "RunError: --data_dir /nowhere: no such folder. Pass your image folder."
    )
    assert states[names[2]] == (
        "failed",
        f"ModuleNotFoundError: No module named 'llava_df' (job 41_2: {jobs / 'submitit' / '41_2_0_log.err'})",
    )
    assert states[names[3]][0] == "pending" and states[names[3]][1].startswith("submitted as job 41_3 at ")
    assert states[names[4]][0] == "pending"
    assert states[names[4]][1].startswith("stopped: its process is gone (job 41_4 on node7, last seen ")
    assert states[names[5]][0] == "running" and f"pid {os.getpid()}" in states[names[5]][1]
    assert [states[n] for n in names[6:]] == [("pending", "")] * 2
    assert seen["twice"][0] == 1
    assert seen["twice"][1].startswith(
        f"error: --cell {names[5]} is running already (on {socket.gethostname()}, pid"
    )
    out = seen["out"]
    assert "8 cells: 1 done, 1 running, 2 failed, 4 pending" in out
    assert out.index("done ") < out.index("running ") < out.index("failed ") < out.index("pending ")
    # after the cell: its attempt says done, but without a record (a fake cell function) it is not done
    assert json.loads(state_file(jobs, names[5]).read_text())["state"] == "done"


def test_status_of_a_per_seed_stage1_study_finds_each_seeds_file_and_reads_its_records_as_done(
    tmp_path, capsys
):
    # --stage1 --stage1_per_seed: each cell starts from RUNS_DIR/stage1/<projector>__seed<seed>/. --status trains
    # nothing, so it must find those files itself; it once looked in <projector>/ and called every record stale.
    argv = [*STATUS_SWEEP, *_dirs(tmp_path), "--stage1", "--stage1_per_seed", "True"]
    args, train_flags = parse(argv)
    files = {}
    for projector in args.projectors:  # seed 0's stage 1 has run; seed 1's has not
        f = tmp_path / "runs" / "stage1" / f"{projector}__seed0" / "mm_projector.safetensors"
        f.parent.mkdir(parents=True)
        f.write_bytes(projector.encode())  # the key hashes the file's bytes
        files[projector] = {0: str(f)}
    args.stage1 = files  # what the run itself plans with, after stage 1
    todo, _ = plan(args, train_flags)
    seed0 = [(cell, path, key) for cell, _, path, key in todo if cell.seed == 0]
    assert seed0 and all("__seed0" in str(key_path) for _, key_path, _ in seed0)
    for cell, path, key in seed0:
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {"model": {"pretrain_mm_mlp_adapter": files[cell.projector][0]}}  # what build_record sees
        record = {
            "key": key,
            "key_inputs": key_inputs(config),
            "config": config,
            "metrics": {"test": {"auc": 0.75}},
        }
        path.write_text(json.dumps(record))
    states = {c["name"]: c["state"] for c in main([*argv, "--status"])["cells"]}
    assert [states[job_name(args.mode, path)] for _, path, _ in seed0] == ["done"] * len(seed0)
    assert sorted(set(states.values())) == ["done", "pending"]
    assert list(states.values()).count("pending") == len(states) - len(seed0) == 4
    # a changed stage-1 file is a new init: its cells are out of date again
    Path(files[args.projectors[0]][0]).write_bytes(b"retrained")
    cells = main([*argv, "--status"])["cells"]
    assert [c["state"] for c in cells].count("done") == len(seed0) // 2
    stale = [
        c["detail"] for c in cells if c["name"].startswith(args.projectors[0]) and "__seed0" in c["name"]
    ]
    assert stale == ["its record is out of date (stage-1 file changed)"] * (len(seed0) // 2)
    capsys.readouterr()


def test_emit_jobs_writes_the_command_of_each_cell_left_and_runs_nothing(tmp_path, capsys):
    argv = [*STATUS_SWEEP, *_dirs(tmp_path)]
    args, train_flags = parse(argv)
    (cell, _, path, key), *_ = plan(args, train_flags)[0]
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"key": key, "metrics": {"test": {"auc": 0.75}}}))
    out = tmp_path / "cells.txt"
    summary = main([*argv, "--emit_jobs", str(out)])
    lines = out.read_text().splitlines()
    assert len(lines) == 7 and summary["done"] == 1 and cell.name not in out.read_text()
    python = sys.executable
    assert lines[0] == (
        f"cd {os.getcwd()} && {python} -m llava_df compare {' '.join(argv)} --cell kan_h64_g3_k2__projector_only__seed0"
    )
    assert "7 cell commands -> " in capsys.readouterr().err
    assert not (tmp_path / "runs" / "kan_h64_g3_k2__projector_only__seed0").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--executor", "slurm"], "--executor slurm: no time limit per cell. Pass --time_min"),
        (["--executor", "cloud"], "argument --executor: invalid choice: 'cloud'"),
        (["--executor", "local", "--no_wait"], "--no_wait with --executor local: only SLURM jobs go on"),
        (["--executor", "slurm", "--workers", "4"], "--workers 4 with --executor slurm"),
        (["--partition", "gpu"], "--partition is a SLURM setting; --executor is pool"),
        (["--executor", "slurm", "--time_min", "0"], "time_min 0: expected a number >= 1"),
        (["--executor", "slurm", "--time_min", "60", "--stage1"], "--stage1 alone with --executor slurm"),
        (
            ["--cell", "mlp2x_gelu__lora__seed7"],
            "--cell 'mlp2x_gelu__lora__seed7' is not a cell of this sweep",
        ),
        (["--status", "--aggregate"], "--status with --aggregate: --aggregate runs no cell"),
        (["--status", "--emit_jobs", "x.txt"], "--status and --emit_jobs: each is a command of its own"),
        (["--emit_jobs", "x.txt", "--executor", "local"], "--executor local with --emit_jobs"),
    ],
)
def test_bad_job_flags_are_refused_before_anything_runs(extra, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--quick", *extra, *_dirs(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_a_cluster_file_is_checked_and_the_flags_win_over_it(tmp_path, capsys):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        "partition: gpu\ntime_min: 240\nsetup: ['module load cuda']\nsbatch: {constraint: a100}\n"
    )
    args, _ = parse(["--quick", "--executor", "slurm", "--cluster", str(cluster), "--time_min", "60",
                     *_dirs(tmp_path)])  # fmt: skip
    assert args.cluster_settings == {"partition": "gpu", "time_min": 60, "setup": ["module load cuda"],
                                     "sbatch": {"constraint": "a100"}}  # fmt: skip
    cluster.write_text("partition: gpu\nnodes: 4\n")
    with pytest.raises(SystemExit):
        main(["--quick", "--executor", "slurm", "--cluster", str(cluster), *_dirs(tmp_path)])
    assert "--cluster " + str(cluster) + ": unknown key 'nodes'; valid: partition," in capsys.readouterr().err


def test_slurm_settings_become_submitits_parameters(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    # submitit's executor refuses to exist where no srun is on PATH; what is checked here is the parameter names
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    from llava_df.sweep.submit import slurm_parameters

    settings = {"partition": "gpu", "account": "lab", "time_min": 240, "mem_gb": 32, "array_parallelism": 8,
                "setup": ["module load cuda"], "sbatch": {"constraint": "a100"}}  # fmt: skip
    params = slurm_parameters(settings)
    assert params | {"setup": None} == {
        "job_name": "llava_df_compare", "time": 240, "nodes": 1, "ntasks_per_node": 1, "gpus_per_task": 1,
        "partition": "gpu", "account": "lab", "array_parallelism": 8, "mem": "32768M", "setup": None,
        "additional_parameters": {"constraint": "a100"},
    }  # fmt: skip
    submitit.SlurmExecutor(folder=tmp_path).update_parameters(**params)  # every name is one submitit knows
    assert "gpus_per_task" not in slurm_parameters({"time_min": 10, "gpus_per_task": 0})


def test_a_missing_submitit_is_one_error_line_with_the_install_command(tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "submitit" else find_spec(name, *a)
    )
    with pytest.raises(SystemExit) as info:
        main(["--quick", "--executor", "local", *_dirs(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2
    assert err == ("error: --executor local needs submitit, which is not installed: pip install 'llava_df[cluster]' "
                   "(or pip install submitit).")  # fmt: skip
