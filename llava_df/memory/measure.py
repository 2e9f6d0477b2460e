"""Measured tensor memory of a real training step on CPU, by category: the dry run's bookkeeping on real tensors.

How to call::

    step = measure_step(spec)            # spec: llava_df.spec.RunSpec; builds the real model, one real batch
    step.peak_bytes, step.peak_phase, step.weights, step.activations_bytes, ...   # DryRun's fields

On CUDA the allocator counts tensor bytes (``torch.cuda.max_memory_allocated``); on CPU the only
counter is the process's peak RSS, which also holds Python, the libraries and allocator caches
(llava_df.memory.check). This module counts tensor storage instead, with the dry run's own
tracker and categories (weights by component, gradients, optimizer states, activations saved for
backward, temporaries; llava_df.memory.dryrun.tracked_steps), so a plan and a measurement of the
same run can be put side by side on a machine without a GPU. What it runs is what training runs:
``build_model`` (the real weights, ``--bits`` applied), the strategy, the Trainer's optimizer
class and kwargs, a batch from the run's own data and collator, the Trainer's CPU autocast under
``--bf16``, two optimizer steps (the second one is the steady state).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from llava_df.data.pipeline import prepare_data, split_of
from llava_df.memory.dryrun import DryRun, _optimizer, tracked_steps
from llava_df.memory.tracker import MetaStorageTracker
from llava_df.model.build import build_model
from llava_df.model.processor import run_processor
from llava_df.model.strategies import apply_strategy


class CpuStorageTracker(MetaStorageTracker):
    """MetaStorageTracker's bookkeeping for real tensors: every op runs as it is (no stand-in answers)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._count(out)
        return out


@dataclass
class MeasuredStep(DryRun):
    """DryRun's fields, measured: ``target`` is "cpu (measured)"."""


def measure_step(spec, *, steps: int = 2) -> MeasuredStep:
    """Run ``steps`` real training steps of ``spec`` on CPU under the storage tracker; see the module docstring."""
    t = spec.training
    start = time.time()
    processor, _ = run_processor(spec.model, spec.data)
    data = prepare_data(
        spec.data,
        processor,
        seed=t.seed,
        model_max_length=t.model_max_length,
        answer_head=spec.model.answer_head,
    )
    dtype = torch.bfloat16 if t.bf16 else torch.float16 if t.fp16 else None
    built = build_model(spec.model, spec.strategy, torch_dtype=dtype)
    model = apply_strategy(
        built.model,
        spec.model,
        spec.strategy,
        gradient_checkpointing=bool(t.activation_checkpointing),
        verbose=False,
    )
    model.train()
    train_ds = split_of(data.splits, "train")
    items = [train_ds[i % len(train_ds)] for i in range(t.per_device_train_batch_size)]
    batch = {k: v for k, v in data.collator(items).items() if k not in data.collator.extra_keys}
    optimizer = _optimizer(spec, model, "cpu")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if t.bf16 else None
    with CpuStorageTracker() as tracker:
        fields = tracked_steps(
            model, batch, optimizer, tracker, steps=steps, accumulation=t.gradient_accumulation_steps,
            autocast=autocast if autocast is not None else contextlib.nullcontext(),
        )  # fmt: skip
    return MeasuredStep(
        target="cpu (measured)", **fields, seq_len=int(batch["input_ids"].shape[1]),
        batch_size=t.per_device_train_batch_size, seconds=time.time() - start, data_reads=0,
    )  # fmt: skip
