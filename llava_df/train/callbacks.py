"""TrainerCallbacks: the users' plateau LR schedule + early stopping (seeds/003) and training_history.json.

How to call::

    plateau = PlateauCallback(base_lr=args.learning_rate, factor=args.lr_reduction_factor,
                              patience=args.lr_patience, threshold=args.improvement_threshold,
                              min_lr=args.min_lr, min_val_loss=args.min_val_loss,
                              max_reductions=args.max_lr_reductions, on_best=save_best)
    history = HistoryCallback(Path(args.output_dir) / "training_history.json", plateau=plateau)
    Trainer(..., callbacks=[plateau, history])   # history after plateau: it reads plateau.last

The schedule (after each evaluation with ``eval_loss``):
  * improvement = val loss below ``best * (1 - threshold)``; it becomes the new best (``on_best``
    saves best/), otherwise one more bad evaluation;
  * ``patience`` bad evaluations in a row -> every param group's lr *= ``factor`` (ratios between
    groups, e.g. the projector's own lr, are kept), counter reset;
  * stop when val loss < ``min_val_loss``, the plateau lr < ``min_lr``, or the lr has been reduced
    ``max_reductions`` times (0: no limit; the rule that stops runs of a learning-rate grid alike).
The LR is scaled through the scheduler's ``base_lrs`` as well as the optimizer groups: transformers'
schedulers are LambdaLR (lr = base_lr * lambda(step)), so the next ``scheduler.step()`` keeps the
reduction instead of undoing it, any warmup/decay still applies on top, and ``base_lrs`` is saved in
the checkpoint's scheduler state. The counters are saved in trainer_state.json (ExportableState)
and put back by ``restore_callback_states`` on resume.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from llava_df.io import write_json
from llava_df.train.memory_watch import MEMORY_FIELDS

logger = logging.getLogger(__name__)


@dataclass
class PlateauDecision:
    val_loss: float
    lr: float  # plateau lr in effect up to this evaluation
    next_lr: float  # plateau lr from now on
    improved: bool
    lr_reduced: bool
    stop_reason: str | None


@dataclass
class PlateauSchedule:
    """The rule alone, no Trainer: feed it val losses, read the decisions."""

    base_lr: float
    factor: float = 0.5
    patience: int = 1
    threshold: float = 0.05
    min_lr: float = 0.0
    min_val_loss: float = 0.0
    max_reductions: int = 0
    best: float = math.inf
    bad_evals: int = 0
    scale: float = 1.0
    reductions: int = 0

    @property
    def lr(self) -> float:
        return self.base_lr * self.scale

    def update(self, val_loss: float) -> PlateauDecision:
        lr_before = self.lr
        if not math.isfinite(val_loss):
            return PlateauDecision(val_loss, lr_before, lr_before, False, False, f"val loss is {val_loss}")
        improved = val_loss < self.best * (1 - self.threshold)
        reduced = False
        if improved:
            self.best, self.bad_evals = val_loss, 0
        else:
            self.bad_evals += 1
            if self.bad_evals >= self.patience:
                self.scale *= self.factor
                self.bad_evals = 0
                self.reductions += 1
                reduced = True
        stop = None
        if val_loss < self.min_val_loss:
            stop = f"val loss {val_loss:.4g} < min_val_loss {self.min_val_loss:g}"
        elif self.lr < self.min_lr:
            stop = f"lr {self.lr:.3g} < min_lr {self.min_lr:g}"
        elif self.max_reductions and self.reductions >= self.max_reductions:
            stop = f"lr reduced {self.reductions} times (max_lr_reductions {self.max_reductions})"
        return PlateauDecision(val_loss, lr_before, self.lr, improved, reduced, stop)


class PlateauCallback(TrainerCallback, ExportableState):
    """Apply PlateauSchedule after each evaluation that reports ``eval_loss``."""

    def __init__(
        self,
        base_lr: float,
        factor: float = 0.5,
        patience: int = 1,
        threshold: float = 0.05,
        min_lr: float = 0.0,
        min_val_loss: float = 0.0,
        on_best: Callable[..., None] | None = None,
        max_reductions: int = 0,
    ):
        self.schedule = PlateauSchedule(
            base_lr, factor, patience, threshold, min_lr, min_val_loss, max_reductions=max_reductions
        )
        self.on_best = on_best  # on_best(model=..., state=...) -> e.g. save best/
        self.last: PlateauDecision | None = None
        self.best_step: int | None = (
            None  # the step of this process's best evaluation (not restored on resume)
        )

    @classmethod
    def from_args(
        cls, args: TrainingArguments, on_best: Callable[..., None] | None = None
    ) -> PlateauCallback:
        return cls(
            base_lr=args.learning_rate,
            factor=args.lr_reduction_factor,
            patience=args.lr_patience,
            threshold=args.improvement_threshold,
            min_lr=args.min_lr,
            min_val_loss=args.min_val_loss,
            on_best=on_best,
            max_reductions=args.max_lr_reductions,
        )

    def on_evaluate(self, args, state: TrainerState, control: TrainerControl, metrics=None, **kwargs):
        if not metrics or "eval_loss" not in metrics:  # e.g. a test-split evaluation ("test_loss")
            return
        decision = self.schedule.update(float(metrics["eval_loss"]))
        self.last = decision
        if decision.lr_reduced:
            scale_lr(kwargs.get("optimizer"), kwargs.get("lr_scheduler"), self.schedule.factor)
            logger.info(
                "step %d: val loss %.4g did not improve; lr %.3g -> %.3g",
                state.global_step,
                decision.val_loss,
                decision.lr,
                decision.next_lr,
            )
        if decision.improved:  # on every process: which step is best is the same everywhere
            self.best_step = state.global_step
        if (
            decision.improved and self.on_best is not None and getattr(args, "should_save", True)
        ):  # main writes
            self.on_best(model=kwargs.get("model"), state=state)
        if decision.stop_reason:
            logger.warning("step %d: stopping early, %s", state.global_step, decision.stop_reason)
            control.should_training_stop = True

    def state(self) -> dict:
        s = self.schedule
        return {
            "args": {},
            "attributes": {
                "best": s.best,
                "bad_evals": s.bad_evals,
                "scale": s.scale,
                "reductions": s.reductions,
            },
        }

    def load_state(self, attributes: dict) -> None:
        for key in ("best", "bad_evals", "scale"):
            setattr(self.schedule, key, attributes[key])
        # a checkpoint of an older version has no count: the halvings it made, read from its scale
        default = (
            round(math.log(s.scale) / math.log(s.factor))
            if (s := self.schedule).factor < 1 and s.scale < 1
            else 0
        )
        self.schedule.reductions = int(attributes.get("reductions", default))


def scale_lr(optimizer, lr_scheduler, factor: float) -> None:
    """Multiply every param group's lr (and the scheduler's base_lrs) by ``factor``."""
    if optimizer is not None:
        for group in optimizer.param_groups:
            group["lr"] *= factor
            if "initial_lr" in group:  # LRScheduler bookkeeping; keep it consistent with base_lrs
                group["initial_lr"] *= factor
    base_lrs = getattr(lr_scheduler, "base_lrs", None)
    if base_lrs is not None:
        lr_scheduler.base_lrs = [lr * factor for lr in base_lrs]
    elif lr_scheduler is not None:
        raise TypeError(
            f"{type(lr_scheduler).__name__} has no base_lrs, so the plateau reduction would be undone at the next "
            "step. Use a LambdaLR schedule (--lr_scheduler_type constant, linear, cosine, ...)."
        )


class HistoryCallback(TrainerCallback, ExportableState):
    """One entry per evaluation in ``path`` (training_history.json), rewritten after each one."""

    def __init__(self, path: str | os.PathLike, plateau: PlateauCallback | None = None):
        self.path = Path(path)
        self.plateau = plateau
        self.entries: list[dict] = []
        self.memory_steps: list[dict] = []  # the training logs' memory fields since the last evaluation

    def on_log(self, args, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        memory = {k: v for k, v in (logs or {}).items() if k in MEMORY_FIELDS}
        if memory and "loss" in logs:
            self.memory_steps.append({"step": state.global_step, **memory})

    def on_evaluate(self, args, state: TrainerState, control: TrainerControl, metrics=None, **kwargs):
        if not metrics or "eval_loss" not in metrics:
            return
        entry = history_entry(state, metrics)
        decision = self.plateau.last if self.plateau is not None else None
        if decision is not None and decision.val_loss == entry["val_loss"]:
            entry.update(
                lr=decision.lr,
                next_lr=decision.next_lr,
                improved=decision.improved,
                lr_reduced=decision.lr_reduced,
                stop_reason=decision.stop_reason,
            )
        else:
            optimizer = kwargs.get("optimizer")
            entry["lr"] = optimizer.param_groups[0]["lr"] if optimizer is not None else None
        if self.memory_steps:  # per logging step since the previous evaluation: the peak beside the plan
            entry["memory"] = self.memory_steps
            self.memory_steps = []
        self.entries.append(entry)  # every process keeps the history (resumable state); one writes it
        if getattr(args, "should_save", True):
            write_json(self.path, self.entries)

    def state(self) -> dict:
        return {"args": {}, "attributes": {"entries": self.entries}}

    def load_state(self, attributes: dict) -> None:
        self.entries = list(attributes["entries"])


def history_entry(state: TrainerState, metrics: dict) -> dict:
    """step, epoch, last train loss, val loss, accuracy, AUC and every other eval_ metric."""
    train_losses = [
        log["loss"] for log in state.log_history if "loss" in log and log.get("step", 0) <= state.global_step
    ]
    # Timing figures stay in trainer_state.json / tensorboard; the history is about learning.
    timing = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
    extra = {
        k.removeprefix("eval_"): v for k, v in metrics.items() if k.startswith("eval_") and k not in timing
    }
    return {
        "step": state.global_step,
        "epoch": state.epoch,
        "loss": train_losses[-1] if train_losses else None,
        "val_loss": extra.pop("loss"),
        "accuracy": extra.pop("accuracy", None),
        "auc": extra.pop("auc", None),
        **extra,
    }


def restore_callback_states(callbacks: list[TrainerCallback], checkpoint_dir: str | os.PathLike) -> list[str]:
    """Put back the ExportableState of our callbacks from ``checkpoint_dir/trainer_state.json``.

    The Trainer's own restore rebuilds callbacks from JSON constructor args, which would drop
    ``on_best`` and the plateau link; this sets the saved attributes on the live objects instead.
    Returns the names restored.
    """
    saved = TrainerState.load_from_json(str(Path(checkpoint_dir) / "trainer_state.json")).stateful_callbacks
    restored = []
    for cb in callbacks:
        data = saved.get(type(cb).__name__)
        if data is not None and hasattr(cb, "load_state"):
            cb.load_state((data[0] if isinstance(data, list) else data)["attributes"])
            restored.append(type(cb).__name__)
    return restored


__all__ = [
    "HistoryCallback",
    "PlateauCallback",
    "PlateauDecision",
    "PlateauSchedule",
    "history_entry",
    "restore_callback_states",
    "scale_lr",
]


class ValScoresCallback(TrainerCallback):
    """Keeps each validation evaluation's predictions by step, so the final evaluation of the weights
    saved at that step (best/, or final/ when training ended on an evaluation) need not score val again."""

    def __init__(self, metrics_fn):
        self.metrics_fn = metrics_fn  # AnswerMetrics: holds the predictions of its latest call
        self.by_step: dict[int, tuple] = {}

    def on_evaluate(self, args, state: TrainerState, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics and getattr(self.metrics_fn, "last", None) is not None:
            self.by_step[state.global_step] = (self.metrics_fn.last, float(metrics["eval_loss"]))
            self.metrics_fn.last = None

    def scored_at(self, step: int) -> tuple | None:
        """(predictions [N, 2], val loss) of the evaluation at ``step``, or None."""
        return self.by_step.get(step)
