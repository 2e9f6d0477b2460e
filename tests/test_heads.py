"""`python -m llava_df.sweep.heads`: the classifier head against the generative answer, and the probes beside them."""

import csv
import json

import numpy as np
import pytest

from llava_df.sweep.heads import main

Y = np.repeat([0, 1], 200)
BASE = np.random.default_rng(0).normal(size=400) + 1.0 * Y


def write_side(folder, head, *, lift=0.0, seeds=(0, 1, 2), strategy="lora", lr=1e-3, probe_lift=None):
    rng = np.random.default_rng(1 if head == "classifier" else 2)
    runs = folder / "runs"
    runs.mkdir(parents=True)

    def record(projector, strategy, seed, p, config):
        name = f"{projector}__{strategy}__seed{seed}"
        auc = float(np.mean(p[Y == 1][:, None] > p[Y == 0][None, :]))
        (runs / f"{name}.json").write_text(json.dumps({
            "cell": {"projector": projector, "strategy": strategy, "seed": seed, "name": name},
            "metrics": {"test": {"auc": auc}}, "steps": 10, "config": config,
            "scores": {"test": {"id": [f"i{i}" for i in range(400)], "p_fake": p.tolist(), "is_fake": Y.tolist()}},
        }))  # fmt: skip

    model = {} if head == "generate" else {"answer_head": head}  # records from before the flag have no key
    for seed in seeds:
        config = {
            "data": {"synthetic_seed": 5},
            "training": {"learning_rate": lr, "seed": seed},
            "model": model,
        }
        record("mlp2x_gelu", strategy, seed, BASE + lift * Y + rng.normal(scale=0.4, size=400), config)
        if probe_lift is not None:
            p = BASE + probe_lift * Y + rng.normal(scale=0.4, size=400)
            record("probe_mlp", "probe", seed, p, {"data": {"synthetic_seed": 5}})
    return runs


def test_the_head_beats_the_answer_by_a_measured_amount_and_the_probes_are_rows_beside_them(tmp_path):
    gen = write_side(tmp_path / "g", "generate", probe_lift=0.3)
    cls = write_side(tmp_path / "c", "classifier", lift=0.8)
    out = tmp_path / "out"
    result = main(["--generate", str(gen), "--classifier", str(cls), "--out", str(out)])
    rows = {(r["row"], r["against"]): r for r in result["rows"]}
    head = rows[("mlp2x_gelu / lora / classifier", "mlp2x_gelu / lora / generate")]
    assert head["seeds"] == 3 and head["difference"] > 0.05 and head["ci95_low"] > 0
    assert head["higher"] == "mlp2x_gelu / lora / classifier"
    assert head["difference"] == pytest.approx(head["auc"] - head["auc_against"], abs=1e-9)
    probe = rows[("probe_mlp", "mlp2x_gelu / lora / generate")]
    assert probe["difference"] > 0 and ("probe_mlp", "mlp2x_gelu / lora / classifier") in rows
    with open(out / "heads.csv") as f:
        assert len(list(csv.DictReader(f))) == len(result["rows"]) == 3
    # Holm over the table's 3 rows, by hand: sorted p times 3, 2, 1, running maximum, capped at 1
    p = np.array([r["p"] for r in result["rows"]])
    order = np.argsort(p)
    by_hand = np.minimum(np.maximum.accumulate(p[order] * np.array([3, 2, 1])), 1.0)
    assert [result["rows"][i]["p_holm"] for i in order] == pytest.approx(by_hand.tolist(), rel=1e-12)
    text = (out / "heads.md").read_text()
    assert (
        "**Descriptive**" in text
        and "| mlp2x_gelu / lora / classifier | mlp2x_gelu / lora / generate | 3 |" in text
    )


