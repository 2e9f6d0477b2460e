"""`python -m llava_df.sweep.side_by_side`: the tiny (v2) and smol (v3) answers in one table, each row copied from its
study's own analysis; the tiny mean over strategies computed post hoc with v3's estimator.

Fixture: two small studies built in code (3 seeds x 2 strategies, 300 test images each), analysed by the real
`confirm`; a few seconds."""

import csv
import json

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from llava_df.sweep.confirm import main as confirm_main
from llava_df.sweep.side_by_side import main

STRATEGIES = ["projector_only", "lora"]
TINY = {"reference": "mlp2x_gelu", "candidates": ["kan_h256_g5_k3", "kan_light"], "strategies": STRATEGIES,
        "margin": 0.02, "alpha": 0.05, "power": 0.8, "target_mdd": 0.02, "benchmark_seed": 11}  # fmt: skip
SMOL = {"reference": "mlp2x_gelu", "strategies": STRATEGIES, "primary": "strategy_mean", "margin": 0.015,
        "alpha": 0.05, "power": 0.8, "target_mdd": 0.015, "benchmark_seed": 22,
        "candidates": ["kan_h36_g5_k3", "kan_h64_g5_k3", "bottleneck_h64_silu", "bottleneck_h64_rational"]}  # fmt: skip


