"""Range checks for every numeric flag, in one table, run before anything is loaded or written.

How to call (``cli.parse_args`` does)::

    check_ranges(parsed)          # raises ConfigError naming the flag, its value, the range, the fix
    check_projector_size(parsed)  # parameter count of --mm_projector_type before building it
    check_config_sizes(json.loads(Path("config.json").read_text()), "config.json")  # a model's sizes

Each row: (section, field, test, what is expected). A check that needs two flags lives in
``cli.validate``; this table holds the single-flag ones so there is one place to read them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from llava_df.errors import ConfigError, UsageError
from llava_df.projectors import count_parameters


def _num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(lo: int) -> Callable:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _in(lo: float, hi: float, *, lo_open=False, hi_open=False) -> Callable:
    def test(v) -> bool:
        if not _num(v):
            return False
        above = v > lo if lo_open else v >= lo
        below = v < hi if hi_open else v <= hi
        return above and below

    return test


def _optional(test: Callable) -> Callable:
    return lambda v: v is None or test(v)


# (section, field, test, expected). Sections: model, data, training (the three dataclasses).
RANGES: list[tuple[str, str, Callable, str]] = [
    ("model", "lora_r", _int_at_least(1), "an integer >= 1 (the LoRA rank; 8-64 is usual)"),
    ("model", "lora_alpha", _in(0, 1e6, lo_open=True), "a number > 0 (scale = alpha / r; 2 x r is usual)"),
    ("model", "lora_dropout", _in(0, 1, hi_open=True), "a probability in [0, 1)"),
    ("model", "num_unfreeze_early_layers", _int_at_least(0), "an integer >= 0"),
    ("data", "synthetic_n", _int_at_least(12), "an integer >= 12 (both classes in train, val and test)"),
    ("data", "synthetic_seed", _int_at_least(0), "an integer >= 0"),
    ("data", "image_size", lambda v: _int_at_least(16)(v) and v <= 2048, "an integer in [16, 2048] pixels"),
    ("data", "difficulty", _in(0, 1), "a number in [0, 1]"),
    ("data", "frame_num", _int_at_least(1), "an integer >= 1 (DeepfakeBench: 32)"),
    ("training", "per_device_train_batch_size", _int_at_least(1), "an integer >= 1"),
    ("training", "per_device_eval_batch_size", _int_at_least(1), "an integer >= 1"),
    ("training", "gradient_accumulation_steps", _int_at_least(1), "an integer >= 1"),
    ("training", "learning_rate", _in(0, 1, lo_open=True), "a number in (0, 1] (1e-4 .. 2e-3 is usual)"),
    ("training", "mm_projector_lr", _optional(_in(0, 1, lo_open=True)), "a number in (0, 1], or unset"),
    ("training", "weight_decay", _in(0, 1), "a number in [0, 1]"),
    ("training", "num_train_epochs", _in(0, 1e6, lo_open=True), "a number of epochs > 0"),
    (
        "training",
        "max_steps",
        lambda v: v == -1 or _int_at_least(1)(v),
        "-1 (train by epochs) or an integer >= 1",
    ),
    ("training", "warmup_steps", _in(0, 1e9), "a number >= 0 (a value < 1 is a fraction of all steps)"),
    ("training", "model_max_length", _int_at_least(8), "an integer >= 8 tokens (image tokens included)"),
    ("training", "max_grad_norm", _in(0, 1e9), "a number >= 0 (0 disables clipping)"),
    ("training", "adam_beta1", _in(0, 1, hi_open=True), "a number in [0, 1)"),
    ("training", "adam_beta2", _in(0, 1, hi_open=True), "a number in [0, 1)"),
    ("training", "adam_epsilon", _in(0, 1, lo_open=True), "a number in (0, 1]"),
    (
        "training",
        "logging_steps",
        _in(0, 1e9, lo_open=True),
        "a number > 0 (a value < 1 is a fraction of all steps)",
    ),
    ("training", "eval_steps", _optional(_in(0, 1e9, lo_open=True)), "a number > 0, or unset"),
    (
        "training",
        "save_steps",
        _in(0, 1e9, lo_open=True),
        "a number > 0 (a value < 1 is a fraction of all steps)",
    ),
    ("training", "save_total_limit", _optional(_int_at_least(1)), "an integer >= 1, or unset (keep all)"),
    ("training", "seed", _int_at_least(0), "an integer >= 0"),
    ("training", "kan_reg_weight", _in(0, 1e6), "a number >= 0"),
    ("training", "min_lr", _in(0, 1), "a number in [0, 1]"),
    ("training", "lr_reduction_factor", _in(0, 1, lo_open=True), "a multiplier in (0, 1]"),
    ("training", "lr_patience", _int_at_least(1), "1 or more evaluations"),
    ("training", "max_lr_reductions", _int_at_least(0), "an integer >= 0 (0: no limit)"),
    ("training", "improvement_threshold", _in(0, 1, hi_open=True), "a relative change in [0, 1)"),
    ("training", "min_val_loss", _in(0, 1e9), "a number >= 0"),
]

# A projector above this many parameters is refused unless --allow_large_projector True.
# LLaVA-1.5's mlp2x_gelu has 21.0M at 7B widths (1024 -> 4096), 31.5M at 13B widths (5120);
# 500M is larger than any connector in the literature and still fits a 24 GB card in fp32 with AdamW.
MAX_PROJECTOR_PARAMETERS = 500_000_000


# Sizes in a model's config.json, checked before a model (or a memory plan) is built from it:
# (lowest, highest, the largest value a released model has). The lower bound: a zero width, count
# or vocabulary ends in a division by zero or an empty weight deep inside transformers. The upper
# bound is well above the largest released model's (1.6x for positions, 4-8x for the rest), so no
# real checkpoint is refused, while a typo of a few extra digits is refused before it costs minutes
# and gigabytes (num_hidden_layers 100000: 200 s and 7 GB of module objects; hidden_size 1000000:
# a 4.5 GB projector). References:
# Llama-3.1-405B (hidden 16384, MLP 53248, 126 layers, 128 heads), Gemma's 256k vocabulary,
# Llama-4-Scout's 10M positions, vision towers of 336-1024 px with 14-16 px patches.
CONFIG_SIZES: dict[str, tuple[int, int, str]] = {
    "hidden_size": (1, 65536, "16384 in Llama-3.1-405B"),
    "intermediate_size": (1, 262144, "53248 in Llama-3.1-405B"),
    "num_hidden_layers": (1, 1024, "126 in Llama-3.1-405B"),
    "num_attention_heads": (1, 1024, "128 in Llama-3.1-405B"),
    "num_key_value_heads": (1, 1024, "at most num_attention_heads"),
    "head_dim": (1, 1024, "128 or 256 in released LLMs"),
    "vocab_size": (1, 2**20, "256k in Gemma"),
    "max_position_embeddings": (1, 2**24, "10M in Llama-4-Scout"),
    "image_size": (1, 4096, "336-1024 px in released towers"),
    "patch_size": (1, 1024, "14-16 px in released towers"),
    "num_channels": (1, 64, "3 for RGB"),
    "image_seq_length": (1, 2**16, "576 in LLaVA-1.5"),
}
# A LLaVA config.json holds its two models' fields under these keys.
CONFIG_PARTS = ("text_config", "vision_config")


def check_config_sizes(config: dict, where: str) -> None:
    """Raise ConfigError for the first size in ``config`` (a config.json's dict, or a config's
    ``to_dict()``; its text_config / vision_config included) that is not an integer in range.
    ``where`` names the file; a field that is absent or null is transformers' default and not checked."""
    parts = [("", config)] + [(f"{k}.", config[k]) for k in CONFIG_PARTS if isinstance(config.get(k), dict)]
    for prefix, part in parts:
        for name, (lo, hi, largest) in CONFIG_SIZES.items():
            value = part.get(name)
            if value is None:
                continue
            if not (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi):
                raise ConfigError(
                    f"{where}: {prefix}{name} {value!r}: expected an integer in [{lo}, {hi}] ({largest}). Fix the "
                    "config.json, or pass another checkpoint."
                )
        heads, kv = part.get("num_attention_heads"), part.get("num_key_value_heads")
        if heads is not None and kv is not None and heads % kv:
            raise ConfigError(
                f"{where}: {prefix}num_key_value_heads {kv} does not divide num_attention_heads {heads} (each key/value "
                "head serves a whole group of query heads). Fix the config.json, or pass another checkpoint."
            )
        size, patch = part.get("image_size"), part.get("patch_size")
        if size is not None and patch is not None and patch > size:
            raise ConfigError(
                f"{where}: {prefix}patch_size {patch} is larger than image_size {size}: the image would have no "
                "patches. Fix the config.json, or pass another checkpoint."
            )


