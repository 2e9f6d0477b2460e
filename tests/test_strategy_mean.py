"""``primary: strategy_mean`` (protocol v3): one comparison per candidate, its difference averaged over the
strategies, with the image part of its error from DeLong over every run and the per-strategy comparisons
written beside it as a secondary table. Fixture records from tests/test_confirm_v3.py (3 seeds, 2 strategies)."""

import csv

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score
from test_confirm_v3 import V3, fixture_scores, make_record, run, write_records

from llava_df.sweep.confirm import analyse
from llava_df.sweep.inference import compare_to_reference

MEAN = V3 | {"primary": "strategy_mean"}
STRATEGIES = ("projector_only", "lora")


def sides(scores, candidate, reference="mlp2x_gelu", seeds=(0, 1, 2)):
    """candidate and reference scores as [strategies, seeds, N]."""
    return tuple(
        np.stack([np.stack([scores[(p, s, k)] for k in seeds]) for s in STRATEGIES])
        for p in (candidate, reference)
    )


def test_the_mean_over_strategies_is_each_seeds_mean_of_sklearn_auc_differences():
    scores, y, _ = fixture_scores()
    a, b = sides(scores, "kan_light")
    c = compare_to_reference(y, a, b, margin=0.015)
    by_hand = [
        np.mean([roc_auc_score(y, a[s, k]) - roc_auc_score(y, b[s, k]) for s in range(2)]) for k in range(3)
    ]
    assert c.per_seed == pytest.approx(by_hand, abs=1e-12)
    assert c.difference == pytest.approx(np.mean(by_hand), abs=1e-12)
    assert c.sd_seed == pytest.approx(np.std(by_hand, ddof=1), abs=1e-12)
    assert c.se == pytest.approx(np.sqrt(c.se_image**2 + c.sd_seed**2 / 3))


def test_one_strategy_is_the_per_strategy_comparison_and_a_copied_strategy_shrinks_nothing():
    scores, y, _ = fixture_scores()
    a, b = sides(scores, "kan_light")
    single = compare_to_reference(y, a[0], b[0])
    assert compare_to_reference(y, a[:1], b[:1]) == single
    # the same runs twice: their image errors are perfectly correlated, so averaging must not shrink the SE
    twice = compare_to_reference(y, np.stack([a[0], a[0]]), np.stack([b[0], b[0]]))
    assert twice.se_image == pytest.approx(single.se_image, rel=1e-9)
    assert twice.per_seed == pytest.approx(single.per_seed)
    # two strategies with their own run noise: the mean's image part is below either strategy's
    both = compare_to_reference(y, a, b)
    assert both.se_image < min(compare_to_reference(y, a[s], b[s]).se_image for s in range(2))


def test_the_sides_must_match_in_strategies_seeds_and_images():
    scores, y, _ = fixture_scores()
    a, b = sides(scores, "kan_light")
    with pytest.raises(ValueError, match=r"same seeds and images, got \(2, 3, 400\) and \(2, 2, 400\)"):
        compare_to_reference(y, a, b[:, :2])


def test_a_strategy_mean_study_writes_one_primary_row_per_candidate_and_the_per_strategy_table(tmp_path):
    runs = write_records(tmp_path / "r")
    result, out = run(tmp_path, MEAN, runs)
    rows = result["family"]
    assert [(r["comparison"], r["strategy"]) for r in rows] == [
        ("kan_light vs mlp2x_gelu", "mean of 2 strategies"),
        ("linear vs mlp2x_gelu", "mean of 2 strategies"),
    ]
    scores, y, _ = fixture_scores()
    for r, candidate in zip(rows, ("kan_light", "linear"), strict=True):
        a, b = sides(scores, candidate)
        assert float(r["difference"]) == pytest.approx(compare_to_reference(y, a, b).difference, abs=1e-12)
    # the per-strategy comparisons: exactly the per_strategy protocol's family, Holm over its 4
    with open(out / "per_strategy.csv") as f:
        per = list(csv.DictReader(f))
    records = [make_record(*cell, p, y, []) for cell, p in scores.items()]
    family, _ = analyse(records, V3)
    assert [(r["comparison"], r["strategy"]) for r in per] == [tuple(c.name.split(" | ")) for c in family]
    assert [float(r["p_holm"]) for r in per] == pytest.approx([c.p_holm for c in family])
    assert [r["verdict"] for r in per] == [c.verdict for c in family]
    assert per[1]["verdict"] == "worse" and per[1]["smallest_equivalence_margin"] == ""
    assert (
        "Primary family: each candidate's difference averaged over the 2 strategies"
        in (out / "comparisons.md").read_text()
    )
    assert "| linear vs mlp2x_gelu | lora | 3 |" in (out / "per_strategy.md").read_text()
    # the margin sensitivity is of the primary family: its 2 rows
    with open(out / "margin_sensitivity.csv") as f:
        assert [r["strategy"] for r in csv.DictReader(f)] == ["mean of 2 strategies"] * 2


def test_seed_counts_that_differ_between_strategies_are_refused(tmp_path, capsys):
    runs = write_records(tmp_path / "r")
    (runs / "kan_light__lora__seed2.json").unlink()
    with pytest.raises(SystemExit) as stop:
        run(tmp_path, MEAN, runs)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "error: kan_light: seed counts differ between strategies ([3, 2])" in err
    assert not (tmp_path / "out").exists()


def test_an_unknown_primary_is_named(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(V3 | {"primary": "pooled"}))
    with pytest.raises(SystemExit):
        run(tmp_path, V3 | {"primary": "pooled"}, write_records(tmp_path / "r"))
    assert (
        "primary is 'pooled'; expected per_strategy (the default) or strategy_mean" in capsys.readouterr().err
    )


def test_the_sweep_table_of_a_strategy_mean_study_calls_its_per_strategy_verdicts_secondary():
    from llava_df.sweep.inference import Analysis
    from llava_df.sweep.report import _status_line

    records = [{"steps": 10, "config": {"data": {"synthetic_seed": 77}}}]
    mean = Analysis.from_protocol(MEAN, "p.yaml")
    assert mean.primary == "strategy_mean" and Analysis.from_protocol(V3, "p.yaml").primary == "per_strategy"
    line = _status_line(records, mean)
    assert line.startswith(
        "**Confirmatory test set** (--synthetic_seed 77), but the protocol's primary family"
    )
    assert "per-strategy verdicts of this table are secondary, not confirmatory claims" in line
    assert "only the comparisons the protocol names are confirmatory" in _status_line(
        records, Analysis.from_protocol(V3, "p")
    )
