"""`python -m llava_df.sweep.confirm`: the protocol's family from run records, confirmatory vs exploratory."""

import csv
import json

import numpy as np
import pytest
import yaml

from llava_df.sweep.confirm import main

PROTOCOL = {
    "reference": "mlp2x_gelu", "candidates": ["kan_light", "linear"], "strategies": ["lora"], "margin": 0.02,
    "alpha": 0.05, "power": 0.8, "target_mdd": 0.02, "benchmark_seed": 77,
}  # fmt: skip


def write_records(folder, benchmark_seed, seeds=(0, 1, 2), shift=None):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 200)
    base = rng.normal(size=400) + 1.2 * y
    shift = shift or {"mlp2x_gelu": 0.0, "kan_light": 0.0, "linear": -0.9}
    runs = folder / "runs"
    runs.mkdir(parents=True)
    for projector, delta in shift.items():
        for seed in seeds:
            p = base + delta * y + rng.normal(scale=0.5, size=400)
            name = f"{projector}__lora__seed{seed}"
            record = {
                "cell": {"projector": projector, "strategy": "lora", "seed": seed, "name": name},
                "metrics": {"test": {"auc": 0.9}, "best_val_entry": {"step": 10 if seed else 20}},
                "steps": 20,
                "config": {"data": {"synthetic_seed": benchmark_seed}},
                "scores": {
                    "test": {"id": [f"i{i}" for i in range(400)], "p_fake": p.tolist(), "is_fake": y.tolist()}
                },
            }
            (runs / f"{name}.json").write_text(json.dumps(record))
    return runs