def check_ranges(parsed) -> None:
    """Raise UsageError for the first flag outside its range, naming value, range and fix."""
    for section, name, test, expected in RANGES:
        value = getattr(getattr(parsed, section), name)
        if not test(value):
            raise ConfigError(f"--{name} {value!r}: expected {expected}. Change --{name}.")


def check_projector_size(parsed, dims: tuple[int, int] | None) -> int | None:
    """The projector's parameter count at ``dims`` (in, out); UsageError above the limit."""

    m = parsed.model
    if dims is None:
        return None
    n = count_parameters(m.mm_projector_type, *dims)
    if n > MAX_PROJECTOR_PARAMETERS and not m.allow_large_projector:
        raise ConfigError(
            f"--mm_projector_type {m.mm_projector_type} has {n:,} parameters at {dims[0]} -> {dims[1]}, above the "
            f"{MAX_PROJECTOR_PARAMETERS:,} limit (mlp2x_gelu has {count_parameters('mlp2x_gelu', *dims):,}). "
            "Pick a smaller projector, or pass --allow_large_projector True if you mean it."
        )
    return n


def parse_threshold_rule(text: str) -> str:
    """The rule as written if valid ("fixed:0.50" is kept as given); UsageError naming the choices."""
    if text in ("eer", "youden"):
        return text
    if text.startswith("fixed:"):
        try:
            value = float(text[6:])
        except ValueError:
            value = math.nan
        if 0.0 <= value <= 1.0:
            return text
    raise UsageError(
        f"--threshold_rule {text!r}: expected eer (default), youden or fixed:<p> with p in [0, 1], e.g. fixed:0.5."
    )


def check_threshold(value: float, flag: str = "--threshold") -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise UsageError(f"{flag} {value}: expected a probability in [0, 1] (a cut on P(Fake)), e.g. 0.5.")
    return float(value)
