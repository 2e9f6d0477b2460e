"""Answer-token probabilities -> sklearn metrics: what every split, run and table reports.

The score of an image is P(Fake) from the two logits that matter at the answer position: the
first token of "Fake" and the first token of "Real", softmaxed against each other (so the rest
of the vocabulary does not dilute it). Accuracy thresholds it (0.5, or the run's threshold); AUC
ranks by it. A non-finite score (a diverged model) stops the evaluation naming the samples, unless
``--drop_nonfinite_scores True`` leaves them out (counted as ``n_nonfinite``).

How to call::

    Trainer(..., preprocess_logits_for_metrics=AnswerScores(fake_id, real_id),
            compute_metrics=AnswerMetrics.for_split(val_ds))
    binary_metrics(p_fake, is_fake, manipulations, threshold=0.42)   # {"accuracy", "auc", "eer", ...}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

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

from llava_df.errors import RunError

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
        self.last: np.ndarray | None = (
            None  # the predictions [N, 2] of the latest call (kept for the final evaluation)
        )

    @classmethod
    def for_split(cls, dataset, drop_nonfinite: bool = False) -> AnswerMetrics:
        return cls(column(dataset, "manipulation"), column(dataset, "id"), drop_nonfinite)

    def __call__(self, eval_pred) -> dict[str, float]:
        preds = np.asarray(eval_pred.predictions, dtype=np.float64).reshape(-1, 2)
        self.last = preds
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
