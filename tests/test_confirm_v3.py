"""Protocol v3's analysis (`python -m llava_df.sweep.confirm`): margin sensitivity, secondary endpoints,
convergence per strategy and one commit / machine / preset per study; v1/v2 protocols keep today's output.

Fixture records are built in code (3 seeds x 3 projectors x 2 strategies, 400 test images in four fake
families); the whole file runs in a few seconds (the bootstrap uses 100 draws here)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats
from sklearn.metrics import roc_auc_score

from llava_df.sweep.confirm import _convergence_lines, analyse, main
from llava_df.sweep.margins import holm, sensitivity, smallest_margin
from llava_df.sweep.secondary import tpr_at_fpr
from llava_df.sweep.study import study_values

FAMILIES = ("gan_upsample", "self_blend", "expression_warp", "noise_inconsistency")
V2 = {
    "reference": "mlp2x_gelu", "candidates": ["kan_light", "linear"], "strategies": ["projector_only", "lora"],
    "margin": 0.02, "alpha": 0.05, "power": 0.8, "target_mdd": 0.02, "benchmark_seed": 77,
}  # fmt: skip
V3 = V2 | {
    "sensitivity_margins": [0.01, 0.015, 0.02],
    "secondary": ["family_auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.05"],
    "bootstrap_draws": 100,
    "max_last_eval_share": 0.2,
    "one_commit": True,
}
PACKAGES = {"torch": "2.13.0+cpu", "transformers": "5.24.0", "peft": "0.21.2", "bitsandbytes": "0.50.2"}
SHIFT = {"mlp2x_gelu": 0.0, "kan_light": -0.05, "linear": -0.9}


def fixture_scores(seeds=(0, 1, 2)):
    """{(projector, strategy, seed): p_fake [400]}, is_fake [400], manipulation [400]: 200 reals, 4 x 50 fakes."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 200)
    manipulation = np.array(["none"] * 200 + [f for f in FAMILIES for _ in range(50)])
    difficulty = np.concatenate([np.zeros(200), np.repeat([1.6, 1.2, 0.6, 0.9], 50)])
    base = rng.normal(size=400) + difficulty
    scores = {}
    for strategy in ("projector_only", "lora"):
        for projector, delta in SHIFT.items():
            for seed in seeds:
                logit = base + delta * y + rng.normal(scale=0.5, size=400)
                scores[(projector, strategy, seed)] = 1 / (1 + np.exp(-logit))
    return scores, y, manipulation


def make_record(projector, strategy, seed, p, y, manipulation, *, commit="abc1234", dirty=False,
                cpu="AMD EPYC", preset="tiny", last=False, benchmark_seed=77):  # fmt: skip
    name = f"{projector}__{strategy}__seed{seed}"
    return {
        "cell": {"projector": projector, "strategy": strategy, "seed": seed, "name": name},
        "metrics": {"test": {"auc": 0.9}, "best_val_entry": {"step": 20 if last else 10}},
        "steps": 20,
        "env": {"git": {"commit": commit, "dirty": dirty}, "device": {"cpu_model": cpu, "cpu_count": 2},
                "packages": dict(PACKAGES)},
        "config": {"data": {"synthetic_seed": benchmark_seed}, "model": {"model_name_or_path": preset}},
        "scores": {"test": {"id": [f"i{i}" for i in range(len(y))], "p_fake": [float(v) for v in p],
                            "is_fake": [int(v) for v in y], "manipulation": [str(m) for m in manipulation]}},
    }  # fmt: skip


def write_records(folder, override=None):
    """The fixture as run records under ``folder``/runs; ``override``: {cell name: record fields to change}."""
    scores, y, manipulation = fixture_scores()
    runs = folder / "runs"
    runs.mkdir(parents=True)
    for (projector, strategy, seed), p in scores.items():
        record = make_record(projector, strategy, seed, p, y, manipulation)
        name = record["cell"]["name"]
        for field, value in (override or {}).get(name, {}).items():
            section, key = field.split(".")
            record[section][key] = value
        (runs / f"{name}.json").write_text(json.dumps(record))
    return runs


def run(tmp_path, protocol, runs, *extra):
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(protocol))
    out = tmp_path / "out"
    return main(["--protocol", str(path), "--runs", str(runs), "--out", str(out), *extra]), out