def write_study(folder, protocol, seed, zero_shot=False):
    """Run records of every (projector, strategy, seed) under folder/comparison/runs, then confirm's analysis."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], 150)
    base = rng.normal(size=300) + 1.2 * y
    runs = folder / "comparison" / "runs"
    runs.mkdir(parents=True)
    cells = [(p, s) for p in (protocol["reference"], *protocol["candidates"]) for s in protocol["strategies"]]
    if zero_shot:
        cells += [
            (p, z)
            for p in (protocol["reference"], *protocol["candidates"])
            for z in ("zero_shot", "zero_shot_yes_no")
        ]
    for i, (projector, strategy) in enumerate(cells):
        for s in (0, 1, 2):
            shift = 0.0 if projector == "mlp2x_gelu" else -0.1 * (i % 3)
            p = 1 / (1 + np.exp(-(base + shift * y + rng.normal(scale=0.6, size=300))))
            name = f"{projector}__{strategy}__seed{s}"
            record = {
                "cell": {"projector": projector, "strategy": strategy, "seed": s, "name": name},
                "metrics": {"test": {"auc": float(roc_auc_score(y, p))}, "best_val_entry": {"step": 10}},
                "steps": 20,
                "config": {"data": {"synthetic_seed": protocol["benchmark_seed"]}, "model": {}},
                "scores": {"test": {"id": [f"i{j}" for j in range(300)], "p_fake": p.tolist(), "is_fake": y.tolist(),
                                    "manipulation": ["none" if v == 0 else "self_blend" for v in y]}},
            }  # fmt: skip
            (runs / f"{name}.json").write_text(json.dumps(record))
    path = folder / "protocol.yaml"
    path.write_text(yaml.safe_dump(protocol))
    confirm_main(["--protocol", str(path), "--runs", str(runs), "--out", str(folder / "confirm")])
    return path


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sbs")
    tiny_protocol = write_study(tmp / "tiny", TINY, 0)
    smol_protocol = write_study(tmp / "smol", SMOL, 1, zero_shot=True)
    argv = ["--tiny", str(tmp / "tiny"), "--tiny_protocol", str(tiny_protocol), "--smol", str(tmp / "smol"),
            "--smol_protocol", str(smol_protocol), "--out", str(tmp / "out")]  # fmt: skip
    return tmp, argv, main(argv)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_per_strategy_and_smol_mean_row_is_its_studys_own_figure(studies):
    tmp, _, rows = studies
    tiny = {
        (r["comparison"].split(" vs ")[0], r["strategy"]): r
        for r in read_csv(tmp / "tiny/confirm/comparisons.csv")
    }
    per = {
        (r["comparison"].split(" vs ")[0], r["strategy"]): r
        for r in read_csv(tmp / "smol/confirm/per_strategy.csv")
    }
    mean = {r["comparison"].split(" vs ")[0]: r for r in read_csv(tmp / "smol/confirm/comparisons.csv")}
    for r in rows:
        if r["preset"] == "tiny" and r["strategy"] != "mean":
            want = tiny[(r["projector"], r["strategy"])]
            assert r["verdict"] == want["verdict"]
        elif r["preset"] == "smol" and r["strategy"] != "mean":
            want = per[(r["projector"], r["strategy"])]
            assert (
                r["verdict"] == f"secondary: {want['verdict']}"
                and r["source"] == "secondary (v3, Holm over 8)"
            )
        elif r["preset"] == "smol":
            want = mean[r["projector"]]
            assert r["verdict"] == want["verdict"] and r["source"] == "primary (v3)"
        else:
            continue
        assert r["difference"] == pytest.approx(float(want["difference"]), abs=1e-12)
        assert r["p_holm"] == pytest.approx(float(want["p_holm"]), abs=1e-12)
    # every smol candidate has its 2 strategies and its mean; the tiny KAN and kan_light theirs; nothing else
    assert len(rows) == 4 * 3 + 2 * 3
    assert {r["projector"] for r in rows if r["preset"] == "tiny"} == {"kan_h256_g5_k3", "kan_light"}


def test_the_tiny_mean_is_the_mean_of_its_per_strategy_differences_and_carries_no_verdict(studies):
    tmp, _, rows = studies
    tiny = read_csv(tmp / "tiny/confirm/comparisons.csv")
    for projector in ("kan_h256_g5_k3", "kan_light"):
        row = next(
            r
            for r in rows
            if r["preset"] == "tiny" and r["projector"] == projector and r["strategy"] == "mean"
        )
        per = [float(r["difference"]) for r in tiny if r["comparison"].startswith(projector + " vs")]
        # same seeds under both strategies: mean over seeds of the strategy mean = mean of the strategies' means
        assert row["difference"] == pytest.approx(np.mean(per), abs=1e-12)
        assert row["ci95_low"] < row["difference"] < row["ci95_high"]
        assert row["verdict"] == "post hoc: no verdict" and row["source"].startswith("post hoc")


def test_the_files_hold_the_table_the_reference_level_and_the_zero_shot_rows(studies):
    tmp, argv, rows = studies
    assert len(read_csv(tmp / "out/tiny_vs_smol.csv")) == len(rows)
    text = (tmp / "out/tiny_vs_smol.md").read_text()
    assert "python -m llava_df.sweep.side_by_side" in text and "post hoc" in text
    assert "Not in the table" not in text  # every role's rows are there
    runs = tmp / "smol/comparison/runs"
    aucs = [json.loads((runs / f"bottleneck_h64_silu__zero_shot__seed{s}.json").read_text())["metrics"]["test"]["auc"]
            for s in (0, 1, 2)]  # fmt: skip
    assert f"| `bottleneck_h64_silu` | zero_shot | {np.mean(aucs):.3f} | 3 |" in text
    ref = [
        json.loads((runs / f"mlp2x_gelu__lora__seed{s}.json").read_text())["metrics"]["test"]["auc"]
        for s in (0, 1, 2)
    ]
    assert f"{np.mean(ref):.3f} (3 seeds)" in text


def test_a_per_strategy_smol_protocol_is_refused_before_anything_is_written(studies, tmp_path, capsys):
    tmp, argv, _ = studies
    bad = tmp_path / "v3.yaml"
    bad.write_text(yaml.safe_dump({k: v for k, v in SMOL.items() if k != "primary"}))
    argv = [*argv[:-3], str(bad), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert (
        stop.value.code == 2
        and "primary is 'per_strategy'" in err
        and "protocols/confirmatory_v3.yaml" in err
    )
    assert not (tmp_path / "out").exists()


def test_an_exploratory_analysis_is_not_put_beside_a_confirmatory_one(studies, tmp_path, capsys):
    _, argv, _ = studies
    smol = tmp_path / "smol"
    protocol = write_study(smol, SMOL, 1)
    confirm_main(["--protocol", str(protocol), "--runs", str(smol / "comparison" / "runs"), "--out",
                  str(smol / "confirm"), "--exploratory"])  # fmt: skip
    argv = [a if a != argv[5] else str(smol) for a in argv]
    argv[-1] = str(tmp_path / "out")
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "written by an --exploratory analysis" in err
    assert not (tmp_path / "out").exists()


def test_a_study_without_its_analysis_is_named(studies, tmp_path, capsys):
    _, argv, _ = studies
    empty = tmp_path / "smol"
    (empty / "comparison" / "runs").mkdir(parents=True)
    argv = [a if a != argv[5] else str(empty) for a in argv]
    argv[-1] = str(tmp_path / "out")
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"{empty}/confirm/comparisons.csv: no such file" in err
    assert not (tmp_path / "out").exists()
