"""The quick sweep as a real SLURM array job: the same records and tables as the pool, and a preempted cell resumed.

    bash tools/slurm_single_node.sh start && export SLURM_CONF=/tmp/llava_df_slurm/slurm.conf
    python benchmarks/slurm_array.py            # writes results/slurm_array.md and results/slurm_array.json

Needs a SLURM that answers (``sinfo``) and submitit (``pip install 'llava_df[cluster]'``). Two parts, each
through ``python -m llava_df compare`` in a scratch folder, one thread per process (OMP_NUM_THREADS=1):

1. **Array.** ``--quick`` (2 projectors x 2 strategies x 1 seed, with the feature probes) runs with the pool
   (``--workers 2``), is set aside, then runs at the very same paths as one SLURM array job (``--executor
   slurm``, one task per cell, 1 CPU, no GPU). Compared: every field of every record except what a run
   measures of its machine (time, peak memory, the planner's check of it) and the probe records' copy of
   the sweep's command, comparison.csv without its measured columns (peak memory, s/step), and
   comparison_summary.md as text.
2. **Preempted.** One cell (mlp2x_gelu, projector_only, 200 steps, a checkpoint every 10) runs as a SLURM
   job; once checkpoint-30 is complete the job gets SIGUSR2 (``scancel --signal=USR2``: what SLURM sends
   before a time limit, and on preemption with a signal), so submitit checkpoints and requeues it (``scontrol
   requeue``), and the requeued job resumes. Compared with the same cell run uninterrupted by the pool: the
   metrics and every image's score, one record, and the run's resume segments. Its wall time includes
   SLURM's hold of a requeued job (BeginTime, about 2 minutes on SLURM 22.05).
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llava_df.provenance import cpu_model, git_state, package_versions  # noqa: E402

# What a run measures of its machine, and the probes' copy of the sweep's command line (it names --executor).
MEASURED_RECORD = ("time", "peak_memory", "memory_check", "command")
MEASURED_COLUMNS = ("peak_memory_mib", "s_per_step")
SLURM = ["--executor", "slurm", "--time_min", "30", "--gpus_per_task", "0", "--cpus_per_task", "1"]
PREEMPT = ["--quick", "--skip_probes", "--projectors", "mlp2x_gelu", "--strategies", "projector_only",
           "--max_steps", "200", "--save_strategy", "steps", "--save_steps", "10"]  # fmt: skip
CELL = "mlp2x_gelu__projector_only__seed0"


def compare(argv: list[str], log: Path) -> float:
    """Run ``llava-df compare argv``; its wall time in seconds (its output in ``log``)."""
    start = time.time()
    with log.open("w") as f:
        done = subprocess.run([sys.executable, "-m", "llava_df", "compare", *argv], cwd=ROOT, stdout=f,
                              stderr=subprocess.STDOUT, env=os.environ | {"OMP_NUM_THREADS": "1"})  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"llava-df compare {shlex.join(argv)} failed ({done.returncode}); see {log}")
    return time.time() - start


def dirs(root: Path) -> list[str]:
    return ["--results_dir", str(root / "results"), "--runs_dir", str(root / "runs")]


def set_aside(root: Path, name: str) -> None:
    for folder in ("results", "runs"):
        (root / folder).rename(root / f"{name}_{folder}")


def records(results: Path) -> dict[str, dict]:
    return {
        p.stem: {k: v for k, v in json.loads(p.read_text()).items() if k not in MEASURED_RECORD}
        for p in sorted((results / "comparison" / "runs").glob("*.json"))
    }


def table(results: Path) -> list[dict]:
    with (results / "comparison.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in MEASURED_COLUMNS} for row in csv.DictReader(f)]


def array_part(root: Path) -> dict:
    pool_s = compare(["--quick", "--workers", "2", *dirs(root)], root / "pool.log")
    set_aside(root, "pool")
    slurm_s = compare(["--quick", *SLURM, *dirs(root)], root / "slurm.log")
    got, want = records(root / "results"), records(root / "pool_results")
    differ = sorted(n for n in set(got) | set(want) if got.get(n) != want.get(n))
    submission = next(
        (root / "runs" / "jobs" / "comparison" / "submitit").glob("*_submission.sh")
    ).read_text()
    return {
        "pool_s": round(pool_s, 1),
        "slurm_s": round(slurm_s, 1),
        "records": len(got),
        "records_differ": differ,
        "table_same": table(root / "results") == table(root / "pool_results"),
        "summary_same": (root / "results" / "comparison_summary.md").read_text()
        == (root / "pool_results" / "comparison_summary.md").read_text(),
        "sbatch": [line for line in submission.splitlines() if line.startswith("#SBATCH")],
    }


def preempt_part(root: Path) -> dict:
    compare([*PREEMPT, *dirs(root)], root / "pool_cell.log")
    set_aside(root, "pool")
    run = root / "runs" / CELL
    start = time.time()
    with (root / "slurm_cell.log").open("w") as log:
        sweep = subprocess.Popen([sys.executable, "-m", "llava_df", "compare", *PREEMPT, *SLURM, *dirs(root)],
                                 cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                 env=os.environ | {"OMP_NUM_THREADS": "1"})  # fmt: skip
        while not (run / "checkpoint-30" / "llava_df_complete.json").is_file():
            if sweep.poll() is not None or time.time() - start > 600:
                raise SystemExit(f"the cell never reached checkpoint-30; see {root / 'slurm_cell.log'}")
            time.sleep(0.2)
        job = json.loads((root / "runs" / "jobs" / "comparison" / "jobs.json").read_text())[CELL]["job"]
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        signalled = time.time() - start
        if sweep.wait(timeout=900) != 0:
            raise SystemExit(f"the preempted sweep failed; see {root / 'slurm_cell.log'}")
    wall = time.time() - start
    segments = json.loads((run / "run_config.json").read_text())["segments"]
    got, want = records(root / "results")[CELL], records(root / "pool_results")[CELL]
    return {
        "wall_s": round(wall, 1),
        "signalled_at_s": round(signalled, 1),
        "segments_from_step": [s["from_step"] for s in segments],
        "records": len(list((root / "results" / "comparison" / "runs").glob("*.json"))),
        "metrics_same": got["metrics"] == want["metrics"],
        "scores_same": got["scores"] == want["scores"],
        "steps": got["steps"],
    }


def main() -> None:
    if not shutil.which("sinfo") or subprocess.run(["sinfo"], capture_output=True).returncode != 0:
        raise SystemExit(
            "error: no SLURM answers here: bash tools/slurm_single_node.sh start, then export SLURM_CONF"
        )
    version = subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout.strip()
    scratch = Path(tempfile.mkdtemp(prefix="llava_df_slurm_bench_"))
    (scratch / "array").mkdir()
    (scratch / "preempt").mkdir()
    array = array_part(scratch / "array")
    preempt = preempt_part(scratch / "preempt")
    git = git_state()
    payload = {
        "command": "python benchmarks/slurm_array.py",
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, no GPU; one-node SLURM (tools/slurm_single_node.sh)",
        "slurm": version,
        "submitit": package_versions(("submitit",)).get("submitit"),
        "code": f"{(git.get('commit') or '?')[:10]}{' (dirty)' if git.get('dirty') else ''}",
        "array": array,
        "preempt": preempt,
        "scratch": str(scratch),
    }
    (ROOT / "results" / "slurm_array.json").write_text(json.dumps(payload, indent=1) + "\n")
    ok = lambda flag: "yes" if flag else "NO"  # noqa: E731
    lines = [
        "# The quick sweep as a SLURM array job",
        "",
        f"Command: `{payload['command']}` (after `bash tools/slurm_single_node.sh start`). Machine: {payload['machine']};",
        f"{version}, submitit {payload['submitit']}, code {payload['code']}.",
        "",
        "## Array: `--quick` with the pool, then as one SLURM array (one task per cell)",
        "",
        "| | pool (`--workers 2`) | SLURM array (1 CPU per task) |",
        "|---|---|---|",
        f"| wall time, s (cells + probes + tables) | {array['pool_s']} | {array['slurm_s']} |",
        "",
        f"- records: {array['records']} (4 cells, 4 probes); every field but time, peak memory and the probes' copy of "
        "the command the same as the pool's: "
        f"{ok(not array['records_differ'])}{'' if not array['records_differ'] else ' (differ: ' + ', '.join(array['records_differ']) + ')'}",
        f"- comparison.csv without its measured columns (peak memory, s/step) the same: {ok(array['table_same'])}",
        f"- comparison_summary.md the same: {ok(array['summary_same'])}",
        "- the array's sbatch header: `" + " ".join(array["sbatch"]) + "`",
        "",
        "## Preempted: one cell signalled (SIGUSR2) after checkpoint-30, requeued by submitit, resumed",
        "",
        f"- resume segments start at steps {preempt['segments_from_step']} (a new run, then the resumed one); "
        f"{preempt['steps']} steps; {preempt['records']} record",
        f"- metrics the same as the uninterrupted pool run: {ok(preempt['metrics_same'])}; every image's score: "
        f"{ok(preempt['scores_same'])}",
        f"- wall time {preempt['wall_s']} s, signalled at {preempt['signalled_at_s']} s (it includes SLURM's hold of "
        "a requeued job, BeginTime)",
        "",
    ]
    (ROOT / "results" / "slurm_array.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
