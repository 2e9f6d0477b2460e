"""The training arguments: transformers' TrainingArguments plus llava_df's own, with its defaults.

Apart from ``args.py`` because transformers' TrainingArguments imports torch, accelerate and
bitsandbytes (seconds): ``llava-df train --help`` and every usage error are answered from
``flag_table.py`` without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import transformers
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType

from llava_df.spec.args import DataArguments, ModelArguments
from llava_df.spec.flags import CONFIG_HELP, TrainParser


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    output_dir: str = field(
        default="outputs/run", metadata={"help": "Where best/, final/, checkpoints and history go."}
    )
    model_max_length: int = field(
        default=512, metadata={"help": "Maximum tokens per sample, image tokens included."}
    )
    mm_projector_lr: float | None = field(
        default=None, metadata={"help": "Projector learning rate (default: --learning_rate)."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing over a finished run in --output_dir."}
    )
    plan_only: bool = field(
        default=False,
        metadata={
            "help": "Print the memory plan (python -m llava_df.memory plan: dry run + closed form) and stop "
            "before loading weights or touching --output_dir."
        },
    )
    # Plateau schedule and early stopping of the users' QLoRA notes (seeds/003).
    lr_reduction_factor: float = field(
        default=0.5, metadata={"help": "LR multiplier when val loss stops improving."}
    )
    lr_patience: int = field(
        default=1, metadata={"help": "Evaluations without enough improvement before the LR is reduced."}
    )
    improvement_threshold: float = field(
        default=0.05, metadata={"help": "Relative val-loss improvement that counts (0.05 = 5%%)."}
    )
    min_lr: float = field(default=0.0, metadata={"help": "Stop when the LR falls below this."})
    max_lr_reductions: int = field(
        default=0,
        metadata={
            "help": "Stop after the plateau schedule has reduced the LR this many times (0: no limit). Unlike "
            "--min_lr it scales with --learning_rate, so runs at different learning rates stop by one rule."
        },
    )
    min_val_loss: float = field(default=0.0, metadata={"help": "Stop when val loss falls below this."})
    kan_reg_weight: float = field(
        default=0.0, metadata={"help": "Weight of the KAN regularization loss (KAN projectors only)."}
    )
    resume_allow_changes: str = field(
        default="",
        metadata={
            "help": "Comma-separated settings that may differ from the run's saved config on --resume_from_checkpoint (e.g. max_steps,learning_rate)."
        },
    )
    threshold_rule: str = field(
        default="eer",
        metadata={
            "help": "How the decision threshold on P(Fake) is chosen on validation: eer, youden or fixed:<p>. Saved as threshold.json; predict and the demo use it."
        },
    )
    allow_base_mismatch: bool = field(
        default=False,
        metadata={
            "help": "Resume even when the checkpoint was trained on another base (name or revision) than the one built now."
        },
    )
    mm_projector_bin: bool = field(
        default=False,
        metadata={
            "help": "Also write LLaVA's mm_projector.bin (torch pickle, keys model.mm_projector.*) beside mm_projector.safetensors."
        },
    )
    group_by_modality_length: bool = field(
        default=False,
        metadata={
            "help": "Accepted for LLaVA's scripts: every sample has an image, so there is nothing to group."
        },
    )
    freeze_mm_mlp_adapter: bool = field(
        default=False, metadata={"help": "Only False: llava_df always trains the projector."}
    )
    lora_weight_path: str = field(
        default="",
        metadata={"help": "Only empty (LLaVA never reads it either); resume with --resume_from_checkpoint."},
    )
    mpt_attn_impl: str | None = field(
        default="triton", metadata={"help": "Accepted for LLaVA's scripts; MPT models are not supported."}
    )
    skip_memory_check: bool = field(
        default=False,
        metadata={
            "help": "CUDA: run even when the memory plan is above the GPU's free memory (by default the run stops "
            "before loading weights, with the planner's --budget answer for that memory)."
        },
    )
    feature_cache: str = field(
        default="auto",
        metadata={
            "help": "auto: the frozen vision tower's selected-layer features are computed once per (tower weights, "
            "images, preprocessing) under $LLAVA_DF_CACHE/features and reused by every epoch, evaluation and run "
            "(never when the tower trains or its output is random); off: the tower runs on every forward."
        },
    )
    drop_nonfinite_scores: bool = field(
        default=False,
        metadata={
            "help": "Evaluation: leave samples whose P(Fake) is NaN/inf out of the metrics (counted as n_nonfinite) instead of stopping with an error."
        },
    )
    # Defaults changed from transformers' for this project (same names, same types):
    lr_scheduler_type: SchedulerType | str = field(
        default="constant",
        metadata={
            "help": "LR schedule; 'constant' so the plateau reductions above are the only decay (seeds/003)."
        },
    )
    eval_strategy: IntervalStrategy | str = field(
        default="epoch",
        metadata={
            "help": "When to evaluate ('no', 'steps', 'epoch'): the plateau schedule needs evaluations."
        },
    )
    save_strategy: SaveStrategy | str = field(
        default="epoch",
        metadata={
            "help": "When to write checkpoint-N ('no', 'epoch', 'steps'); keep it on evaluation boundaries."
        },
    )
    logging_steps: float = field(
        default=10,
        metadata={"help": "Log the train loss every N steps (a float < 1: fraction of all steps)."},
    )
    report_to: None | str | list[str] = field(
        default="tensorboard",
        metadata={
            "help": "Loggers ('tensorboard', 'none', ...); tensorboard writes to $TENSORBOARD_LOGGING_DIR or output_dir/runs."
        },
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={
            "help": "DDP's unused-parameter search; False because every trained parameter (projector, LoRA, unfrozen layers) gets a gradient each step, and True fails with reentrant checkpointing ('mark a variable ready only once')."
        },
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={
            "help": "Must stay False: the collator needs the image / is_fake columns the model never sees."
        },
    )


def dataclass_types() -> tuple[type, type, type]:
    """The three argument dataclasses, in the parser's order (llava_df.spec.flag_table.SECTIONS)."""
    return ModelArguments, DataArguments, TrainingArguments


def build_parser(prog: str = "llava-df train") -> TrainParser:
    """The real training parser: transformers' HfArgumentParser over the three dataclasses, plus --config."""
    parser = TrainParser(dataclass_types(), prog=prog, allow_abbrev=False)
    parser.add_argument("--config", default=None, help=CONFIG_HELP)
    return parser
