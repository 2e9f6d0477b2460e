"""benchmarks/pilot_v3_summary.py: the v3 pilot's decisions computed from run records, as protocols/pilot_v3.md fixed."""

from __future__ import annotations

import json

import numpy as np
import pilot_v3_summary as ps
import pytest
from sklearn.metrics import roc_auc_score

from llava_df.errors import UsageError

N_TEST = 200
ENV = {"git": {"commit": "4fda8c0" + "0" * 33, "dirty": False},
       "device": {"cpu_model": "Intel(R) Xeon(R) Processor", "cpu_count": 2, "cuda": False}}  # fmt: skip


def _scores(seed: int, shift: float) -> dict:
    rng = np.random.default_rng(seed)
    y = (np.arange(N_TEST) % 2).astype(int)
    p = 1 / (1 + np.exp(-(1.5 * y - 0.75 + shift * y + rng.normal(0, 1, N_TEST))))
    return {"id": [f"img{i}" for i in range(N_TEST)], "is_fake": y.tolist(), "p_fake": p.tolist(),
            "manipulation": ["self_blend" if v else "none" for v in y]}  # fmt: skip


def record(
    projector: str, strategy: str, seed: int, epochs: int = 6, selected: int = 5, shift: float = 0.0
) -> dict:
    test = _scores(100 * seed + len(projector), shift)
    steps_per_epoch = 62  # ceil(990 / 16)
    return {
        "cell": {"projector": projector, "strategy": strategy, "seed": seed, "name": f"{projector}__{strategy}__seed{seed}"},
        "steps": epochs * steps_per_epoch,
        "metrics": {"test": {"auc": roc_auc_score(test["is_fake"], test["p_fake"])},
                    "best_val_entry": {"epoch": float(selected), "step": selected * steps_per_epoch, "auc": 0.85}},
        "time": {"process_cpu_s": 1000.0 + 100 * epochs},
        "data": {"splits": {"train": 990, "val": 360, "test": N_TEST, "heldout": 0}},
        "config": {"training": {"per_device_train_batch_size": 16, "gradient_accumulation_steps": 1}},
        "scores": {"test": test}, "env": ENV,
    }  # fmt: skip


def zero_shot(projector: str) -> dict:
    test = _scores(7, 0.0)
    return {"cell": {"projector": projector, "strategy": "zero_shot", "seed": 0, "name": f"{projector}__zero_shot__seed0"},
            "metrics": {"test": {"auc": 0.5}}, "time": {"scoring_s": 20.0}, "scores": {"test": test}, "env": ENV}  # fmt: skip


def full_pilot(over: dict | None = None) -> list[dict]:
    out = [zero_shot(ps.REFERENCE), zero_shot(ps.CANDIDATE)]
    for seed in ps.SEEDS:
        for strategy in ps.STRATEGIES:
            for projector in (ps.REFERENCE, ps.CANDIDATE):
                out.append(
                    record(projector, strategy, seed, **(over or {}).get((projector, strategy, seed), {}))
                )
    return out


def test_epochs_run_from_steps_and_batch():
    assert ps.epochs_run(record("mlp2x_gelu", "lora", 0, epochs=7)) == 7


def test_cell_row_cost_subtracts_scoring_and_marks_last_eval():
    row = ps.cell_row(record("mlp2x_gelu", "lora", 0, epochs=7, selected=7), s_per_image=0.5)
    assert row["last_eval"] and not row["at_cap"]
    assert row["cpu_s_per_epoch"] == pytest.approx((1700.0 - N_TEST * 0.5) / 7)


def test_epoch_cap_rule_and_binding():
    rows = [ps.cell_row(record("a", "lora", 0, epochs=7, selected=5), 0.1),
            ps.cell_row(record("b", "lora", 0, epochs=5, selected=5), 0.1),
            ps.cell_row(record("a", "projector_only", 0, epochs=12, selected=11), 0.1)]  # fmt: skip
    caps = ps.epoch_cap(rows)
    assert caps["lora"]["cap"] == 9  # largest stop 7 + 2 (>= largest selected 5 + 1)
    assert caps["projector_only"]["cap"] is None and caps["projector_only"]["binds_at_pilot_cap"]