# The last-evaluation runs of the shared v3 run: 3 of lora's 9 (above 0.2), none of projector_only's.
LAST = {name: {"metrics.best_val_entry": {"step": 20}} for name in
        ("kan_light__lora__seed0", "linear__lora__seed1", "mlp2x_gelu__lora__seed2")}  # fmt: skip


@pytest.fixture(scope="module")
def v3(tmp_path_factory):
    """One v3 analysis of the fixture (margins 0.01 / 0.03 / 0.05, where kan_light's verdicts change)."""
    tmp = tmp_path_factory.mktemp("v3")
    runs = write_records(tmp / "r", override=LAST)
    result, out = run(tmp, V3 | {"sensitivity_margins": [0.01, 0.03, 0.05]}, runs)
    return result, out


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def holm_by_hand(p):
    """Holm's adjusted p over the last axis, written out (independent of statsmodels)."""
    order = np.argsort(p, axis=-1)
    m = p.shape[-1]
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    adjusted = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def test_the_margin_searchs_holm_is_statsmodels_holm():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    for m in (1, 2, 4, 12, 30):
        for p in (
            rng.uniform(size=m),
            rng.uniform(size=m) ** 6,
            np.repeat(rng.uniform(size=(m + 1) // 2), 2)[:m],
        ):
            assert holm(p) == pytest.approx(multipletests(p, method="holm")[1], abs=1e-15)


def test_the_smallest_surviving_margin_matches_a_brute_force_grid():
    scores, y, _ = fixture_scores()
    records = [make_record(*cell, p, y, []) for cell, p in scores.items()]
    family, _ = analyse(records, V3)
    grid = np.arange(1, 1001) / 1000  # every margin 0.001 ... 1.0
    d, se, df = (np.array([getattr(c, k) for c in family])[None, :] for k in ("difference", "se", "df"))
    tost = np.maximum(stats.t.sf((d + grid[:, None]) / se, df), stats.t.sf((grid[:, None] - d) / se, df))
    holm = holm_by_hand(tost)  # [margins, comparisons]
    found = []
    for i, c in enumerate(family):
        equivalent = (holm[:, i] < 0.05) & (c.p_holm >= 0.05)
        expected = float(grid[np.argmax(equivalent)]) if equivalent.any() else None
        assert smallest_margin(family, i, 0.05) == pytest.approx(expected) if expected else None is expected
        found.append(expected)
    assert found[1] is None and found[3] is None  # linear: a difference claim ('worse'), no margin applies
    assert 0.02 < found[2] < found[0] < 0.06  # kan_light: equivalent only beyond the protocol's 0.02


def test_sensitivity_verdicts_are_monotone_in_the_margin_and_agree_with_the_primary_at_its_margin(v3):
    result, out = v3
    rows = read_csv(out / "margin_sensitivity.csv")
    primary = {(r["comparison"], r["strategy"]): r["verdict"] for r in result["family"]}
    margins = (0.01, 0.03, 0.05)
    changed = 0
    for r in rows:
        verdicts = [r[f"verdict_at_{m:g}"] for m in margins]
        p = [float(r[f"p_tost_holm_at_{m:g}"]) for m in margins]
        assert p == sorted(p, reverse=True)  # Holm-adjusted TOST p falls as the margin grows
        first = verdicts.index("equivalent") if "equivalent" in verdicts else len(verdicts)
        assert all(
            v == "equivalent" for v in verdicts[first:]
        )  # once equivalent, equivalent at every larger margin
        smallest = r["smallest_equivalence_margin"]
        for m, v in zip(margins, verdicts, strict=True):
            assert (v == "equivalent") == (smallest != "" and m >= float(smallest))
        if primary[(r["comparison"], r["strategy"])] in ("better", "worse"):
            assert set(verdicts) == {primary[(r["comparison"], r["strategy"])]} and smallest == ""
        changed += len(set(verdicts)) > 1
    assert changed == 2  # both kan_light rows turn equivalent within the range
    # the protocol's own margin reproduces the primary verdicts
    again = sensitivity(analyse(json_records(out), V3)[0], [0.02], 0.05)
    assert [r["verdict_at_0.02"] for r in again] == [r["verdict"] for r in result["family"]]
    text = (out / "margin_sensitivity.md").read_text()
    assert "| kan_light vs mlp2x_gelu | lora |" in text and "equivalent | 0.029 |" in text


def json_records(out):
    return [json.loads(p.read_text()) for p in sorted((out.parent / "r" / "runs").glob("*.json"))]


def test_family_auc_differences_are_sklearns_auc_of_each_family_against_the_reals(v3):
    _, out = v3
    scores, y, manipulation = fixture_scores()
    rows = read_csv(out / "family_auc.csv")
    assert len(rows) == 4 and {r["strategy"] for r in rows} == {"projector_only", "lora"}
    for r in rows:
        candidate = r["comparison"].split(" vs ")[0]
        for family in FAMILIES:
            subset = (y == 0) | (manipulation == family)
            direct = np.mean([
                roc_auc_score(y[subset], scores[(candidate, r["strategy"], s)][subset])
                - roc_auc_score(y[subset], scores[("mlp2x_gelu", r["strategy"], s)][subset])
                for s in range(3)
            ])  # fmt: skip
            assert float(r[f"{family}_difference"]) == pytest.approx(direct, abs=1e-12)
            assert float(r[f"{family}_ci95_low"]) < direct < float(r[f"{family}_ci95_high"])
            assert float(r[f"{family}_p_holm"]) >= float(r[f"{family}_p"])
    text = (out / "family_auc.md").read_text()
    assert text.startswith("# SECONDARY endpoint") and "verdict" not in text.split("\n", 4)[-1]


def test_tpr_at_fpr_reads_the_roc_as_worked_out_by_hand():
    # reals 0.1 0.2 0.3 0.4, fakes 0.15 0.3 0.5 0.6 0.7; ROC vertices (FPR, TPR): (0, .6) after the three
    # top fakes, (.25, .6) at 0.4, (.5, .8) at the tied 0.3 (a diagonal), (.75, .8) at 0.2, (.75, 1) at 0.15
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.15, 0.3, 0.5, 0.6, 0.7])
    got = tpr_at_fpr(y, s, [0.1, 0.25, 0.375, 0.75])
    # 0.1: on the flat (0, .6)-(.25, .6); 0.25: a vertex; 0.375: halfway up the diagonal; 0.75: top of the step
    assert got == pytest.approx([0.6, 0.6, 0.7, 1.0])


