"""Per-(projector, strategy) learning rates chosen on validation: the rule, the choice file, the sweep using it."""

from __future__ import annotations

import json

import pytest

from llava_df.errors import UsageError
from llava_df.spec.parse import parse_flags
from llava_df.sweep.cells import grid
from llava_df.sweep.compare import main
from llava_df.sweep.compare_flags import cell_argv
from llava_df.sweep.compare_flags import parse as parse_compare
from llava_df.sweep.lr_grid import choose, grid_rows, load_choice, parse_rates, provenance


def _record(projector, strategy, lr, val_auc, val_loss, seed=0, steps=100, best_step=60):
    return {
        "cell": {"projector": projector, "strategy": strategy, "seed": seed},
        "config": {"training": {"learning_rate": lr}, "data": {"synthetic_seed": 0}},
        "metrics": {"val": {"auc": val_auc}, "best_val_entry": {"step": best_step, "epoch": 3.0, "val_loss": val_loss}},
        "steps": steps, "time": {"train_s": 10.0},
    }  # fmt: skip


def test_rates_are_parsed_sorted_and_bad_ones_named():
    assert parse_rates("3e-3, 1e-3,3e-4,1e-3") == [3e-4, 1e-3, 3e-3]
    for bad in ("1e-3,0", "1e-3,2", "1e-3,nan", "1e-3,x"):
        with pytest.raises(UsageError, match="expected learning rates in"):
            parse_rates(bad)


def test_the_choice_is_the_highest_validation_auc_averaged_over_seeds_and_never_reads_test():
    records = [
        _record("mlp2x_gelu", "lora", 1e-3, 0.90, 0.20, seed=0), _record("mlp2x_gelu", "lora", 1e-3, 0.80, 0.20, seed=1),
        _record("mlp2x_gelu", "lora", 3e-4, 0.86, 0.25, seed=0), _record("mlp2x_gelu", "lora", 3e-4, 0.86, 0.25, seed=1),
        # a tie in AUC goes to the lower validation loss
        _record("kan_light", "lora", 1e-3, 0.88, 0.30), _record("kan_light", "lora", 3e-3, 0.88, 0.22),
    ]  # fmt: skip
    rows = grid_rows(records)
    assert [(r["projector"], r["learning_rate"], r["seeds"]) for r in rows][:2] == [
        ("kan_light", 1e-3, 1),
        ("kan_light", 3e-3, 1),
    ]
    assert rows[0]["epochs"] == [5.0]  # 100 steps at 20 steps per epoch (best entry: step 60 = epoch 3)
    assert choose(rows) == {"kan_light/lora": 3e-3, "mlp2x_gelu/lora": 3e-4}  # 0.85 mean < 0.86


def test_a_choice_file_must_cover_every_cell_of_the_sweep(tmp_path):
    path = tmp_path / "lr_choice.json"
    path.write_text(json.dumps({"choices": {"mlp2x_gelu/lora": 1e-3}}))
    assert load_choice(path, ["mlp2x_gelu"], ["lora"]) == {"mlp2x_gelu/lora": 1e-3}
    with pytest.raises(UsageError, match="no learning rate for kan_light/lora"):
        load_choice(path, ["mlp2x_gelu", "kan_light"], ["lora"])
    path.write_text(json.dumps({"rates": {}}))
    with pytest.raises(UsageError, match="not a choice file written by --lr_grid"):
        load_choice(path, ["mlp2x_gelu"], ["lora"])
    path.write_text(json.dumps({"choices": {"mlp2x_gelu/lora": 5}}))
    with pytest.raises(UsageError, match="are not learning rates"):
        load_choice(path, ["mlp2x_gelu"], ["lora"])


def test_a_choice_from_another_study_is_refused_by_name(tmp_path, caplog):
    common = [
        "--quick",
        "--projectors",
        "mlp2x_gelu",
        "--strategies",
        "lora",
        "--results_dir",
        str(tmp_path / "r"),
    ]
    args, train_flags = parse_compare(common)
    path = tmp_path / "lr_choice.json"
    # Chosen on the same recipe but 400 faces at 48 px: what this sweep trains differs, so must its rate.
    cell = next(iter(grid(["mlp2x_gelu"], ["lora"], [0])))
    here = provenance(parse_flags(cell_argv(args, train_flags, cell)).values)
    there = here | {"data.synthetic_n": 400, "data.image_size": 48}
    path.write_text(json.dumps({"choices": {"mlp2x_gelu/lora": 1e-3}, "provenance": there}))
    with pytest.raises(
        UsageError,
        match=r"chosen for another study \(data.synthetic_n 400 there, .* here; data.image_size 48",
    ):
        parse_compare([*common, "--lr_choice", str(path)])
    path.write_text(json.dumps({"choices": {"mlp2x_gelu/lora": 1e-3}, "provenance": here}))
    assert parse_compare([*common, "--lr_choice", str(path)])[0].lr_choices == {"mlp2x_gelu/lora": 1e-3}
    path.write_text(json.dumps({"choices": {"mlp2x_gelu/lora": 1e-3}}))  # a file from before provenance
    assert parse_compare([*common, "--lr_choice", str(path)])[0].lr_choices == {"mlp2x_gelu/lora": 1e-3}
    assert "records no settings" in caplog.text


@pytest.mark.slow
def test_the_grid_writes_a_choice_and_the_sweep_trains_each_cell_at_it(tmp_path):
    common = ["--quick", "--projectors", "mlp2x_gelu", "--strategies", "projector_only,lora", "--skip_probes",
              "--runs_dir", str(tmp_path / "runs")]  # fmt: skip
    payload = main([*common, "--lr_grid", "1e-3,3e-3", "--results_dir", str(tmp_path / "grid")])
    grid = tmp_path / "grid" / "lr_grid"
    records = sorted(
        p.relative_to(grid).as_posix()
        for p in grid.rglob("*.json")
        if p.name not in ("lr_choice.json", "sweep.json")
    )
    assert records == [
        f"lr{lr}/runs/mlp2x_gelu__{s}__seed0.json"
        for lr in ("0.001", "0.003")
        for s in ("lora", "projector_only")
    ]
    saved = json.loads((grid / "lr_choice.json").read_text())
    assert (
        saved["provenance"]["model.model_name_or_path"] == "tiny"
        and saved["provenance"]["data.synthetic_n"] > 0
    )
    assert saved["choices"] == payload["choices"] and set(saved["choices"]) == {
        "mlp2x_gelu/projector_only",
        "mlp2x_gelu/lora",
    }
    for row in saved[
        "rows"
    ]:  # the rule, recomputed from the rows the file shows (no evaluation: no val loss)
        rows = [r for r in saved["rows"] if r["strategy"] == row["strategy"]]
        chosen = next(
            r for r in rows if r["learning_rate"] == saved["choices"][f"mlp2x_gelu/{row['strategy']}"]
        )
        assert chosen["val_auc"] == max(r["val_auc"] for r in rows)
    assert "| mlp2x_gelu | lora | 0.003 |" in (grid / "lr_grid.md").read_text()
    assert not (tmp_path / "grid" / "comparison.md").exists()  # a grid writes no comparison table

    main([*common, "--lr_choice", str(grid / "lr_choice.json"), "--results_dir", str(tmp_path / "sweep")])
    for strategy, lr in ((k.split("/")[1], v) for k, v in saved["choices"].items()):
        run = json.loads(
            (tmp_path / "sweep" / "comparison" / "runs" / f"mlp2x_gelu__{strategy}__seed0.json").read_text()
        )
        assert run["config"]["training"]["learning_rate"] == lr
