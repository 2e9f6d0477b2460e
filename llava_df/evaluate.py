"""Answer-token probabilities -> sklearn metrics, inside the Trainer and as ``python -m llava_df.evaluate``.

The score of an image is P(Fake) from the two logits that matter at the answer position: the
first token of "Fake" and the first token of "Real", softmaxed against each other (so the rest
of the vocabulary does not dilute it). Accuracy thresholds it at 0.5; AUC ranks by it. A
non-finite score (a diverged model) stops the evaluation naming the samples, unless
``--drop_nonfinite_scores True`` leaves them out (counted as ``n_nonfinite``).

This module owns evaluation: the metrics the Trainer computes during training, the data wiring
(``load_data``) that training shares, and ``evaluate_run``. It never imports ``llava_df.train``.

How to call::

    trainer = Trainer(..., preprocess_logits_for_metrics=AnswerScores(fake_id, real_id),
                      compute_metrics=AnswerMetrics.for_split(val_ds))
    predict_split(trainer, test_ds, "test")   # ({'test_accuracy': ..., 'test_auc': ...}, scores)
    evaluate_run(run_dir, weights="best", split="test")  # rebuild a finished run, score one split

    python -m llava_df.evaluate --run_dir outputs/run [--weights best|final] [--split test]
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    roc_auc_score,
    roc_curve,
)

from .errors import ArgumentParser, RunError, UsageError, cli_entry
from .io import write_json
from .threshold import choose_threshold
from .trainer import DeepfakeTrainer

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100
REAL_FAMILY = "none"  # the manipulation name of real images (data.dataset.REAL_MANIPULATION)
DROP_FLAG = "--drop_nonfinite_scores True"


class NonFiniteScoresError(RunError):
    """Some samples scored NaN/inf; the message names them and the flag that drops them."""


class AnswerScores:
    """``preprocess_logits_for_metrics``: (logits [B, T, V], labels [B, T]) -> [B, 2] = (P(Fake), is_fake).

    Keeps two numbers per sample instead of the full logits the Trainer would otherwise gather.
    ``is_fake`` is read from the label at the answer position: 1 (Fake), 0 (Real), -1 (neither,
    reported by AnswerMetrics).
    """

    def __init__(self, fake_token_id: int, real_token_id: int):
        if fake_token_id == real_token_id:
            raise ValueError(
                f"'Fake' and 'Real' start with the same token id {fake_token_id}; pick distinct answers."
            )
        self.fake_id, self.real_id = int(fake_token_id), int(real_token_id)

    def __call__(self, logits, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(logits, tuple | list):  # ModelOutput fields other than loss; logits come first
            logits = logits[0]
        if isinstance(labels, tuple | list):
            labels = labels[0]
        answer_pos = first_answer_position(labels)  # [B]
        rows = torch.arange(labels.shape[0], device=labels.device)
        # The logit at t-1 predicts the token at t.
        two = logits[rows, answer_pos - 1][:, [self.real_id, self.fake_id]].float()  # [B, 2]
        p_fake = torch.softmax(two, dim=-1)[:, 1]  # [B]
        target = labels[rows, answer_pos]  # [B]
        is_fake = torch.where(target == self.fake_id, 1.0, torch.where(target == self.real_id, 0.0, -1.0))
        return torch.stack([p_fake, is_fake], dim=-1)  # [B, 2]


def first_answer_position(labels: torch.Tensor) -> torch.Tensor:
    """Index of the first supervised token per row ([B, T] -> [B]); fails on a row with none."""
    supervised = labels != IGNORE_INDEX  # [B, T]
    if not bool(supervised.any(dim=1).all()):
        bad = (~supervised.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(
            f"Rows {bad} of the batch have no answer token in labels (all {IGNORE_INDEX}); the prompt was probably "
            "truncated by --model_max_length. Raise it or shorten the prompt."
        )
    pos = supervised.int().argmax(dim=1)  # first True
    if bool((pos == 0).any()):
        raise ValueError("An answer token sits at position 0, with no logit before it to predict it.")
    return pos


class AnswerMetrics:
    """``compute_metrics``: binary_metrics over AnswerScores' output for one evaluated split.

    ``manipulations`` / ``ids``: one per sample of the split, in dataset order (the Trainer's eval
    loader does not shuffle); None skips the per-manipulation figures / names samples by index.
    """

    def __init__(
        self,
        manipulations: Sequence[str] | None = None,
        ids: Sequence[str] | None = None,
        drop_nonfinite: bool = False,
    ):
        self.manipulations = list(manipulations) if manipulations is not None else None
        self.ids = list(ids) if ids is not None else None
        self.drop_nonfinite = drop_nonfinite

    @classmethod
    def for_split(cls, dataset, drop_nonfinite: bool = False) -> AnswerMetrics:
        return cls(column(dataset, "manipulation"), column(dataset, "id"), drop_nonfinite)

    def __call__(self, eval_pred) -> dict[str, float]:
        preds = np.asarray(eval_pred.predictions, dtype=np.float64).reshape(-1, 2)
        return binary_metrics(
            preds[:, 0], preds[:, 1], self.manipulations, ids=self.ids, drop_nonfinite=self.drop_nonfinite
        )


def binary_metrics(
    p_fake: np.ndarray,
    is_fake: np.ndarray,
    manipulations: Sequence[str] | None = None,
    *,
    ids: Sequence[str] | None = None,
    drop_nonfinite: bool = False,
    threshold: float = 0.5,
) -> dict:
    """accuracy, balanced_accuracy, f1 (at P(Fake) >= ``threshold``), auc, ap, eer, auc (NaN with a warning when one class is missing), acc_<manipulation>,
    n (samples scored) and n_nonfinite (samples left out; non-zero only with ``drop_nonfinite``)."""
    p_fake, is_fake = np.asarray(p_fake, dtype=np.float64), np.asarray(is_fake)
    if np.any((is_fake != 0) & (is_fake != 1)):
        raise ValueError(
            f"{int(np.sum((is_fake != 0) & (is_fake != 1)))} samples have an answer token that is neither the "
            "'Real' nor the 'Fake' first token; check --answer_real/--answer_fake against the data's labels."
        )
    for what, values in (("manipulation names", manipulations), ("sample ids", ids)):
        if values is not None and len(values) != len(is_fake):
            raise ValueError(
                f"{len(values)} {what} for {len(is_fake)} predictions; pass the names of the split being "
                "evaluated (AnswerMetrics.for_split and predict_split do)."
            )
    finite = np.isfinite(p_fake)
    n_nonfinite = int(np.sum(~finite))
    if n_nonfinite:
        names = [str(ids[i]) if ids is not None else f"#{i}" for i in np.flatnonzero(~finite)]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        message = f"{n_nonfinite} of {len(p_fake)} samples have a non-finite P(Fake) (NaN or inf): {shown}."
        if not drop_nonfinite:
            raise NonFiniteScoresError(
                f"{message} The model's answer logits overflowed or diverged, so no metric would be honest. "
                f"Evaluate an earlier checkpoint, lower the learning rate, use --bf16 instead of --fp16, or pass "
                f"{DROP_FLAG} to leave these samples out (reported as n_nonfinite)."
            )
        logger.warning("%s Left out of the metrics (%s).", message, DROP_FLAG)
        p_fake, is_fake = p_fake[finite], is_fake[finite]
        manipulations = (
            [m for m, ok in zip(manipulations, finite, strict=True) if ok] if manipulations else None
        )
    is_fake = is_fake.astype(int)
    pred = (p_fake >= threshold).astype(int)
    both = set(np.unique(is_fake).tolist()) == {0, 1}
    metrics = {
        "accuracy": float(accuracy_score(is_fake, pred)) if len(pred) else math.nan,
        "balanced_accuracy": float(balanced_accuracy_score(is_fake, pred)) if both else math.nan,
        "auc": auc_or_nan(is_fake, p_fake),
        "ap": float(average_precision_score(is_fake, p_fake)) if both else math.nan,
        "eer": equal_error_rate(is_fake, p_fake)[0] if both else math.nan,
        "f1": float(f1_score(is_fake, pred, zero_division=0.0)) if len(pred) else math.nan,
        "threshold": float(threshold),
        "n": int(len(pred)),
        "n_nonfinite": n_nonfinite,
    }
    metrics["real_accuracy"] = _masked_accuracy(is_fake, pred, is_fake == 0)
    metrics["fake_accuracy"] = _masked_accuracy(is_fake, pred, is_fake == 1)
    if manipulations is not None:
        names = np.asarray([str(m) for m in manipulations])
        for name in sorted(set(names)):
            metrics[f"acc_{name}"] = _masked_accuracy(is_fake, pred, names == name)
            if name != REAL_FAMILY and both:  # this family's fakes against every real image
                keep = (names == name) | (is_fake == 0)
                metrics[f"auc_{name}"] = auc_or_nan(is_fake[keep], p_fake[keep], quiet=True)
    return metrics


def equal_error_rate(is_fake: np.ndarray, p_fake: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): the ROC point where the false-positive and false-negative rates meet."""
    fpr, tpr, thresholds = roc_curve(is_fake, p_fake)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    threshold = float(min(thresholds[i], 1.0))  # roc_curve's first threshold is +inf
    return float((fpr[i] + fnr[i]) / 2), threshold


