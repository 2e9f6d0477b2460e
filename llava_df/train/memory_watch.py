"""Memory you can watch: live peaks beside the plan, a pre-flight fit check, an OOM that explains itself.

How to call (the workflow does)::

    preflight(spec, plan)                          # CUDA: plan vs free memory, before any weight loads
    fields = log_fields(meter.take_interval(), planned_mb)   # DeepfakeTrainer.log adds them to each training log
    phase = PhaseCallback()                        # what the Trainer was doing, for the OOM message
    raise oom_error(err, step, phase.phase, plan_mb, meter.read(), out)      # one error line

Live: every training log (``--logging_steps``) carries the peak since the previous one (CUDA:
max_memory_allocated and max_memory_reserved, their counters reset per interval; CPU: the
process's peak RSS, reset per interval on Linux) and the plan's predicted peak of the training
step, so the progress line, tensorboard (``train/peak_*``), trainer_state.json and
training_history.json all show them side by side. The run's whole peak in results.json still
covers every interval (PeakMemory carries their maxima).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from llava_df.errors import RunError, UsageError
from llava_df.memory.budget import search

logger = logging.getLogger(__name__)

MIB, GIB = 2**20, 2**30
WARN_SHARE = 0.9  # a plan above this share of the free memory warns


# Each logged figure's name says what it measures, so no one reads the CPU process's RSS (interpreter,
# libraries and allocator caches: hundreds of MiB for the tiny preset) against the plan's tensor bytes (tens):
# on CUDA, the allocator's peaks are tensor bytes too and compare with the plan.
LOGGED_NAMES = {"peak_allocated_mb": "peak_allocated_mib", "peak_reserved_mb": "peak_reserved_mib",
                "peak_rss_mb": "process_rss_peak_mib"}  # fmt: skip
PLANNED_NAME = "planned_tensor_peak_mib"
MEMORY_FIELDS = frozenset({*LOGGED_NAMES.values(), PLANNED_NAME})  # what training_history.json keeps per log


def log_fields(interval: dict, planned_mb: float | None) -> dict:
    """The memory fields of one training log: the interval's peaks (MiB) and the plan's peak of tensor bytes."""
    fields = {LOGGED_NAMES.get(k, k.removesuffix("_mb") + "_mib"): round(v, 1) for k, v in interval.items()}
    if planned_mb is not None:
        fields[PLANNED_NAME] = round(planned_mb, 1)
    return fields


class PhaseCallback(TrainerCallback):
    """Which part of training is running, so an out-of-memory error can name it."""

    def __init__(self):
        self.phase = "setup (before the first step)"

    def on_step_begin(self, args, state, control, **kwargs):
        self.phase = "forward and backward of a training step"

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.phase = "optimizer step"

    def on_step_end(self, args, state, control, **kwargs):
        self.phase = "after a step (logging, evaluation, checkpoint)"

    def on_prediction_step(self, args, state, control, **kwargs):
        self.phase = "evaluation"

    def on_evaluate(self, args, state, control, **kwargs):
        self.phase = "after an evaluation (best/ or a checkpoint)"


def cuda_device_index() -> int:
    return int(os.environ.get("LOCAL_RANK", torch.cuda.current_device() if torch.cuda.is_available() else 0))


def free_cuda_memory(index: int) -> tuple[int, int]:
    """(free, total) bytes of this process's GPU (torch.cuda.mem_get_info)."""
    return torch.cuda.mem_get_info(index)


def budget_answer(spec, free_bytes: int) -> str:
    """The planner's --budget answer for this much memory: the first ready --config YAML, or why none fits."""
    try:
        found = search(
            list(spec.argv), budget_bytes=free_bytes, margin=0.1, target="cuda", top=1, verify=False
        )
    except UsageError as err:
        return str(err)
    return (
        "the planner's first --budget answer for it (save as a .yaml, run with --config):\n"
        + found["candidates"][0]["yaml"]
    )


def preflight(spec, plan: dict | None, *, memory=None) -> None:
    """Stop a CUDA run whose plan exceeds the GPU's free memory (before any weights load); warn within 10%.

    memory: (device index) -> (free, total) bytes; None reads the GPU (a test passes a fake reading)."""
    if plan is None or plan.get("target") != "cuda" or spec.training.skip_memory_check:
        return
    index = cuda_device_index()
    free, total = (memory or free_cuda_memory)(index)
    planned = plan.get("predicted_peak_mb", 0.0) * MIB
    where = f"cuda:{index} ({free / GIB:.2f} GiB free of {total / GIB:.2f} GiB)"
    if planned > free:
        raise RunError(
            f"the planned peak {planned / GIB:.2f} GiB ({plan.get('method')}) is above the free memory of {where}; "
            f"the run would run out of memory. Free the GPU, pass --skip_memory_check True to try anyway, or use "
            f"{budget_answer(spec, free)}"
        )
    if planned > WARN_SHARE * free:
        logger.warning(
            "note: the planned peak %.2f GiB is within %.0f%% of the free memory of %s; allocator overhead may not fit",
            planned / GIB, 100 * (1 - WARN_SHARE), where,
        )  # fmt: skip


class OutOfMemoryRunError(RunError):
    pass


def oom_error(
    step: int, phase: str, planned_mb: float | None, peak: dict, output_dir, config_file
) -> OutOfMemoryRunError:
    """The one-line explanation of a CUDA out-of-memory error during training."""
    measured = peak.get("peak_allocated_mb", peak.get("peak_rss_mb"))
    last = get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
    planned = f"{planned_mb / 1024:.2f} GiB" if planned_mb is not None else "not available"
    return OutOfMemoryRunError(
        f"out of memory at step {step + 1}, during the {phase}: planned peak {planned}, measured peak so far "
        f"{(measured or 0) / 1024:.2f} GiB. Last good checkpoint: {last or 'none yet'} (kept). Ask the planner what "
        f"fits: llava-df plan --config {config_file} --budget <your GPU's GiB>, then resume with "
        f"--resume_from_checkpoint {last or 'last'} and its settings."
    )
