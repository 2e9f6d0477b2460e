"""DeepfakeTrainer: transformers' Trainer with llava_df's checkpoint contents, projector lr, KAN loss, NaN guard.

How to call (train.py does)::

    trainer = DeepfakeTrainer(model=model, args=training_args, ..., record=checkpoint_record,
                              extra_input_keys=collator.extra_keys)
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from transformers.trainer_utils import get_last_checkpoint

from llava_df.errors import RunError
from llava_df.eval.scoring import AnswerTrainer
from llava_df.model.anatomy import projector as projector_of
from llava_df.model.anatomy import unwrap
from llava_df.model.checkpoint import CheckpointRecord, load_trainable_weights, save_trainable
from llava_df.model.strategies import param_groups
from llava_df.train.memory_watch import log_fields


class NonFiniteLossError(RunError):
    pass


def _gathered(trainer, params):
    """DeepSpeed ZeRO-3 keeps each parameter sharded; gather the trained ones to save them whole."""

    if getattr(trainer, "is_deepspeed_enabled", False):
        import deepspeed  # lazy: DeepSpeed is optional (CUDA machines only), needed only under ZeRO-3

        if trainer.accelerator.state.deepspeed_plugin.zero_stage == 3:
            return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    return contextlib.nullcontext()


class DeepfakeTrainer(AnswerTrainer):
    """HF Trainer + our checkpoint contents, the projector's own lr, and a NaN guard.

    - checkpoint-N/ holds llava_df.model.checkpoint.save_trainable output (not the frozen 7B base);
      resuming loads it back with load_trainable_weights.
    - ``--mm_projector_lr``: the projector gets its own param group (strategies.param_groups).
    - ``--kan_reg_weight w``: training loss + w * projector.regularization_loss() (KAN projectors).
    - from AnswerTrainer: the collator's bookkeeping columns never reach the model, and evaluation
      returns only the logits (what AnswerScores reads).
    - a non-finite loss stops training before the optimizer step applies it, naming the step;
      the checkpoints written so far stay as they are.
    - every training log carries the peak memory since the previous one beside the plan's peak.
    """

    def __init__(
        self,
        *args,
        record: CheckpointRecord,
        memory_meter=None,
        planned_peak_mb: float | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.record = record  # what every checkpoint records besides its weights
        self.memory_meter = (
            memory_meter  # PeakMemory: each training log carries the peak since the previous one
        )
        self.planned_peak_mb = planned_peak_mb

    def log(self, logs: dict, start_time: float | None = None) -> None:
        """Each training log (the one with ``loss``) also carries the peak memory since the previous one and
        the plan's peak (llava_df.train.memory_watch), so the progress line, tensorboard and the history have it."""
        if self.memory_meter is not None and "loss" in logs:
            logs = {**logs, **log_fields(self.memory_meter.take_interval(), self.planned_peak_mb)}
        super().log(logs, start_time)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """checkpoint-N/ (and any save_model call) gets our trained parts, never the frozen base.

        Public hook: the Trainer's checkpointing calls ``save_model``. Only the main process writes
        (``should_save``); under DeepSpeed ZeRO-3 (16-bit runs only) the trained parameters are
        gathered first with DeepSpeed's public ``GatheredParameters``.
        """
        out = output_dir or self.args.output_dir
        trained = [p for p in self.model.parameters() if p.requires_grad]
        with _gathered(self, trained):
            if self.args.should_save:
                # The Trainer writes its optimizer and state after this; OutputDirCallback records the
                # folder complete once they are there (llava_df.train.outdir.mark_complete).
                save_trainable(self.model, out, self.record, step=self.state.global_step, complete=False)

    # No public hook loads model weights on resume: Trainer.train() calls this method itself, and its
    # default looks for full model weights (model.safetensors / an adapter only) that our checkpoints
    # do not hold (projector + adapter + unfrozen layers). tests/test_trainer_internals.py fails when
    # transformers renames it or stops calling it from train(), so the change is seen at once.
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_trainable_weights(model or self.model, resume_from_checkpoint)

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.args.mm_projector_lr is not None:
            opt_model = model or self.model
            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            groups = param_groups(
                opt_model,
                self.args.learning_rate,
                self.args.mm_projector_lr,
                self.args.weight_decay,
                # The Trainer's own split (no decay on biases and norms), as without the flag.
                decay_names=set(self.get_decay_parameter_names(opt_model)),
            )
            self.optimizer = cls(groups, **kwargs)
        return super().create_optimizer(model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        weight = getattr(self.args, "kan_reg_weight", 0.0)
        if not weight or not model.training:
            return result
        loss, outputs = result if return_outputs else (result, None)
        # KAN sparsity loss on the token sample the projector recorded in this forward.
        reg = projector_of(unwrap(model)).regularization_loss()
        # When the CE loss is already normalized over the whole accumulated batch (num_items_in_batch),
        # the Trainer does not divide by the accumulation steps; do it here so the weight is per update.
        # No public hook tells compute_loss this; these are the attributes the Trainer's docstring names for
        # the rule (loss_is_scaled_for_ga), pinned by tests/test_trainer_internals.py.
        scaled = self.loss_is_scaled_for_ga
        if scaled is None:
            scaled = (
                self.model_accepts_loss_kwargs and num_items_in_batch is not None
            ) or self.compute_loss_func
        if scaled:
            reg = reg / self.current_gradient_accumulation_steps
        loss = loss + weight * reg
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            step = self.state.global_step + 1
            last = get_last_checkpoint(self.args.output_dir) if Path(self.args.output_dir).is_dir() else None
            raise NonFiniteLossError(
                f"Loss is {loss.item()} at step {step}; stopped before the optimizer applied it. "
                f"Last good checkpoint: {last or 'none yet'}. Lower --learning_rate, use --bf16 instead of --fp16, "
                f"or resume with --resume_from_checkpoint {last or '<checkpoint>'} and changed settings."
            )
        return loss