def test_tpr_at_fpr_table_pairs_seeds_and_bootstraps_the_images(v3):
    _, out = v3
    scores, y, _ = fixture_scores()
    rows = read_csv(out / "tpr_at_fpr.csv")
    assert {r["endpoint"] for r in rows} == {"tpr_at_fpr_0.01", "tpr_at_fpr_0.05"} and len(rows) == 8
    for r in rows:
        candidate, target = r["comparison"].split(" vs ")[0], float(r["endpoint"].rsplit("_", 1)[1])
        direct = np.mean([
            tpr_at_fpr(y, scores[(candidate, r["strategy"], s)], [target])[0]
            - tpr_at_fpr(y, scores[("mlp2x_gelu", r["strategy"], s)], [target])[0]
            for s in range(3)
        ])  # fmt: skip
        assert float(r["difference"]) == pytest.approx(direct)
        assert float(r["se"]) ** 2 == pytest.approx(float(r["se_image"]) ** 2 + float(r["sd_seed"]) ** 2 / 3)
        assert float(r["se_image"]) > 0 and float(r["p_holm"]) >= float(r["p"])
    linear = [r for r in rows if r["comparison"].startswith("linear") and r["endpoint"] == "tpr_at_fpr_0.05"]
    assert all(float(r["ci95_high"]) < 0 for r in linear)  # the much worse projector is worse here too
    assert (
        "200 draws" not in (out / "tpr_at_fpr.md").read_text()
        and "100 draws" in (out / "tpr_at_fpr.md").read_text()
    )


def test_the_header_names_the_study_and_where_the_epoch_cap_binds(v3):
    _, out = v3
    text = (out / "comparisons.md").read_text()
    assert (
        "Runs made at code commit abc1234 (tree: clean), machine AMD EPYC, preset tiny, packages torch 2.13.0+cpu "
        "transformers 5.24.0 peft 0.21.2 bitsandbytes 0.50.2." in text
    )
    assert "per strategy: projector_only 0 of 9 (0%), lora 3 of 9 (33%)" in text
    assert "two Holm families, each at family-wise alpha 0.05" in text and "over both is at most 0.1." in text
    assert "**The epoch cap binds under lora.**" in text and "binds under projector_only" not in text


