"""Each image is scored once per set of weights: val comes from the selection epoch's evaluation,
test and held-out (which share the test reals) are scored as one set."""

from __future__ import annotations

import hashlib
import shlex

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PredictionOutput

from llava_df.data.dataset import FaceDataset, Record
from llava_df.eval.scoring import evaluate_final, score_once
from llava_df.spec.resolve import parse_spec
from llava_df.train.workflow import train


def p_of(record) -> float:
    return int(hashlib.sha256(record.id.encode()).hexdigest()[:6], 16) / 0xFFFFFF


class CountingTrainer:
    """Stands in for the Trainer's predict: P(Fake) a function of the image id; remembers what it scored."""

    compute_metrics = None

    def __init__(self):
        self.calls: list[tuple[str, int]] = []

    def predict(self, dataset, metric_key_prefix="test"):
        self.calls.append((metric_key_prefix, len(dataset)))
        preds = np.array([[p_of(r), r.is_fake] for r in dataset.records])
        return PredictionOutput(preds, None, {f"{metric_key_prefix}_loss": 0.5})


def splits():
    def rec(name, fake, family="none"):
        return Record(id=name, is_fake=fake, manipulation=family, path=None)

    reals = [rec(f"real{i}", 0) for i in range(5)]
    test = FaceDataset(reals + [rec(f"swap{i}", 1, "blend") for i in range(5)], name="test")
    heldout = FaceDataset(reals + [rec(f"held{i}", 1, "face_swap") for i in range(4)], name="heldout")
    val = FaceDataset([rec(f"v{i}", i % 2, "blend" if i % 2 else "none") for i in range(8)], name="val")
    return {"val": val, "test": test, "heldout": heldout}


def test_test_and_heldout_are_scored_as_one_set_and_split_back():
    trainer, data = CountingTrainer(), splits()
    preds = score_once(trainer, {"test": data["test"], "heldout": data["heldout"]})
    assert trainer.calls == [("predict", 14)]  # 5 shared reals + 5 + 4 fakes, not 10 + 9
    for name in ("test", "heldout"):
        assert preds[name][:, 0].tolist() == [p_of(r) for r in data[name].records]
        assert preds[name][:, 1].tolist() == [r.is_fake for r in data[name].records]


def test_val_scores_of_the_selection_epoch_are_not_recomputed():
    data = splits()
    kept = np.array([[p_of(r), r.is_fake] for r in data["val"].records])
    trainer = CountingTrainer()
    reused = evaluate_final(
        trainer, data, caption=False, threshold_rule="eer", drop_nonfinite=False, val_scored=(kept, 0.25)
    )
    assert [prefix for prefix, _ in trainer.calls] == ["test"]  # val never scored again
    fresh_trainer = CountingTrainer()
    fresh = evaluate_final(fresh_trainer, data, caption=False, threshold_rule="eer", drop_nonfinite=False)
    assert [prefix for prefix, _ in fresh_trainer.calls] == ["val", "test"]
    assert reused.scores == fresh.scores and reused.threshold == fresh.threshold
    assert reused.evaluated["val"]["val_loss"] == 0.25
    assert {k: v for k, v in reused.evaluated["val"].items() if k != "val_loss"} == {
        k: v for k, v in fresh.evaluated["val"].items() if k != "val_loss"
    }


class Predictions(TrainerCallback):
    def __init__(self):
        self.prefixes = []

    def on_predict(self, args, state, control, metrics=None, **kwargs):
        self.prefixes.append(next(k for k in metrics if k.endswith("_runtime")).removesuffix("_runtime"))


def test_a_run_scores_val_during_training_only_and_its_final_val_metrics_are_that_evaluation(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seen = Predictions()
    argv = shlex.split(
        "--model_name_or_path tiny --bits 8 --lora_enable True --lora_r 4 --lora_alpha 8 --synthetic_n 60 "
        "--holdout_manipulation face_swap --num_train_epochs 2 --eval_strategy epoch --save_strategy no "
        "--per_device_train_batch_size 8 --per_device_eval_batch_size 16 --learning_rate 1e-3 --seed 1"
    )
    try:
        results = train(parse_spec([*argv, "--output_dir", str(tmp_path / "out")]), callbacks=(seen,))
    finally:
        torch.set_num_threads(threads)
    assert seen.prefixes == ["test"]  # the final scoring: test and held-out as one set, val reused
    best, val = results["best"], results["val_at_test_weights"]
    assert results["test_weights"] == "best"
    assert val["auc"] == best["auc"] and val["loss"] == best["val_loss"]
    assert results["feature_cache"]["on"] and results["feature_cache"]["misses"] == 0
