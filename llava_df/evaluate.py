"""Answer-token probabilities -> sklearn metrics, inside the Trainer and as ``python -m llava_df.evaluate``.

The score of an image is P(Fake) from the two logits that matter at the answer position: the
first token of "Fake" and the first token of "Real", softmaxed against each other (so the rest
of the vocabulary does not dilute it). Accuracy thresholds it at 0.5; AUC ranks by it.

How to call::

    trainer = Trainer(..., preprocess_logits_for_metrics=AnswerScores(fake_id, real_id),
                      compute_metrics=AnswerMetrics(column(val_ds, "manipulation")))
    evaluate_split(trainer, test_ds, prefix="test")   # {'test_accuracy': ..., 'test_auc': ...}

    python -m llava_df.evaluate --run_dir outputs/run [--weights best|final] [--split test]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100


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
    """``compute_metrics``: accuracy, AUC, per-manipulation accuracy from AnswerScores' output.

    ``manipulations``: one name per sample of the evaluated split, in dataset order (the
    Trainer's eval loader does not shuffle); None skips the per-manipulation figures.
    """

    def __init__(self, manipulations: Sequence[str] | None = None):
        self.manipulations = list(manipulations) if manipulations is not None else None

    def __call__(self, eval_pred) -> dict[str, float]:
        preds = np.asarray(eval_pred.predictions, dtype=np.float64).reshape(-1, 2)
        return binary_metrics(preds[:, 0], preds[:, 1], self.manipulations)


def binary_metrics(
    p_fake: np.ndarray, is_fake: np.ndarray, manipulations: Sequence[str] | None = None
) -> dict:
    """accuracy (P(Fake) >= 0.5), auc (NaN with a warning when one class is missing), acc_<manipulation>."""
    p_fake, is_fake = np.asarray(p_fake, dtype=np.float64), np.asarray(is_fake)
    if np.any((is_fake != 0) & (is_fake != 1)):
        raise ValueError(
            f"{int(np.sum((is_fake != 0) & (is_fake != 1)))} samples have an answer token that is neither the "
            "'Real' nor the 'Fake' first token; check --answer_real/--answer_fake against the data's labels."
        )
    is_fake = is_fake.astype(int)
    pred = (p_fake >= 0.5).astype(int)
    metrics = {"accuracy": float(accuracy_score(is_fake, pred)), "auc": auc_or_nan(is_fake, p_fake)}
    metrics["real_accuracy"] = _masked_accuracy(is_fake, pred, is_fake == 0)
    metrics["fake_accuracy"] = _masked_accuracy(is_fake, pred, is_fake == 1)
    if manipulations is not None:
        if len(manipulations) != len(is_fake):
            raise ValueError(
                f"{len(manipulations)} manipulation names for {len(is_fake)} predictions; pass the names of the "
                "split being evaluated (evaluate_split does)."
            )
        names = np.asarray([str(m) for m in manipulations])
        for name in sorted(set(names)):
            metrics[f"acc_{name}"] = _masked_accuracy(is_fake, pred, names == name)
    return metrics


def auc_or_nan(is_fake: np.ndarray, p_fake: np.ndarray) -> float:
    if not np.all(np.isfinite(p_fake)):  # a diverged model: report it, do not crash the run's evaluation
        logger.warning(
            "AUC undefined: %d of %d scores are not finite; reported as NaN.",
            int(np.sum(~np.isfinite(p_fake))),
            len(p_fake),
        )
        return math.nan
    classes = set(np.unique(is_fake).tolist())
    if classes != {0, 1}:
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


def evaluate_split(trainer, dataset, prefix: str = "test") -> dict[str, float]:
    """Trainer.evaluate on ``dataset`` with its own manipulation names; metrics named ``<prefix>_*``."""
    saved = trainer.compute_metrics
    trainer.compute_metrics = AnswerMetrics(column(dataset, "manipulation"))
    try:
        return trainer.evaluate(eval_dataset=dataset, metric_key_prefix=prefix)
    finally:
        trainer.compute_metrics = saved


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m llava_df.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", required=True, help="A finished run's output_dir (has run_config.json).")
    parser.add_argument(
        "--weights", default="best", choices=("best", "final"), help="Which saved weights to load."
    )
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--batch_size", type=int, default=8)
    args = parser.parse_args(argv)
    from .train import evaluate_run  # the run's model/data wiring lives in train.py

    metrics = evaluate_run(
        Path(args.run_dir), weights=args.weights, split=args.split, batch_size=args.batch_size
    )
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