def test_paired_difference_matches_sklearn_and_refuses_other_images():
    a, b = record("bottleneck_h64_silu", "lora", 0, shift=1.0), record("mlp2x_gelu", "lora", 0)
    d = ps.paired_difference(a, b)
    ta, tb = a["scores"]["test"], b["scores"]["test"]
    want = roc_auc_score(ta["is_fake"], ta["p_fake"]) - roc_auc_score(tb["is_fake"], tb["p_fake"])
    assert d["difference"] == pytest.approx(want) and d["se_image"] > 0 and d["n_test"] == N_TEST
    b["scores"]["test"]["id"] = b["scores"]["test"]["id"][::-1]
    with pytest.raises(UsageError, match="different test images"):
        ps.paired_difference(a, b)


def test_incomplete_pilot_is_refused_naming_the_missing_cell(v2):
    records = [r for r in full_pilot() if r["cell"]["name"] != "mlp2x_gelu__lora__seed1"]
    with pytest.raises(UsageError, match="mlp2x_gelu__lora__seed1"):
        ps.summarise(records, allow_incomplete=False, v2_runs=v2)
    summary = ps.summarise(records, allow_incomplete=True, v2_runs=v2)
    assert list(summary["strategy_mean_spread"]["per_seed"]) == [0]  # seed 1 lacks a strategy
    assert not summary["complete"] and summary["missing"] == ["mlp2x_gelu__lora__seed1"]
    assert "lora" in summary["seed_spread"] and summary["seed_spread"]["lora"]["sd_seed"] is None


def v2_runs(folder, vary: bool) -> object:
    """Protocol v2-like records (2 projectors x 3 strategies x 3 seeds) under ``folder``/runs; with ``vary`` each
    strategy draws its own scores, else every strategy of a seed scores alike (its differences are equal)."""
    runs = folder / "runs"
    runs.mkdir(parents=True)
    for seed in range(3):
        for i, strategy in enumerate(ps.STRATEGIES):
            for projector in ("mlp2x_gelu", "kan_light"):
                r = record(projector, strategy, seed)
                if vary:
                    r["scores"]["test"] = _scores(1000 * i + 100 * seed + len(projector), 0.0)
                (runs / f"{r['cell']['name']}.json").write_text(json.dumps(r))
    return runs


@pytest.fixture
def v2(tmp_path):
    return v2_runs(tmp_path / "v2", vary=True)


def test_v2_averaging_ratio_is_one_for_equal_strategies_and_below_for_independent_ones(tmp_path):
    same = ps.v2_averaging_ratio(v2_runs(tmp_path / "same", vary=False))
    assert same["ratio"] == pytest.approx(1.0) and same["sd_per_strategy"] > 0
    apart = ps.v2_averaging_ratio(v2_runs(tmp_path / "apart", vary=True))
    assert apart["ratio"] < 1.0
    # by hand: kan_light's strategy-mean differences over 3 seeds, one candidate so nothing is pooled
    aucs = {}
    for path in sorted((tmp_path / "apart" / "runs").glob("*.json")):
        r = json.loads(path.read_text())
        test = r["scores"]["test"]
        aucs[(r["cell"]["projector"], r["cell"]["strategy"], r["cell"]["seed"])] = roc_auc_score(
            test["is_fake"], test["p_fake"]
        )
    d = np.array(
        [[aucs[("kan_light", st, k)] - aucs[("mlp2x_gelu", st, k)] for k in range(3)] for st in ps.STRATEGIES]
    )
    assert apart["sd_strategy_mean"] == pytest.approx(d.mean(axis=0).std(ddof=1))
    assert apart["sd_per_strategy"] == pytest.approx(np.sqrt(np.mean(d.std(axis=1, ddof=1) ** 2)))


def test_strategy_mean_spread_averages_the_strategies_differences_with_no_larger_image_se(v2):
    over = {(ps.CANDIDATE, st, k): {"shift": 0.4 * i} for i, st in enumerate(ps.STRATEGIES) for k in ps.SEEDS}
    summary = ps.summarise(full_pilot(over), allow_incomplete=False, v2_runs=v2)
    mean, per = summary["strategy_mean_spread"], summary["seed_spread"]
    for seed in ps.SEEDS:
        by_strategy = [per[st]["per_seed"][seed] for st in ps.STRATEGIES]
        assert mean["per_seed"][seed]["difference"] == pytest.approx(
            np.mean([p["difference"] for p in by_strategy])
        )
        assert mean["per_seed"][seed]["se_image"] <= np.mean([p["se_image"] for p in by_strategy]) + 1e-12
    assert mean["sd_seed"] == pytest.approx(
        np.std([mean["per_seed"][k]["difference"] for k in ps.SEEDS], ddof=1)
    )


