"""Leave one family out: each family held out in turn, beside its in-distribution score from a run that trained on it."""

from __future__ import annotations

import csv
import json
import math

import pytest

from llava_df.errors import UsageError
from llava_df.sweep.compare import main
from llava_df.sweep.lofo import lofo_rows
from llava_df.sweep.variants import parse_families


def test_families_are_all_or_registered_names():
    assert parse_families("all") == [
        "face_swap",
        "self_blend",
        "gan_upsample",
        "expression_warp",
        "noise_inconsistency",
    ]
    assert parse_families("self_blend, gan_upsample,self_blend") == ["self_blend", "gan_upsample"]
    with pytest.raises(UsageError, match="'deepfake' is not a manipulation family"):
        parse_families("self_blend,deepfake")


def _run(projector, heldout=None, test=None, seed=0):
    return {"cell": {"projector": projector, "strategy": "lora", "seed": seed},
            "metrics": {"heldout": {"auc": heldout} if heldout is not None else None, "test": test or {"auc": 0.8}}}  # fmt: skip


def test_a_row_pairs_the_held_out_score_with_the_same_familys_in_distribution_score():
    rows = lofo_rows({
        "self_blend": [_run("mlp2x_gelu", 0.70, seed=0), _run("mlp2x_gelu", 0.80, seed=1)],
        "gan_upsample": [_run("mlp2x_gelu", 0.30)],
        "none": [_run("mlp2x_gelu", test={"auc": 0.9, "auc_self_blend": 0.95, "auc_gan_upsample": 0.99})],
    })  # fmt: skip
    by_family = {r["family"]: r for r in rows}
    assert (
        by_family["self_blend"]["heldout_auc"] == pytest.approx(0.75)
        and by_family["self_blend"]["heldout_seeds"] == 2
    )
    assert (
        by_family["self_blend"]["in_distribution_auc"] == 0.95
        and by_family["gan_upsample"]["in_distribution_auc"] == 0.99
    )
    no_reference = lofo_rows({"self_blend": [_run("kan_light", 0.7)]})
    assert (
        math.isnan(no_reference[0]["in_distribution_auc"]) and no_reference[0]["in_distribution_seeds"] == 0
    )


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--lofo", "all", "--holdout_manipulation", "self_blend"], "--holdout_manipulation with --lofo"),
        (["--lofo", "all", "--lr_grid", "1e-3,3e-3"], "--lr_grid and --lofo are two studies"),
        (["--lofo", "all", "--aggregate"], "--lofo trains its runs"),
    ],
)
def test_conflicting_study_flags_are_refused_before_any_run(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--results_dir", str(tmp_path / "r"), "--runs_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        info.value.code == 2
        and err.startswith("error: ")
        and message in err
        and not (tmp_path / "r").exists()
    )


@pytest.mark.slow
def test_lofo_runs_each_family_held_out_and_one_run_holding_none(tmp_path):
    main(["--quick", "--projectors", "mlp2x_gelu", "--strategies", "lora", "--lofo", "gan_upsample,self_blend",
          "--skip_probes", "--results_dir", str(tmp_path / "r"), "--runs_dir", str(tmp_path / "o")])  # fmt: skip
    out = tmp_path / "r" / "lofo"
    runs = {p.parent.parent.name: json.loads(p.read_text()) for p in out.glob("*/runs/*.json")}
    assert sorted(runs) == ["gan_upsample", "none", "self_blend", "self_blend_only"]
    sbi = runs[
        "self_blend_only"
    ]  # the SBI protocol: trained on reals + self-blended fakes, scored on every family
    assert (
        sbi["config"]["data"]["holdout_manipulation"]
        == "face_swap,gan_upsample,expression_warp,noise_inconsistency"
    )
    assert {k for k in sbi["metrics"]["test"] if k.startswith("auc_")} == {"auc_self_blend"}
    assert {k for k in sbi["metrics"]["heldout"] if k.startswith("auc_")} == {
        "auc_face_swap", "auc_gan_upsample", "auc_expression_warp", "auc_noise_inconsistency"}  # fmt: skip
    assert runs["gan_upsample"]["config"]["data"]["holdout_manipulation"] == "gan_upsample"
    assert (
        not runs["none"]["config"]["data"]["holdout_manipulation"]
        and runs["none"]["metrics"]["heldout"] is None
    )
    rows = list(csv.DictReader((out / "lofo.csv").read_text().splitlines()))
    assert [r["family"] for r in rows] == ["gan_upsample", "self_blend"]
    for row in rows:  # each number is the record's, read back
        assert float(row["heldout_auc"]) == pytest.approx(runs[row["family"]]["metrics"]["heldout"]["auc"])
        assert float(row["in_distribution_auc"]) == pytest.approx(
            runs["none"]["metrics"]["test"][f"auc_{row['family']}"]
        )
        part = "test" if row["family"] == "self_blend" else "heldout"
        assert float(row["self_blend_only_auc"]) == pytest.approx(
            sbi["metrics"][part][f"auc_{row['family']}"]
        )
    assert "| mlp2x_gelu | lora | self_blend |" in (out / "lofo.md").read_text()
    assert (out / "lofo_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "r" / "comparison").exists()


def test_the_table_is_rebuilt_from_the_records_with_every_seeds_value(tmp_path, capsys):
    from llava_df.sweep.lofo import main as lofo_main

    out = tmp_path / "res" / "lofo"
    runs = {
        "self_blend": [_run("mlp2x_gelu", 0.80, seed=1), _run("mlp2x_gelu", 0.70, seed=0)],
        "none": [_run("mlp2x_gelu", test={"auc": 0.9, "auc_self_blend": 0.95}, seed=0)],
    }
    for family, records in runs.items():
        (out / family / "runs").mkdir(parents=True)
        for r in records:
            r["scores"] = {"test": {}}
            r["env"] = {"device": {"cpu_model": "AMD EPYC", "cpu_count": 2}}
            r["steps"] = 4
            r["config"] = {"data": {"synthetic_seed": 3}}
            (out / family / "runs" / f"mlp2x_gelu__lora__seed{r['cell']['seed']}.json").write_text(
                json.dumps(r)
            )
    with pytest.raises(SystemExit):  # no sweep.json: not a finished study
        lofo_main(["--results_dir", str(tmp_path / "res")])
    assert capsys.readouterr().err.startswith("error: ") and not (out / "lofo.md").exists()
    (out / "sweep.json").write_text(json.dumps({"command": "llava-df compare --lofo self_blend"}))
    rows = lofo_main(["--results_dir", str(tmp_path / "res")])
    assert rows[0]["heldout_per_seed"] == "0.700 0.800"  # seed order, not file order
    table = (out / "lofo.md").read_text()
    assert "| mlp2x_gelu | lora | self_blend | 0.750 (0.700, 0.800) | 0.950 |" in table
    assert "machine: AMD EPYC, 2 cores, no GPU" in table and "`llava-df compare --lofo self_blend`" in table
    assert (out / "lofo_heatmap.png").stat().st_size > 0
