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


def full_pilot(**over) -> list[dict]:
    out = [zero_shot(ps.REFERENCE), zero_shot(ps.CANDIDATE)]
    for seed in ps.SEEDS:
        for strategy in ps.STRATEGIES:
            for projector in (ps.REFERENCE, ps.CANDIDATE):
                out.append(record(projector, strategy, seed, **over.get((projector, strategy, seed), {})))
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


def test_incomplete_pilot_is_refused_naming_the_missing_cell():
    records = [r for r in full_pilot() if r["cell"]["name"] != "mlp2x_gelu__lora__seed1"]
    with pytest.raises(UsageError, match="mlp2x_gelu__lora__seed1"):
        ps.summarise(records, allow_incomplete=False)
    summary = ps.summarise(records, allow_incomplete=True)
    assert not summary["complete"] and summary["missing"] == ["mlp2x_gelu__lora__seed1"]
    assert "lora" in summary["seed_spread"] and summary["seed_spread"]["lora"]["sd_seed"] is None


def test_sizing_uses_at_least_v2_sd_more_seeds_help_and_images_cost():
    summary = ps.summarise(full_pilot(), allow_incomplete=False)
    assert summary["complete"]
    table = {(r["n_test"], r["seeds"]): r for r in summary["sizing"]}
    assert all(r["sd_seed"] >= ps.V2_SD_SEED for r in summary["sizing"])
    assert table[(1000, 5)]["mdd_holm_first"] < table[(1000, 3)]["mdd_holm_first"]
    assert table[(1000, 8)]["margin_holm_first"] < table[(1000, 3)]["margin_holm_first"]
    assert table[(4000, 5)]["se_image"] == pytest.approx(table[(450, 5)]["se_image"] * (450 / 4000) ** 0.5)
    assert table[(4000, 5)]["cpu_h_per_seed_cap"] > table[(450, 5)]["cpu_h_per_seed_cap"]
    # cap cost >= mean-stop cost: every cap is at least the largest stop + 2
    assert all(r["cpu_h_per_seed_cap"] > r["cpu_h_per_seed_mean_stop"] for r in summary["sizing"])


def test_main_writes_summary_or_an_error_line(tmp_path, capsys):
    runs = tmp_path / "comparison" / "runs"
    runs.mkdir(parents=True)
    assert ps.main(["--results_dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: --results_dir")
    for r in full_pilot():
        (runs / f"{r['cell']['name']}.json").write_text(json.dumps(r))
    assert ps.main(["--results_dir", str(tmp_path)]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert (
        "INCOMPLETE" not in text
        and "| lora | 7 |" not in text
        and "| unfreeze_early | 6 | 5 | 0/4 | 8 |" in text
    )
    assert json.loads((tmp_path / "summary.json").read_text())["complete"] is True
