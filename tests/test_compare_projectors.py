"""The sweep: refuses bad names up front, writes one JSON per run, skips what is done, aggregates
with paired statistics, survives a corrupt record, and the results notebook shows what it wrote."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from llava_df.sweep.compare import main
from llava_df.sweep.stats import mean_ci

REPO = Path(__file__).resolve().parent.parent


# ---- statistics -----------------------------------------------------------------------------
def test_mean_ci_is_a_t_interval():
    mean, half = mean_ci([0.7, 0.8, 0.9])
    assert mean == pytest.approx(0.8) and half == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)
    assert np.isnan(mean_ci([0.5])[1])


# ---- arguments ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv,message",
    [
        (["--projectors", "mlp2x_gelu,kan_hX"], "'kan_hX' is not a registered projector"),
        (["--strategies", "full_finetune"], "'full_finetune' is not a strategy. Valid: projector_only, lora"),
        (["--seeds", "one"], "--seeds 'one': expected comma-separated integers"),
        (
            ["--protocol", "no_such_protocol.yaml"],
            "--protocol no_such_protocol.yaml: unreadable (FileNotFoundError)",
        ),
        (["--lora_rnak", "8"], "Did you mean --lora_r (a training flag)?"),
        (["--lr_grid", "1e-3,fast"], "--lr_grid 'fast': expected learning rates in (0, 1)"),
        (["--lr_grid", "1e-3"], "a grid needs at least two different learning rates"),
        (["--lr_grid", "1e-3,3e-3", "--learning_rate", "1e-4"], "--learning_rate with --lr_grid"),
        (["--lr_grid", "1e-3,3e-3", "--lr_choice", "x.json"], "pick one"),
        (["--lr_choice", "no_such_choice.json"], "--lr_choice no_such_choice.json: no such file"),
    ],
)
def test_bad_sweep_arguments_are_refused_before_any_run(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--results_dir", str(tmp_path / "r"), "--runs_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and err.startswith("error: ") and message in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "o").exists()


# ---- the quick sweep ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    argv = ["--quick", "--results_dir", str(root / "results"), "--runs_dir", str(root / "runs")]
    return root, argv, main(argv)


@pytest.mark.slow
def test_quick_sweep_writes_records_tables_and_plots(quick):
    root, _, summary = quick
    results = root / "results"
    runs = sorted((results / "comparison" / "runs").glob("*.json"))
    cells = sorted(
        f"{p}__{s}__seed0" for p in ("mlp2x_gelu", "kan_h64_g3_k2") for s in ("projector_only", "lora")
    )
    probes = sorted(f"probe_{p}__probe__seed0" for p in ("linear", "mlp", "kan", "mlp_matched"))
    assert [p.stem for p in runs] == sorted(cells + probes)
    record = json.loads((results / "comparison" / "runs" / f"{cells[0]}.json").read_text())
    for key in (
        "cell",
        "key",
        "projector_init",
        "metrics",
        "parameters",
        "peak_memory",
        "time",
        "env",
        "config",
        "scores",
    ):
        assert key in record, key
    test = record["metrics"]["test"]
    for metric in ("accuracy", "balanced_accuracy", "auc", "ap", "eer", "f1", "threshold", "accuracy_at_0.5"):
        assert metric in test, metric
    assert record["metrics"]["heldout"]["auc"] is not None  # the held-out family, scored on its own
    assert record["parameters"]["projector"] > 0 and record["parameters"]["projector_macs_per_token"] > 0
    assert record["env"]["git"]["commit"] and "transformers" in record["env"]["packages"]
    assert len(record["scores"]["test"]["p_fake"]) == test["n"]
    table = (results / "comparison.md").read_text()
    assert "Sweep: `python -m llava_df.compare_projectors --quick" in table
    machine = f"{record['env']['device']['cpu_model']}, {record['env']['device']['cpu_count']} cores, no GPU"
    assert f"Runs made on: {machine};" in table  # the runs' own machine, from their records
    assert "| lora | mlp2x_gelu | checkpoint | 1 |" in table
    # one seed: no test, said so (never a verdict from one seed), and the runs are labelled exploratory
    assert "**Exploratory**: these runs use benchmark seed(s) " in table
    assert (
        "Power: no comparison has 2 paired seeds" in table
        and "Runs that selected their last evaluation:" in table
    )
    rows = {(r["projector"], r["strategy"]): r for r in summary["rows"]}
    assert rows[("mlp2x_gelu", "lora")]["vs_ref_verdict"] == "reference"
    assert rows[("kan_h64_g3_k2", "lora")]["vs_ref_verdict"] == "n/a (1 paired seed; the test needs 2)"
    assert summary["family"] == [] and summary["power"] is None
    summary_table = (results / "comparison_summary.md").read_text()
    assert (
        "| mlp2x_gelu |" in summary_table
        and "(reference)" in summary_table
        and "lora: test AUC" in summary_table
    )
    # the ceiling rows: probes on the frozen tower's features, and each pipeline row's gap to the best
    probe_rows = [r for r in summary["rows"] if r["strategy"] == "probe"]
    assert {r["projector"] for r in probe_rows} == {
        "probe_linear",
        "probe_mlp",
        "probe_kan",
        "probe_mlp_matched",
    }
    matched = json.loads(
        (results / "comparison" / "runs" / "probe_mlp_matched__probe__seed0.json").read_text()
    )
    assert matched["time"]["epochs"] == 2  # the recipe's 2 epochs, not the ceiling probe's 40
    best = max(r["test_auc"] for r in probe_rows)
    assert rows[("mlp2x_gelu", "lora")]["vs_best_probe"] == pytest.approx(
        rows[("mlp2x_gelu", "lora")]["test_auc"] - best
    )
    assert "Feature probes on the frozen tower" in summary_table and "| probe | probe_mlp |" in table
    # the gap to the best probe reads as words with its sign in them ("0.006 below"), never "+0.006 below"
    assert re.search(
        r"is (\d\.\d{3} (above|below)|level with) the best probe \(probe_\w+: \d\.\d{3}\)", summary_table
    )
    for png in ("auc_vs_planned_7b_peak.png", "auc_vs_trainable_params.png", "family_auc.png"):
        assert (results / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_rerun_skips_unchanged_cells_and_reruns_changed_ones(quick, capsys):
    root, argv, _ = quick
    main(argv)
    assert "0 runs to do, 4 up to date" in capsys.readouterr().err
    main([*argv, "--projectors", "mlp2x_gelu", "--strategies", "projector_only", "--learning_rate", "5e-4",
          "--results_dir", str(root / "results2")])  # fmt: skip
    assert "1 runs to do, 0 up to date" in capsys.readouterr().err


@pytest.mark.slow
def test_a_corrupt_record_is_named_and_the_others_still_aggregate(quick, tmp_path, capsys):
    root, _, _ = quick
    results = tmp_path / "results"
    shutil.copytree(root / "results", results)
    broken = results / "comparison" / "runs" / "kan_h64_g3_k2__lora__seed0.json"
    broken.write_text(broken.read_text()[:200])  # half-written
    summary = main(["--aggregate", "--results_dir", str(results)])
    assert str(broken) in summary["skipped"] and str(broken) in capsys.readouterr().err
    assert {(r["projector"], r["strategy"]) for r in summary["rows"] if r["strategy"] != "probe"} == {
        ("mlp2x_gelu", "lora"), ("mlp2x_gelu", "projector_only"), ("kan_h64_g3_k2", "projector_only")
    }  # fmt: skip


@pytest.mark.slow
def test_the_results_notebook_shows_what_the_sweep_wrote(quick):
    import nbformat
    from nbclient import NotebookClient

    root, _, _ = quick
    notebook = nbformat.read(REPO / "notebooks" / "results.ipynb", as_version=4)
    os.environ["LLAVA_DF_RESULTS"] = str(root / "results")
    try:
        NotebookClient(
            notebook,
            timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(REPO / "notebooks")}},
        ).execute()
    finally:
        os.environ.pop("LLAVA_DF_RESULTS")
    text = "\n".join(
        out.get("text", "") + json.dumps(out.get("data", {}))
        for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs
    )  # fmt: skip
    assert (
        "LOADED 8 runs, 8 rows, projectors ['kan_h64_g3_k2', 'mlp2x_gelu', 'probe_kan', 'probe_linear', 'probe_mlp', "
        "'probe_mlp_matched']" in text
    )
    assert "FAMILIES" in text and "heldout" in text and "image/png" in text and "peak_memory_mib" in text


def test_a_stage1_file_that_does_not_fit_its_projector_is_refused_before_any_run(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    wrong = tmp_path / "kan_stage1.safetensors"
    save_file({"0.weight": torch.zeros(4, 4), "0.bias": torch.zeros(4)}, wrong)
    argv = [
        "--projectors",
        "mlp2x_gelu",
        "--strategies",
        "lora",
        "--seeds",
        "0",
        "--stage1",
        f"mlp2x_gelu={wrong}",
    ]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--results_dir", str(tmp_path / "r"), "--runs_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 1 and "do not fit projector 'mlp2x_gelu'" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_stage1_runs_before_stage2_and_every_row_says_how_its_projector_started(tmp_path):
    """--stage1 alone: caption alignment per projector, then stage 2 from it; a rerun reuses both."""
    argv = [
        "--quick", "--projectors", "mlp2x_gelu,kan_h64_g3_k2", "--strategies", "projector_only", "--stage1",
        "--results_dir", str(tmp_path / "r"), "--runs_dir", str(tmp_path / "o"),
    ]  # fmt: skip
    summary = main(argv)
    for name in ("mlp2x_gelu", "kan_h64_g3_k2"):
        stage1 = tmp_path / "o" / "stage1" / name / "mm_projector.safetensors"
        assert stage1.is_file()
        record = json.loads(
            (tmp_path / "r" / "comparison" / "runs" / f"{name}__projector_only__seed0.json").read_text()
        )
        assert record["projector_init"] == f"file:{stage1}"
        row = next(r for r in summary["rows"] if r["projector"] == name)
        assert row["init"] == f"file:{stage1}"
    table = (tmp_path / "r" / "comparison.md").read_text()
    assert "| projector_only | kan_h64_g3_k2 | stage 1 (kan_h64_g3_k2) |" in table
    before = (tmp_path / "o" / "stage1" / "mlp2x_gelu" / "mm_projector.safetensors").stat().st_mtime_ns
    main(argv)  # nothing changed: stage 1 and the cells are reused
    assert (
        tmp_path / "o" / "stage1" / "mlp2x_gelu" / "mm_projector.safetensors"
    ).stat().st_mtime_ns == before


def test_stage1_data_without_stage1_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(
            [
                "--stage1_data",
                "x.json",
                "--results_dir",
                str(tmp_path / "r"),
                "--runs_dir",
                str(tmp_path / "o"),
            ]
        )
    assert info.value.code == 2 and "add --stage1" in capsys.readouterr().err


# ---- stopping the sweep ---------------------------------------------------------------------
def _sweep_process(tmp_path):
    """A sweep (one long cell at a time) in its own process, and the worker it started."""
    import subprocess
    import sys
    import time

    import psutil

    argv = ["--quick", "--skip_probes", "--projectors", "mlp2x_gelu", "--strategies", "projector_only",
            "--seeds", "0,1", "--max_steps", "400", "--results_dir", str(tmp_path / "r"),
            "--runs_dir", str(tmp_path / "o")]  # fmt: skip
    sweep = subprocess.Popen(
        [sys.executable, "-m", "llava_df.compare_projectors", *argv],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the worker trains (its run folder has its lock)
        workers = psutil.Process(sweep.pid).children(recursive=True)
        if workers and list((tmp_path / "o").glob("*/.llava_df.lock.json")):
            return sweep, [w for w in workers if "spawn" in " ".join(w.cmdline())]
        time.sleep(0.5)
    sweep.kill()
    raise AssertionError(f"the sweep never started a worker: {sweep.communicate()[1][-2000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_sweep_and_its_workers_and_says_how_to_continue(sig, tmp_path):
    import signal

    import psutil

    sweep, workers = _sweep_process(tmp_path)
    assert workers
    sweep.send_signal(getattr(signal, sig))
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 128 + getattr(signal, sig)
    last = err.strip().splitlines()[-1]
    assert (
        last.startswith(f"error: {sig}: stopped the sweep after 0 of 2 runs")
        and "Rerun the same command" in last
    )
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"workers outlived the sweep: {alive}"


@pytest.mark.slow
def test_workers_die_with_a_killed_sweep(tmp_path):
    import signal

    import psutil

    sweep, workers = _sweep_process(tmp_path)
    sweep.send_signal(signal.SIGKILL)  # nothing of the sweep runs: its workers must notice on their own
    sweep.wait()
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"orphaned workers: {alive}"