def auc_or_nan(is_fake: np.ndarray, p_fake: np.ndarray, quiet: bool = False) -> float:
    classes = set(np.unique(is_fake).tolist())
    if classes != {0, 1}:
        if quiet:
            return math.nan
        only = "real" if classes == {0} else "fake" if classes == {1} else "no"
        logger.warning(
            "AUC undefined: the split has only %s images (n=%d); reported as NaN.", only, len(is_fake)
        )
        return math.nan
    return float(roc_auc_score(is_fake, p_fake))


def _masked_accuracy(y: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> float:
    return float(accuracy_score(y[mask], pred[mask])) if mask.any() else math.nan


def column(dataset, name: str) -> list:
    """One column of a datasets.Dataset, or of any indexable dataset of dicts."""
    if hasattr(dataset, "column_names") and name in dataset.column_names:
        return list(dataset[name])
    return [dataset[i][name] for i in range(len(dataset))]


def predict_split(
    trainer, dataset, prefix: str, *, threshold: float = 0.5, drop_nonfinite: bool = False
) -> tuple[dict, dict]:
    """(metrics named ``<prefix>_*``, scores {"id", "p_fake", "is_fake", "manipulation"}) of ``dataset``.

    The scores are what the comparison's paired tests resample; the metrics use ``threshold``
    for accuracy (e.g. the validation split's EER threshold) and also report accuracy at 0.5.
    """
    preds, output_metrics = score_dataset(trainer, dataset, prefix)
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
    loss = output_metrics.get(f"{prefix}_loss")
    return {f"{prefix}_{k}": v for k, v in metrics.items()} | {f"{prefix}_loss": loss}, scores


# ---- data wiring (llava_df.data), shared with training ---------------------------------------
def load_data(data_args, processor, seed: int, model_max_length: int):
    """(splits dict, collator, fake_token_id, real_token_id) from llava_df.data (ids None for captions)."""
    from .data import load_splits

    splits = load_splits(data_args, seed=seed)
    return (splits, *load_data_settings(data_args, processor, model_max_length))


def load_data_settings(data_args, processor, model_max_length: int):
    """(collator, fake_token_id, real_token_id): how a run turns an image into a scored answer.

    Shared by training, evaluate, predict and the demo, so the four preprocess alike.
    """
    from .data import answer_token_ids, make_collator
    from .llava_flags import apply_image_aspect_ratio

    # --image_aspect_ratio on the processor the collator uses; the resolved value is saved with the run.
    processor, data_args.image_aspect_ratio, note = apply_image_aspect_ratio(
        processor, getattr(data_args, "image_aspect_ratio", None), "the checkpoint"
    )
    if note:
        logger.warning("note: %s", note)
    collator = make_collator(processor, data_args, model_max_length=model_max_length)
    if getattr(data_args, "task", None) == "caption":  # captions are trained on, not scored
        return collator, None, None
    answers = [data_args.answer_fake, data_args.answer_real]
    fake_id, real_id = answer_token_ids(processor.tokenizer, answers, data_args.conv_template)
    return collator, fake_id, real_id


def split_of(splits, name: str):
    return splits[name] if isinstance(splits, dict) else getattr(splits, name)


@contextlib.contextmanager
def scoring_trainer(model, collator, fake_id: int, real_id: int, batch_size: int = 8):
    """A Trainer that scores P(Fake) in batches, as training's evaluation does (evaluate, predict, demo).

    The Trainer wants an output folder; scoring writes nothing there. A temporary one keeps a
    read-only run folder usable and leaves no eval_tmp/ behind.
    """
    from transformers import TrainingArguments as HFTrainingArguments

    with tempfile.TemporaryDirectory(prefix="llava_df_eval_") as scratch:
        args = HFTrainingArguments(
            output_dir=scratch,
            per_device_eval_batch_size=batch_size,
            report_to="none",
            remove_unused_columns=False,
            dataloader_pin_memory=torch.cuda.is_available(),
        )
        yield DeepfakeTrainer(
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


# ---- a finished run -------------------------------------------------------------------------
def evaluate_run(
    run_dir: Path,
    *,
    weights: str = "best",
    split: str = "test",
    batch_size: int = 8,
    drop_nonfinite: bool = False,
    allow_base_mismatch: bool = False,
) -> dict:
    """Rebuild a run's model + data and evaluate one split (``heldout`` too, with a held-out family)
    at the run's threshold rule applied to val; returns the metrics (``main`` writes them)."""
    from .checkpointing import load_trained
    from .config import DataArguments

    run_dir = Path(run_dir)
    config_file = run_dir / "run_config.json"
    if not config_file.is_file():
        raise RunError(f"{run_dir} has no run_config.json: pass the --output_dir of a llava_df.train run.")
    if not (run_dir / weights).is_dir():
        raise RunError(
            f"{run_dir / weights} does not exist; try --weights {'final' if weights == 'best' else 'best'}."
        )
    try:
        config = json.loads(config_file.read_text())
        data_args = DataArguments(**config["data"])
    except (ValueError, KeyError, TypeError) as err:
        raise RunError(
            f"{config_file} is unreadable or not a llava_df run config ({type(err).__name__}: {err}). Re-run training, "
            "or restore the file from the run's checkpoint folders."
        ) from None
    training = config["training"]
    # is_trainable: the same model structure as in training (a PeftModel), which the Trainer accepts
    # for quantized models; nothing is trained here.
    model, processor = load_trained(run_dir / weights, is_trainable=True, allow_base_mismatch=allow_base_mismatch)
    model.eval()
    splits, collator, fake_id, real_id = load_data(
        data_args, processor, training["seed"], training["model_max_length"]
    )
    with scoring_trainer(model, collator, fake_id, real_id, batch_size) as trainer:
        # The decision threshold as training chose it (--threshold_rule on val), for these weights.
        _, val_scores = predict_split(trainer, split_of(splits, "val"), "val", drop_nonfinite=drop_nonfinite)
        threshold, rule = choose_threshold(training.get("threshold_rule", "eer"), val_scores)
        metrics, _ = predict_split(
            trainer, split_of(splits, split), split, threshold=threshold, drop_nonfinite=drop_nonfinite
        )
    return {
        "weights": weights,
        "split": split,
        "threshold_rule": rule,
        **{k.removeprefix(f"{split}_"): v for k, v in metrics.items()},
    }


@cli_entry
def main(argv: list[str]) -> dict:
    from transformers.hf_argparser import string_to_bool

    parser = ArgumentParser(prog="python -m llava_df.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", required=True, help="A finished run's output_dir (has run_config.json).")
    parser.add_argument(
        "--weights", default="best", choices=("best", "final"), help="Which saved weights to load."
    )
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "heldout"))
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument(
        "--output",
        default=None,
        help="Where to write the metrics JSON (default: RUN_DIR/eval_<weights>_<split>.json); use it for a "
        "read-only run folder.",
    )
    parser.add_argument(
        "--drop_nonfinite_scores",
        type=string_to_bool,
        default=False,
        help="Leave samples with a NaN/inf score out of the metrics instead of stopping with an error.",
    )
    parser.add_argument(
        "--allow_base_mismatch", action="store_true", help="Load the run's weights even onto another base revision."
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise UsageError(f"--batch_size {args.batch_size}: expected an integer >= 1.")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    metrics = evaluate_run(
        Path(args.run_dir),
        weights=args.weights,
        split=args.split,
        batch_size=args.batch_size,
        drop_nonfinite=args.drop_nonfinite_scores,
        allow_base_mismatch=args.allow_base_mismatch,
    )
    print(json.dumps(metrics, indent=2), flush=True)  # first: a failed write below loses nothing
    output = (
        Path(args.output) if args.output else Path(args.run_dir) / f"eval_{args.weights}_{args.split}.json"
    )
    try:
        write_json(output, metrics)
    except OSError as err:
        raise RunError(
            f"Cannot write {output} ({err.strerror}); the metrics are printed above. Pass --output to write elsewhere."
        ) from None
    print(f"wrote {output}", file=sys.stderr)
    return metrics


if __name__ == "__main__":
    main()