def test_the_family_table_from_records_of_the_protocols_benchmark(tmp_path):
    protocol = tmp_path / "p.yaml"
    protocol.write_text(yaml.safe_dump(PROTOCOL))
    runs = write_records(tmp_path / "r", benchmark_seed=77)
    out = tmp_path / "out"
    result = main(["--protocol", str(protocol), "--runs", str(runs), "--out", str(out)])
    with open(out / "comparisons.csv") as f:
        rows = {r["comparison"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"kan_light vs mlp2x_gelu", "linear vs mlp2x_gelu"}
    assert rows["linear vs mlp2x_gelu"]["verdict"] == "worse"
    assert float(rows["linear vs mlp2x_gelu"]["p_holm"]) >= float(rows["linear vs mlp2x_gelu"]["p"])
    text = (out / "comparisons.md").read_text()
    assert text.startswith("# Confirmatory") and "selected their last epoch: 3 of 9" in text
    assert result["power"]["family_size"] == 2 and result["power"]["seeds"] == 3


def test_development_runs_are_refused_unless_labelled_exploratory(tmp_path, capsys):
    protocol = tmp_path / "p.yaml"
    protocol.write_text(yaml.safe_dump(PROTOCOL))
    runs = write_records(tmp_path / "r", benchmark_seed=0)
    with pytest.raises(SystemExit):
        main(["--protocol", str(protocol), "--runs", str(runs), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert (
        err.startswith("error:")
        and "benchmark seed 0, the protocol's is 77" in err
        and "--exploratory" in err
    )
    main(["--protocol", str(protocol), "--runs", str(runs), "--out", str(tmp_path / "o"), "--exploratory"])
    assert (tmp_path / "o" / "comparisons.md").read_text().startswith("# EXPLORATORY")


def test_a_comparison_without_two_paired_seeds_is_named(tmp_path, capsys):
    protocol = tmp_path / "p.yaml"
    protocol.write_text(yaml.safe_dump(PROTOCOL))
    runs = write_records(tmp_path / "r", benchmark_seed=77, seeds=(0,))
    with pytest.raises(SystemExit):
        main(["--protocol", str(protocol), "--runs", str(runs), "--out", str(tmp_path / "o")])
    assert "kan_light vs mlp2x_gelu under lora: 1 paired seeds" in capsys.readouterr().err


def test_the_built_in_analysis_is_the_committed_protocols():
    from llava_df.sweep.confirm import DEFAULT_PROTOCOL, load_protocol
    from llava_df.sweep.inference import Analysis

    protocol = load_protocol(DEFAULT_PROTOCOL)
    built_in = Analysis()
    assert (built_in.margin, built_in.alpha, built_in.power, built_in.target_mdd) == (
        protocol["margin"], protocol["alpha"], protocol["power"], protocol["target_mdd"],
    )  # fmt: skip


def test_the_comparison_table_and_confirm_apply_one_analysis(tmp_path):
    """The sweep's tables judge each cell as confirm does: the same p, Holm-adjusted p and verdict."""
    from llava_df.sweep.confirm import analyse
    from llava_df.sweep.inference import Analysis
    from llava_df.sweep.record import read_records
    from llava_df.sweep.report import aggregate

    runs = write_records(tmp_path / "results" / "comparison", benchmark_seed=77)
    for path in runs.glob("*.json"):  # the fields a table row reads besides the scores
        record = json.loads(path.read_text())
        record |= {"projector_init": "random", "parameters": {"trainable": 10, "projector": 5},
                   "peak_memory": {"device": "cpu", "peak_rss_mb": 900.0}, "time": {"s_per_step": 0.1},
                   "env": {"git": {"commit": "abc", "dirty": False}}}  # fmt: skip
        record["metrics"] |= {
            "heldout": {"auc": 0.6, "acc_face_swap": 0.5, "acc_none": 0.9},
            "val": {"auc": 0.9},
        }
        record["metrics"]["test"] |= {"accuracy": 0.8, "auc_gan_upsample": 0.95}
        path.write_text(json.dumps(record))
    protocol_file = tmp_path / "p.yaml"
    protocol_file.write_text(yaml.safe_dump(PROTOCOL))
    summary = aggregate(tmp_path / "results", command="test", protocol=protocol_file)
    records, _ = read_records(tmp_path / "results" / "comparison")
    family, power = analyse(records, PROTOCOL)
    rows = {r["projector"]: r for r in summary["rows"]}
    for c in family:
        row = rows[c.name.split(" vs ")[0]]
        assert row["vs_ref_p"] == pytest.approx(c.p) and row["vs_ref_p_holm"] == pytest.approx(c.p_holm)
        assert row["vs_ref_verdict"] == c.verdict
    assert rows["linear"]["vs_ref_verdict"] == "worse" and rows["mlp2x_gelu"]["vs_ref_verdict"] == "reference"
    assert summary["power"]["mdd"] == pytest.approx(power["mdd"])
    table = (tmp_path / "results" / "comparison.md").read_text()
    assert (
        "**Confirmatory test set**: every run is on the protocol's benchmark (--synthetic_seed 77)" in table
    )
    assert "**Runs that selected their last evaluation: 3 of 9 (33%).** More than one in five" in table
    assert f"settings from {protocol_file}" in table and Analysis.from_protocol(PROTOCOL, "x").margin == 0.02
    for png in ("auc_vs_planned_7b_peak.png", "auc_vs_trainable_params.png", "family_auc.png"):
        assert (tmp_path / "results" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tables_name_the_machines_the_runs_were_made_on_not_the_one_that_aggregates():
    from llava_df.sweep.report import runs_machine

    def record(cpu_model=None, gpu=None):  # the device record as provenance.device_info writes it
        device = (
            {"cuda": True, "gpu": gpu, "gpu_count": 1, "cpu_model": "Intel Xeon", "cpu_count": 16}
            if gpu
            else {"cuda": False, "cpu_model": cpu_model, "cpu_count": 2}
        )
        return {"steps": 10, "env": {"device": device}}

    probe = {"env": {"device": {"type": "cpu"}}}  # a probe record names only the device type: not counted
    assert runs_machine([record("AMD EPYC"), record("AMD EPYC"), probe]) == "AMD EPYC, 2 cores, no GPU"
    assert runs_machine([record("AMD EPYC"), record(gpu="NVIDIA H200"), record("AMD EPYC")]) == (
        "AMD EPYC, 2 cores, no GPU (2 runs), NVIDIA H200 x1 (1 runs)"
    )
    legacy = {"steps": 10, "env": {"device": {"type": "cuda", "gpu_name": "NVIDIA H100", "gpu_count": 2}}}
    assert runs_machine([legacy]) == "NVIDIA H100 x2"
