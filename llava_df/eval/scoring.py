"""Scoring P(Fake) with a Trainer, as training's evaluation does: evaluate, predict, the demo, the probes.

How to call::

    with scoring_trainer(model, collator, fake_id, real_id, batch_size=8) as trainer:
        preds, _ = score_dataset(trainer, dataset)                  # [N, 2] = (P(Fake), is_fake)
    metrics, scores = predict_split(trainer, test_ds, "test", threshold=0.42)
    final = evaluate_final(trainer, splits, caption=False, threshold_rule="eer", drop_nonfinite=False)
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import accuracy_score
from transformers import Trainer
from transformers import TrainingArguments as HFTrainingArguments

from llava_df.eval.metrics import AnswerScores, binary_metrics, column
from llava_df.eval.threshold import choose_threshold
from llava_df.eval.video import groups_of, video_metrics


class AnswerTrainer(Trainer):
    """transformers' Trainer for models that answer Real/Fake: the collator's bookkeeping columns
    (``extra_input_keys``) never reach the model, and evaluation hands on only the logits.

    Scoring uses it as it is; training's DeepfakeTrainer (llava_df.train.trainer) adds checkpoints,
    the projector's learning rate, the KAN loss and the NaN guard on top.
    """

    def __init__(self, *args, extra_input_keys: tuple[str, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.extra_input_keys = extra_input_keys  # collator outputs the model must not receive

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k not in self.extra_input_keys}
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if return_outputs and not model.training:
            # Evaluation: hand prediction_step only the logits the metrics read. The Trainer pads and
            # gathers every other output field as if it were logits, and releases add fields it cannot
            # pad (transformers 5.24: LLaVA's `image_outputs`, with None inside; 5.23 had none).
            loss, outputs = result
            return loss, {"logits": outputs["logits"]}
        return result


def predict_split(
    trainer, dataset, prefix: str, *, threshold: float = 0.5, drop_nonfinite: bool = False
) -> tuple[dict, dict]:
    """(metrics named ``<prefix>_*``, scores {"id", "p_fake", "is_fake", "manipulation"}) of ``dataset``.

    The scores are what the comparison's paired tests resample; the metrics use ``threshold``
    for accuracy (e.g. the validation split's EER threshold) and also report accuracy at 0.5.
    """
    preds, output_metrics = score_dataset(trainer, dataset, prefix)
    loss = output_metrics.get(f"{prefix}_loss")
    return split_result(preds, loss, dataset, prefix, threshold=threshold, drop_nonfinite=drop_nonfinite)


def split_result(preds, loss, dataset, prefix: str, *, threshold: float = 0.5, drop_nonfinite: bool = False):
    """predict_split's (metrics, scores) from predictions [N, 2] already made (e.g. by training's evaluation)."""
    preds = np.asarray(preds, dtype=np.float64).reshape(-1, 2)
    ids, families = column(dataset, "id"), column(dataset, "manipulation")
    kwargs = {"ids": ids, "drop_nonfinite": drop_nonfinite}
    metrics = binary_metrics(preds[:, 0], preds[:, 1], families, threshold=threshold, **kwargs)
    finite = np.isfinite(preds[:, 0])  # binary_metrics has refused or dropped the others
    at_half = (preds[finite, 0] >= 0.5).astype(int)
    metrics["accuracy_at_0.5"] = (
        float(accuracy_score(preds[finite, 1].astype(int), at_half)) if finite.any() else math.nan
    )
    scores = {
        "id": [str(i) for i in ids],
        "p_fake": [float(v) for v in preds[:, 0]],
        "is_fake": [int(v) for v in preds[:, 1]],
        "manipulation": [str(f) for f in families],
    }
    # Frames of videos (metadata.csv's group): the video-level figures beside (llava_df.eval.video).
    groups = groups_of(dataset)
    if groups is not None:
        metrics |= video_metrics(preds[:, 0], preds[:, 1], groups, threshold=threshold)
        scores["group"] = groups
    return {f"{prefix}_{k}": v for k, v in metrics.items()} | {f"{prefix}_loss": loss}, scores


def _record_key(record) -> tuple:
    return (record.id, record.path, record.is_fake, record.manipulation, record.prompt, record.answer)


def score_once(trainer, datasets: dict, prefix: str = "predict") -> dict:
    """{name: predictions [N, 2]} of several splits, each distinct image scored once.

    The held-out split shares the test split's real faces: with the same weights their P(Fake)
    is the same, so the union is scored in one pass and split back. Splits that are not
    FaceDatasets (no ``records``) are scored one by one.
    """
    if not all(hasattr(ds, "records") for ds in datasets.values()):
        return {name: score_dataset(trainer, ds, name)[0] for name, ds in datasets.items()}
    rows: dict[tuple, int] = {}
    union = []
    for ds in datasets.values():
        for r in ds.records:
            if _record_key(r) not in rows:
                rows[_record_key(r)] = len(union)
                union.append(r)
    first = next(iter(datasets.values()))
    preds, _ = score_dataset(trainer, type(first)(union, name="+".join(datasets)), prefix)
    return {name: preds[[rows[_record_key(r)] for r in ds.records]] for name, ds in datasets.items()}


@contextlib.contextmanager
def scoring_trainer(model, collator, fake_id: int, real_id: int, batch_size: int = 8):
    """A Trainer that scores P(Fake) in batches, as training's evaluation does (evaluate, predict, demo).

    The Trainer wants an output folder; scoring writes nothing there. A temporary one keeps a
    read-only run folder usable and leaves no eval_tmp/ behind.
    """

    with tempfile.TemporaryDirectory(prefix="llava_df_eval_") as scratch:
        args = HFTrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=batch_size,
            report_to="none",
            remove_unused_columns=False,
            dataloader_pin_memory=torch.cuda.is_available(),
        )
        yield AnswerTrainer(
            model=model,
            args=args,
            data_collator=collator,
            preprocess_logits_for_metrics=AnswerScores(fake_id, real_id),
            extra_input_keys=getattr(collator, "extra_keys", ()),
        )


def score_dataset(trainer, dataset, prefix: str = "predict"):
    """(predictions [N, 2] = (P(Fake), is_fake read from the answer label), the Trainer's metrics)."""
    saved, trainer.compute_metrics = trainer.compute_metrics, None  # metrics are computed by the caller
    try:
        output = trainer.predict(dataset, metric_key_prefix=prefix)
    finally:
        trainer.compute_metrics = saved
    return np.asarray(output.predictions, dtype=np.float64).reshape(-1, 2), output.metrics


@dataclass
class FinalScores:
    """What a run's final evaluation found, on the weights it tests (best/, else final/)."""

    evaluated: dict  # {"val", "test"(, "heldout")}: metrics named <split>_*
    scores: dict  # P(Fake) per image of the same splits (scores.json); empty for captions
    threshold: float | None  # chosen on val by --threshold_rule, applied to test and held-out
    rule: str | None


def evaluate_final(
    trainer, splits: dict, *, caption: bool, threshold_rule: str, drop_nonfinite: bool, val_scored=None
) -> FinalScores:
    """Score val, test (and heldout) with the trainer's current weights, each image once.

    ``val_scored``: (predictions [N, 2], loss) that training's evaluation already made of val with
    these very weights (the selection epoch's); then val is not scored again. Test and held-out
    share their real faces and are scored as one set (score_once).
    The decision threshold is chosen on validation (``threshold_rule``), never on test; accuracy at
    0.5 is reported beside it, since a 0.5 cut on an uncalibrated score can be far off. A caption run
    (stage 1) reports its val and test loss only.
    """
    evaluated: dict = {}
    scores: dict = {}
    if caption:
        for name in ("val", "test"):
            ds = splits[name]
            evaluated[name] = trainer.evaluate(ds, metric_key_prefix=name) | {f"{name}_n": len(ds)}
        return FinalScores(evaluated, scores, None, None)
    if val_scored is not None:
        preds, loss = val_scored
        evaluated["val"], scores["val"] = split_result(
            preds, loss, splits["val"], "val", drop_nonfinite=drop_nonfinite
        )
    else:
        evaluated["val"], scores["val"] = predict_split(
            trainer, splits["val"], "val", drop_nonfinite=drop_nonfinite
        )
    threshold, rule = choose_threshold(threshold_rule, scores["val"])
    rest = {name: splits[name] for name in ("test", "heldout") if name in splits}
    for name, preds in score_once(trainer, rest, prefix="test").items():
        # The loss of a split is not reported for test/held-out: scoring them as one set has one loss.
        evaluated[name], scores[name] = split_result(
            preds, None, rest[name], name, threshold=threshold, drop_nonfinite=drop_nonfinite
        )
    return FinalScores(evaluated, scores, threshold, rule)
