"""The Trainer internals llava_df still relies on, pinned: this fails the day a release renames them.

Each has a comment at its use saying why no public hook does the job:
- Trainer._load_from_checkpoint (trainer.py): train() calls it to load model weights on resume, and
  its default wants full weights our checkpoints do not hold;
- loss_is_scaled_for_ga / model_accepts_loss_kwargs / compute_loss_func / current_gradient_accumulation_steps
  (trainer.py, --kan_reg_weight): the documented rule for whether compute_loss's loss is already
  scaled for gradient accumulation;
- an LRScheduler's base_lrs (callbacks.scale_lr): torch's attribute, which LambdaLR multiplies.
"""

from __future__ import annotations

import inspect

import torch
from transformers import Trainer


def test_train_still_loads_resumed_weights_through_load_from_checkpoint():
    params = list(inspect.signature(Trainer._load_from_checkpoint).parameters)
    assert params[:3] == ["self", "resume_from_checkpoint", "model"]
    assert "self._load_from_checkpoint(resume_from_checkpoint" in inspect.getsource(Trainer)


def test_checkpoints_are_written_through_the_public_save_model():
    assert "self.save_model(output_dir, _internal_call=True)" in inspect.getsource(Trainer._save_checkpoint)


def test_the_documented_gradient_accumulation_rule_is_still_there():
    assert "loss_is_scaled_for_ga" in vars(Trainer) or hasattr(Trainer, "loss_is_scaled_for_ga")
    source = inspect.getsource(Trainer.training_step)
    for name in ("loss_is_scaled_for_ga", "model_accepts_loss_kwargs", "compute_loss_func",
                 "current_gradient_accumulation_steps"):  # fmt: skip
        assert name in source, name


def test_lambda_lr_recomputes_from_base_lrs():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    sched.base_lrs = [0.5]
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.5
