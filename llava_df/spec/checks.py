"""Checks no single flag can make: combinations, files the flags name, the projector's name.

How to call (llava_df.spec.parse does, once the spec is built)::

    validate(spec)     # ConfigError naming the flags, their values and the fix
"""

from __future__ import annotations

from pathlib import Path

from llava_df.errors import ConfigError, UsageError
from llava_df.projectors import available_projectors, resolve
from llava_df.spec.args import ANSWER_HEADS
from llava_df.spec.llava_flags import check_llava_flags
from llava_df.spec.ranges import check_ranges, parse_threshold_rule


def validate(spec) -> None:
    """Cross-flag checks no single field can make; raise ConfigError naming the fix."""
    m, d, t = spec.model, spec.data, spec.training
    check_ranges(spec)
    check_llava_flags(spec)
    if not str(t.output_dir).strip():
        raise ConfigError(
            f"--output_dir {t.output_dir!r}: expected a folder name; an empty name would write into the current "
            "folder. Pass e.g. --output_dir outputs/run."
        )
    if m.pretrain_mm_mlp_adapter is not None and not Path(m.pretrain_mm_mlp_adapter).is_file():
        raise ConfigError(
            f"--pretrain_mm_mlp_adapter {m.pretrain_mm_mlp_adapter}: no such file. Pass a stage-1 mm_projector.bin "
            "or .safetensors, or leave the flag out to start the projector from random weights."
        )
    if d.image_folder is not None and not Path(d.image_folder).is_dir():
        raise ConfigError(
            f"--image_folder {d.image_folder}: no such folder. Pass the root of --data_path's images."
        )
    if d.image_folder is not None and d.data_path is None:
        raise ConfigError(
            "--image_folder is the root for --data_path's images; pass --data_path too, or drop it."
        )
    if m.bits not in (4, 8, 16):
        raise ConfigError(f"--bits {m.bits}: expected 4 (NF4), 8 (LLM.int8) or 16.")
    if m.quant_type not in ("nf4", "fp4"):
        raise ConfigError(f"--quant_type {m.quant_type}: expected nf4 or fp4.")
    if m.answer_head not in ANSWER_HEADS:
        raise ConfigError(
            f"--answer_head {m.answer_head!r}: expected one of {', '.join(ANSWER_HEADS)}. Leave it out for the LLM's "
            "own answer (generate)."
        )
    if m.answer_head == "classifier" and d.task == "caption":
        raise ConfigError(
            "--answer_head classifier with --task caption: stage 1 trains the LLM's vocabulary head on captions, which "
            "a 2-class head cannot write. Use --answer_head generate for stage 1, classifier in stage 2."
        )
    if m.int8_cpu_eval not in ("dequantize", "bitsandbytes"):
        raise ConfigError(f"--int8_cpu_eval {m.int8_cpu_eval}: expected dequantize or bitsandbytes.")
    if t.feature_cache not in ("auto", "off"):
        raise ConfigError(f"--feature_cache {t.feature_cache}: expected auto or off.")
    _check_projector(m.mm_projector_type)
    if d.data_dir is not None and not Path(d.data_dir).is_dir():
        raise ConfigError(
            f"--data_dir {d.data_dir}: no such folder. Expected a folder with real/ and fake/ (or metadata.csv); "
            "leave --data_dir out to use the synthetic benchmark."
        )
    if d.test_data_dir is not None and not Path(d.test_data_dir).is_dir():
        raise ConfigError(
            f"--test_data_dir {d.test_data_dir}: no such folder. Expected a folder with real/ and fake/ (or "
            "metadata.csv) to test on, or leave it out to test on the training source's own test split."
        )
    if d.test_data_dir is not None and d.holdout_manipulation:
        raise ConfigError(
            f"--test_data_dir with --holdout_manipulation {d.holdout_manipulation}: the other dataset is already the "
            "unseen test. Use one protocol per run: drop one of the two flags."
        )
    if d.data_path is not None and not Path(d.data_path).is_file():
        raise ConfigError(
            f"--data_path {d.data_path}: no such file. Expected a LLaVA conversation file (JSON list or JSONL)."
        )
    if d.rgb_root is not None and (d.data_path is None or not Path(d.rgb_root).is_dir()):
        raise ConfigError(
            f"--rgb_root {d.rgb_root}: {'no such folder' if d.data_path else 'without --data_path'}. It is the root of "
            "a DeepfakeBench dataset JSON's frame paths (its rgb_dir): pass both, e.g. --data_path "
            "dataset_json/FaceForensics++.json --rgb_root datasets/rgb."
        )
    try:
        parse_threshold_rule(t.threshold_rule)
    except UsageError as err:
        raise ConfigError(str(err)) from None
    if t.remove_unused_columns:
        raise ConfigError(
            "--remove_unused_columns True would drop the image/is_fake columns the collator needs; use False."
        )
    if t.min_lr >= t.learning_rate:
        raise ConfigError(
            f"--min_lr {t.min_lr} is not below --learning_rate {t.learning_rate}: training would stop at once. "
            "Lower --min_lr (0 disables the LR stop)."
        )
    if t.load_best_model_at_end:
        raise ConfigError(
            "--load_best_model_at_end is not supported: best/ is written by the plateau schedule instead."
        )


def _check_projector(name: str) -> None:
    try:
        resolve(name)
    except (KeyError, ValueError) as err:
        raise ConfigError(
            f"--mm_projector_type {name}: not a registered projector ({err}). Known: {available_projectors()}"
        ) from err