def test_the_cap_message_appears_when_two_of_five_runs_end_at_the_last_evaluation():
    def record(strategy, seed, last):
        return {"cell": {"strategy": strategy, "name": f"p__{strategy}__seed{seed}"}, "steps": 20,
                "metrics": {"best_val_entry": {"step": 20 if last else 10}}}  # fmt: skip

    study = [record("lora", s, s < 2) for s in range(5)] + [
        record("projector_only", s, s < 1) for s in range(5)
    ]
    lines = _convergence_lines(study, {"strategies": ["projector_only", "lora"], "max_last_eval_share": 0.2})
    assert lines[0].endswith("projector_only 1 of 5 (20%), lora 2 of 5 (40%); above 20% the epoch cap binds.")
    assert lines[1:] == ["**The epoch cap binds under lora.**"]  # 1 of 5 is not above 0.2


def test_runs_cut_off_at_the_cap_are_counted_even_when_their_best_epoch_is_earlier():
    def record(strategy, seed, steps):  # 10 steps per epoch, best at epoch 4, cap 10 epochs
        return {"cell": {"strategy": strategy, "name": f"p__{strategy}__seed{seed}"}, "steps": steps,
                "config": {"training": {"num_train_epochs": 10}},
                "metrics": {"best_val_entry": {"step": 40, "epoch": 4.0}}}  # fmt: skip

    study = [record("lora", 0, 100), record("lora", 1, 60), record("projector_only", 0, 100)]
    study.append(
        {"cell": {"strategy": "lora", "name": "old"}, "steps": 50, "metrics": {}}
    )  # says nothing: not counted
    lines = _convergence_lines(study, {"strategies": ["projector_only", "lora"], "max_last_eval_share": 0.2})
    assert lines[0].endswith("projector_only 0 of 1 (0%), lora 0 of 3 (0%); above 20% the epoch cap binds.")
    assert lines[-1] == (
        "Runs that trained up to the epoch cap (not stopped by the plateau rule), per strategy: "
        "projector_only 1 of 1, lora 1 of 2."
    )


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("env.git", {"commit": "def5678", "dirty": False}, ["code commit: abc1234 (", "def5678 (linear__lora__seed2)"]),
        ("env.git", {"commit": "abc1234", "dirty": True}, ["tree: clean (", "dirty (linear__lora__seed2)"]),
        ("env.device", {"cpu_model": "Intel Xeon"}, ["machine: AMD EPYC (", "Intel Xeon (linear__lora__seed2)"]),
        ("config.model", {"model_name_or_path": "smol"}, ["preset: tiny (", "smol (linear__lora__seed2)"]),
        ("env.packages", PACKAGES | {"transformers": "5.25.0"},
         ["packages: torch 2.13.0+cpu transformers 5.24.0 peft", "transformers 5.25.0 peft 0.21.2 bitsandbytes 0.50.2 "
          "(linear__lora__seed2)"]),
    ],
)  # fmt: skip
def test_a_confirmatory_study_refuses_mixed_commits_trees_machines_and_presets(
    tmp_path, capsys, field, value, named
):
    runs = write_records(tmp_path / "r", override={"linear__lora__seed2": {field: value}})
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, V3, runs)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: the confirmatory records are not one study")
    assert all(n in err for n in named) and "and 13 more" in err and "--exploratory" in err
    assert not (tmp_path / "out").exists()  # refused before the output folder is touched


def test_a_study_on_another_machine_than_the_protocols_is_refused(tmp_path, capsys):
    runs = write_records(tmp_path / "r")  # every record: AMD EPYC
    with pytest.raises(SystemExit):
        run(tmp_path, V3 | {"machine": "Intel(R) Xeon(R) Processor"}, runs)
    err = capsys.readouterr().err
    assert "machine: AMD EPYC (" in err and "the protocol's Intel(R) Xeon(R) Processor (none)" in err
    result, _ = run(tmp_path, V3 | {"machine": "AMD EPYC"}, runs)
    assert len(result["family"]) == 4


def test_an_exploratory_analysis_of_mixed_records_names_each_with_its_count(tmp_path):
    runs = write_records(tmp_path / "r", override={"linear__lora__seed2": {"env.git": {"commit": "def5678"}}})
    protocol = {k: v for k, v in V3.items() if k not in ("secondary", "sensitivity_margins")}
    run(tmp_path, protocol, runs, "--exploratory")
    text = (tmp_path / "out" / "comparisons.md").read_text()
    assert (
        "code commit abc1234 (17 runs), def5678 (1 runs) (tree: clean (17 runs), not recorded (1 runs))"
        in text
    )


