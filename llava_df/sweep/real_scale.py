"""The memory each (projector, strategy) would need at real scale: the planner's LLaVA-1.5-7B peak.

How to call::

    planned_7b_peak_gib("kan_h256_g5_k3", "lora")   # GiB, closed form of llava_df.memory (milliseconds)

The tiny sweep's measured peak says nothing about a 24 GB GPU; this column does. The recipe is the
sweep's own where it has one (INT8, LoRA r 16, unfreeze_early N=1, torch AdamW) at the users' scale
(LLaVA-1.5-7B in bf16, batch 1, checkpointing, 576 image tokens + 48 text tokens). The closed form
is within a few % of the dry run on these configurations (tests/test_memory_plan.py; the dry run
itself: `python -m llava_df.memory plan` with REAL_SCALE_FLAGS).
"""

from __future__ import annotations

import functools

from llava_df.memory.plan import make_plan

REAL_SCALE_MODEL = "llava-hf/llava-1.5-7b-hf"
REAL_SCALE_FLAGS = [
    "--model_name_or_path", REAL_SCALE_MODEL, "--bits", "8", "--bf16", "true", "--model_max_length", "2048",
    "--per_device_train_batch_size", "1", "--gradient_checkpointing", "true", "--lora_r", "16", "--lora_alpha", "32",
    "--optim", "adamw_torch",
]  # fmt: skip
REAL_SCALE_LABEL = "LLaVA-1.5-7B INT8, bf16, batch 1, checkpointing, 624 tokens"


def real_scale_argv(projector: str, strategy: str) -> list[str]:
    argv = [*REAL_SCALE_FLAGS, "--mm_projector_type", projector, "--strategy", strategy]
    if strategy == "unfreeze_early":
        argv += ["--num_unfreeze_early_layers", "1"]
    return argv


@functools.cache
def planned_7b_peak_gib(projector: str, strategy: str) -> float:

    plan = make_plan(real_scale_argv(projector, strategy), target="cuda", dry=False)
    return plan["estimate"]["peak_bytes"] / 2**30