def test_equal_heads_are_not_separated(tmp_path):
    gen = write_side(tmp_path / "g", "generate")
    cls = write_side(tmp_path / "c", "classifier")
    result = main(["--generate", str(gen), "--classifier", str(cls), "--out", str(tmp_path / "out")])
    assert result["rows"][0]["higher"] == "not separated (95% CI holds 0)"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: (write_side(t / "g", "classifier"), write_side(t / "c", "classifier")),
         "--generate: mlp2x_gelu__lora__seed0 was trained with --answer_head classifier, expected generate"),
        (lambda t: (write_side(t / "g", "generate"), write_side(t / "c", "classifier", lr=3e-3)),
         "its training.learning_rate differs between the two sides (0.001 vs 0.003)"),
        (lambda t: (write_side(t / "g", "generate", seeds=(0,)), write_side(t / "c", "classifier", seeds=(0,))),
         "no (projector, strategy) has 2 seeds on both sides: mlp2x_gelu / lora: 1 shared seed(s)"),
        (lambda t: (write_side(t / "g", "generate"), write_side(t / "c", "classifier", strategy="projector_only")),
         "mlp2x_gelu / lora: only on the generate side"),
        (lambda t: (t / "missing", write_side(t / "c", "classifier")), "--generate"),
    ],
)  # fmt: skip
def test_sides_that_cannot_be_paired_are_refused_by_name(make, message, tmp_path, capsys):
    gen, cls = make(tmp_path)
    with pytest.raises(SystemExit):
        main(["--generate", str(gen), "--classifier", str(cls), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_one_comparison_table_never_mixes_the_two_answer_heads(tmp_path):
    from llava_df.errors import UsageError
    from llava_df.sweep.report import aggregate

    runs = write_side(tmp_path / "mixed" / "comparison", "generate")
    classifier = write_side(tmp_path / "c", "classifier", seeds=(7,))
    for f in classifier.glob("*.json"):
        f.rename(runs / f.name)
    with pytest.raises(
        UsageError, match="holds runs of --answer_head classifier and generate: one table would mix"
    ):
        aggregate(tmp_path / "mixed", command="test")
    assert not (tmp_path / "mixed" / "comparison.md").exists()


def test_a_probe_with_one_seed_is_named_not_silently_dropped(tmp_path):
    gen = write_side(tmp_path / "g", "generate", probe_lift=0.3)
    for f in gen.glob("probe_mlp__probe__seed[12].json"):
        f.unlink()  # a deterministic probe has one seed
    cls = write_side(tmp_path / "c", "classifier")
    result = main(["--generate", str(gen), "--classifier", str(cls), "--out", str(tmp_path / "out")])
    assert [r["row"] for r in result["rows"]] == ["mlp2x_gelu / lora / classifier"]
    assert "probe_mlp against mlp2x_gelu / lora / generate: 1 shared seed(s)" in "; ".join(result["notes"])
    assert "Left out: " in (tmp_path / "out" / "heads.md").read_text()


def test_a_seed_whose_two_sides_started_from_different_stage1_files_is_left_out_and_named(tmp_path):
    gen = write_side(tmp_path / "g", "generate")
    cls = write_side(tmp_path / "c", "classifier", lift=0.8)
    for side, shas in (
        (gen, ("a", "b", "c")),
        (cls, ("a", "b", "X")),
    ):  # seed 2's head realigned to other bytes
        for seed, sha in enumerate(shas):
            path = side / f"mlp2x_gelu__lora__seed{seed}.json"
            record = json.loads(path.read_text())
            record["key_inputs"] = {"code_fingerprint": "f", "pretrain_mm_mlp_adapter_sha256": sha}
            path.write_text(json.dumps(record))
    result = main(["--generate", str(gen), "--classifier", str(cls), "--out", str(tmp_path / "out")])
    (head,) = result["rows"]
    assert head["seeds"] == 2
    assert (
        "mlp2x_gelu / lora: seed(s) 2 left out: the two sides started from different stage-1 files"
        in "; ".join(result["notes"])
    )