def test_a_study_with_a_cell_missing_is_refused_before_the_output_folder_is_touched(tmp_path, capsys):
    runs = write_records(tmp_path / "r")
    (runs / "linear__lora__seed1.json").unlink()
    protocol = V3 | {"seeds": [0, 1, 2, 3]}
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, protocol, runs)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    # 3 projectors x 2 strategies x 4 seeds = 24 cells; seed 3's 6 and linear__lora__seed1 are missing
    assert err.startswith("error: the study is incomplete: 7 of the protocol's 24 cells have no record")
    assert (
        "linear__lora__seed1" in err and "mlp2x_gelu__projector_only__seed3" in err and "--exploratory" in err
    )
    assert not (tmp_path / "out").exists()
    run(tmp_path, protocol, runs, "--exploratory")  # a partial study can be looked at, labelled so
    assert "EXPLORATORY" in (tmp_path / "out" / "comparisons.md").read_text()


def test_a_run_at_another_rate_than_the_protocols_choice_is_refused(tmp_path, capsys, monkeypatch):
    pairs = [f"{p}/{s}" for p in SHIFT for s in ("projector_only", "lora")]
    (tmp_path / "choice.json").write_text(json.dumps({"choices": dict.fromkeys(pairs, 1e-3)}))
    override = {name: {"config.training": {"learning_rate": 1e-3}} for name in
                [f"{p}__{s}__seed{k}" for p in SHIFT for s in ("projector_only", "lora") for k in (0, 1, 2)]}  # fmt: skip
    override["kan_light__lora__seed2"] = {"config.training": {"learning_rate": 3e-3}}
    runs = write_records(tmp_path / "r", override=override)
    monkeypatch.chdir(tmp_path)  # the protocol's path is from the repository root
    protocol = {k: v for k, v in V3.items() if k != "secondary"} | {"lr_choice": "choice.json"}
    with pytest.raises(SystemExit):
        run(tmp_path, protocol, runs)
    err = capsys.readouterr().err
    assert "1 runs did not train at the learning rate choice.json chose" in err
    assert "kan_light__lora__seed2 (0.003 trained, 0.001 chosen)" in err and not (tmp_path / "out").exists()
    override["kan_light__lora__seed2"] = {"config.training": {"learning_rate": 1e-3}}
    runs = write_records(tmp_path / "r2", override=override)
    result, _ = run(tmp_path, protocol, runs)
    assert len(result["family"]) == 4


def test_a_complete_study_passes_the_completeness_check(tmp_path):
    runs = write_records(tmp_path / "r")
    result, out = run(
        tmp_path, {k: v for k, v in V3.items() if k != "secondary"} | {"seeds": [0, 1, 2]}, runs
    )
    assert len(result["family"]) == 4 and (out / "comparisons.md").is_file()


def test_a_committed_record_carries_what_the_study_check_reads():
    """The fields study.py reads are where build_record puts them (a record of the v2 confirmatory run)."""
    record = next(
        iter(
            sorted(
                (Path(__file__).parents[1] / "results" / "confirmatory_v2" / "comparison" / "runs").glob(
                    "*.json"
                )
            )
        )
    )
    values = study_values([json.loads(record.read_text())])
    assert [list(v) for v in values.values()] == [
        ["578f966d41dc04ba0dfe453e5cc5b0763dbc07e7"],
        ["clean"],
        ["AMD EPYC"],
        ["tiny"],
        ["torch 2.13.0+cpu transformers 5.24.0 peft 0.21.2 bitsandbytes 0.50.2"],
    ]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [("sensitivity_margins", [0.01, -1], "sensitivity_margins is [0.01, -1]; expected a list of AUC margins"),
     ("secondary", ["family_auc", "tpr_at_fpr_5"], "'tpr_at_fpr_5' is not an endpoint"),
     ("one_commit", "yes", "one_commit is 'yes'; expected true or false"),
     ("machine", "", "machine is ''; expected a CPU model name"),
     ("seeds", 3, "seeds is 3; expected a list of training seeds"),
     ("lr_choice", 7, "lr_choice is 7; expected the grid's choice file")],
)  # fmt: skip
def test_a_bad_v3_key_is_named_before_any_record_is_read(tmp_path, capsys, key, value, expected):
    with pytest.raises(SystemExit):
        run(tmp_path, V2 | {key: value}, tmp_path / "no_such_runs")
    err = capsys.readouterr().err
    assert err.startswith("error: --protocol") or err.startswith("error: protocol secondary")
    assert expected in err


