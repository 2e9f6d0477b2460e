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