def _row(design, n, k, margin, hours):
    return {"design": design, "family": ps.DESIGNS[design], "n_test": n, "seeds": k, "margin_holm_first": margin,
            "mdd_holm_first": margin, "cpu_h_study_cap": hours}  # fmt: skip


def test_the_choice_follows_the_drafts_rule_in_order():
    reach_per = _row("per_strategy", 4000, 8, 0.014, 59)
    reach_mean_cheap, reach_mean = (
        _row("strategy_mean", 2000, 4, 0.015, 40),
        _row("strategy_mean", 4000, 4, 0.012, 50),
    )
    far = [_row("strategy_mean", 2000, 3, 0.030, 30), _row("strategy_mean", 4000, 5, 0.019, 58),
           _row("strategy_mean", 4000, 8, 0.010, 90)]  # fmt: skip
    # (1) the per-strategy design wins whenever one of its pairs reaches the margin within the budget
    assert ps.choose([reach_per, reach_mean_cheap, reach_mean])["design"] == "per_strategy"
    # (2) else the cheapest strategy-mean pair reaching it
    assert ps.choose([reach_mean, reach_mean_cheap, *far])["n_test"] == 2000
    # (3) else the smallest reachable margin within the budget (90 CPU h is over it), stated as the power
    chosen = ps.choose(far)
    assert (chosen["n_test"], chosen["seeds"]) == (4000, 5) and "stated as the study's power" in chosen[
        "rule"
    ]
    assert ps.choose([_row("strategy_mean", 4000, 8, 0.010, 61)]) is None


def test_sizing_uses_at_least_v2_sd_more_seeds_help_and_images_cost(v2):
    summary = ps.summarise(full_pilot(), allow_incomplete=False, v2_runs=v2)
    assert summary["complete"]
    table = {(r["n_test"], r["seeds"]): r for r in summary["sizing"] if r["design"] == "per_strategy"}
    mean = {(r["n_test"], r["seeds"]): r for r in summary["sizing"] if r["design"] == "strategy_mean"}
    assert set(table) == set(mean) and all(r["family"] == 4 for r in mean.values())
    floor = ps.V2_SD_SEED * summary["v2_averaging"]["ratio"]
    assert all(r["sd_seed"] >= floor - 1e-15 for r in mean.values())
    assert all(r["sd_seed"] >= ps.V2_SD_SEED for r in table.values())
    assert table[(1000, 5)]["mdd_holm_first"] < table[(1000, 3)]["mdd_holm_first"]
    assert table[(1000, 8)]["margin_holm_first"] < table[(1000, 3)]["margin_holm_first"]
    assert table[(4000, 5)]["se_image"] == pytest.approx(table[(450, 5)]["se_image"] * (450 / 4000) ** 0.5)
    assert table[(4000, 5)]["cpu_h_per_seed_cap"] > table[(450, 5)]["cpu_h_per_seed_cap"]
    # cap cost >= mean-stop cost: every cap is at least the largest stop + 2
    assert all(r["cpu_h_per_seed_cap"] > r["cpu_h_per_seed_mean_stop"] for r in summary["sizing"])
    assert summary["choice"] == ps.choose(summary["sizing"])


def test_main_writes_summary_or_an_error_line(tmp_path, capsys, v2):
    runs = tmp_path / "comparison" / "runs"
    runs.mkdir(parents=True)
    assert ps.main(["--results_dir", str(tmp_path), "--v2_runs", str(v2)]) == 2
    assert capsys.readouterr().err.startswith("error: --results_dir")
    for r in full_pilot():
        (runs / f"{r['cell']['name']}.json").write_text(json.dumps(r))
    assert ps.main(["--results_dir", str(tmp_path), "--v2_runs", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no protocol v2 run records" in capsys.readouterr().err
    assert ps.main(["--results_dir", str(tmp_path), "--v2_runs", str(v2)]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert (
        "INCOMPLETE" not in text
        and "| lora | 7 |" not in text
        and "| unfreeze_early | 6 | 5 | 0/4 | 8 |" in text
    )
    assert json.loads((tmp_path / "summary.json").read_text())["complete"] is True