# comparisons.md of the fixture under the v2 protocol, as confirm.py wrote it before v3's keys existed
# (commit 3056189), with the temporary folder written <tmp>.
V2_MD = """# Confirmatory: every projector against mlp2x_gelu, test AUC

Command: `python -m llava_df.sweep.confirm --protocol <tmp>/protocol.yaml --runs <tmp>/r/runs --out <tmp>/out`. \
Protocol: `<tmp>/protocol.yaml` (commit not committed). Family: 4 comparisons, Holm at alpha 0.05 (BH beside it); \
equivalence margin +-0.02 AUC (TOST, Holm over the family).
**Runs that selected their last epoch: 0 of 18 (0%).**
Power: pooled image SE 0.0120, pooled seed SD of a difference 0.0220; at 3 seeds the minimum detectable difference \
(80% power, t quantiles) is 0.057 at alpha 0.05 and 0.073 at Holm's first step (alpha/4); 0.02 needs more than 64 \
seeds (more than 64 at alpha/4).

| comparison | strategy | seeds | difference [95% CI] | 90% CI (TOST) | d_z | p | p Holm | p BH | p TOST Holm | verdict |
|---|---|---:|---|---|---:|---:|---:|---:|---:|---|
| kan_light vs mlp2x_gelu | projector_only | 3 | -0.0057 [-0.0433, +0.0319] | [-0.0358, +0.0244] | -0.28 | 0.731 | 1 | \
0.827 | 0.596 | not resolved at this power |
| linear vs mlp2x_gelu | projector_only | 3 | -0.2153 [-0.2875, -0.1431] | [-0.2702, -0.1603] | -5.75 | 0.00142 | \
0.00426 | 0.00284 | 1 | worse |
| kan_light vs mlp2x_gelu | lora | 3 | +0.0025 [-0.0200, +0.0250] | [-0.0164, +0.0213] | +0.32 | 0.827 | 1 | 0.827 | \
0.251 | not resolved at this power |
| linear vs mlp2x_gelu | lora | 3 | -0.2274 [-0.2553, -0.1995] | [-0.2508, -0.2040] | -28.33 | 3.34e-36 | 1.33e-35 | \
1.33e-35 | 1 | worse |

Verdicts: not resolved at this power 2, worse 2.
"""
V2_ROWS = [  # (comparison, strategy, difference, se, df, p Holm, p TOST Holm, verdict) before v3
    ("kan_light vs mlp2x_gelu", "projector_only", -0.005683333333333336, 0.015863631671624037, 6.907610706847204,
     1.0, 0.595765758165618, "not resolved at this power"),
    ("linear vs mlp2x_gelu", "projector_only", -0.21525833333333333, 0.025240197270970342, 3.7216083043025097,
     0.004258196474553249, 1.0, "worse"),
    ("kan_light vs mlp2x_gelu", "lora", 0.002483333333333282, 0.011325470302305215, 85.1051875593109, 1.0,
     0.25131126380931657, "not resolved at this power"),
    ("linear vs mlp2x_gelu", "lora", -0.227375, 0.01414466866565223, 173.61086394390136, 1.3345800276651379e-35,
     1.0, "worse"),
]  # fmt: skip


def test_a_v2_protocol_gives_the_same_output_as_before(tmp_path):
    runs = write_records(tmp_path / "r")
    _, out = run(tmp_path, V2, runs)
    assert sorted(p.name for p in out.iterdir()) == ["comparisons.csv", "comparisons.md", "power.json"]
    assert (out / "comparisons.md").read_text().replace(str(tmp_path), "<tmp>") == V2_MD
    rows = read_csv(out / "comparisons.csv")
    got = [(r["comparison"], r["strategy"], *(float(r[k]) for k in ("difference", "se", "df", "p_holm", "p_tost_holm")),
            r["verdict"]) for r in rows]  # fmt: skip
    for row, before in zip(got, V2_ROWS, strict=True):
        assert row[:2] == before[:2] and row[-1] == before[-1]
        assert row[2:-1] == pytest.approx(before[2:-1], rel=1e-9, abs=1e-40)
