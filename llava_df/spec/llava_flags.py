"""LLaVA's training flags (llava/train/train.py) with LLaVA's meaning, so its scripts run as typed.

How to call (cli.py does, after parsing)::

    notes = resolve_llava_flags(parsed)     # --version -> --conv_template, --task default; what was derived
    check_llava_flags(parsed)               # ConfigError for a value HF LLaVA cannot honour, with the reason
    processor, ratio, note = apply_image_aspect_ratio(processor, "pad", "llava-hf/llava-1.5-7b-hf")

What each flag does here:

- ``--version``: the conversation template, through the one registry of ``--conv_template``
  (``plain``, ``v1`` = ``vicuna_v1``, ``llava_llama_2``). ``plain`` also makes the run a caption
  task (stage 1) unless ``--task`` says otherwise.
- ``--vision_tower``, ``--mm_vision_select_layer``, ``--mm_vision_select_feature``: see
  ``llava_df.model.assemble`` and ``llava_df.model.build`` (HF's ``vision_feature_layer`` and
  ``vision_feature_select_strategy``).
- ``--image_aspect_ratio pad``: LLaVA-1.5's ``expand2square`` (pad to a square in the image
  processor's mean colour, then resize and crop) through transformers' LlavaImageProcessor
  ``do_pad``; ``square`` resizes as is.
- ``--mm_use_im_start_end`` / ``--mm_use_im_patch_token``: only False (HF LLaVA's behaviour).
- ``--lazy_preprocess``, ``--group_by_modality_length``, ``--is_multimodal``: accepted, with a note
  (samples are tokenized per batch, and every sample has an image).
"""

from __future__ import annotations

import logging
from pathlib import Path

from llava_df.data.conversation import CAPTIONS_NEED_DATA_PATH, canonical_name
from llava_df.errors import ConfigError
from llava_df.spec.args import TINY_PARTS

logger = logging.getLogger(__name__)

TASKS = ("detect", "caption")
ASPECT_RATIOS = ("pad", "square")
SELECT_FEATURES = {"patch": "default", "cls_patch": "full"}


def resolve_llava_flags(values, explicit: set[str]) -> list[str]:
    """Derived settings from LLaVA's flags, set on argparse's namespace ``values`` before the argument
    dataclasses are built; returns notes."""
    v, notes = values, []
    if v.version is not None:
        try:
            version = canonical_name(v.version)
        except KeyError as err:
            reason = str(err).strip("'\"")
            raise ConfigError(f"--version {v.version}: {reason}") from None
        if "conv_template" in explicit and canonical_name(v.conv_template) != version:
            raise ConfigError(
                f"--version {v.version} and --conv_template {v.conv_template} name different templates; they are the "
                "same setting (LLaVA's name and this project's). Keep one."
            )
        if v.conv_template != version:
            notes.append(f"--version {v.version} -> --conv_template {version}")
        v.conv_template = version
    if v.task is None:
        v.task = "caption" if canonical_name(v.conv_template) == "plain" else "detect"
        if v.task == "caption":
            notes.append(
                "--version plain: caption task (stage 1): free-text answers, loss on the caption tokens, no Real/Fake "
                "scores; pass --task detect to score Real/Fake answers with the plain layout"
            )
    adapter = v.pretrain_mm_mlp_adapter
    if adapter is not None and not Path(adapter).is_file() and Path(adapter).name == "mm_projector.bin":
        sibling = Path(adapter).with_suffix(".safetensors")
        if sibling.is_file():  # stage 1 here writes .safetensors; LLaVA's finetune scripts name the .bin
            notes.append(
                f"--pretrain_mm_mlp_adapter {adapter}: not there; using {sibling} (stage 1's output)"
            )
            v.pretrain_mm_mlp_adapter = str(sibling)
    for flag, on, meaning in (
        ("lazy_preprocess", v.lazy_preprocess, "samples are always tokenized per batch here"),
        (
            "group_by_modality_length",
            v.group_by_modality_length,
            "every sample has an image, nothing to group",
        ),
    ):
        if on:
            notes.append(f"--{flag} True accepted: {meaning}")
    return notes


def check_llava_flags(spec) -> None:
    m, d, t = spec.model, spec.data, spec.training
    for flag, value, why in (
        ("mm_use_im_start_end", m.mm_use_im_start_end, "HF LLaVA has no image start/end tokens"),
        ("mm_use_im_patch_token", m.mm_use_im_patch_token, "HF LLaVA has no image patch token"),
        ("freeze_mm_mlp_adapter", t.freeze_mm_mlp_adapter, "llava_df always trains the projector"),
    ):
        if value:
            raise ConfigError(
                f"--{flag} True is not supported: {why}. LLaVA-1.5's scripts pass False; pass --{flag} False."
            )
    if t.lora_weight_path:
        raise ConfigError(
            f"--lora_weight_path {t.lora_weight_path}: not supported (LLaVA's train.py never reads it either). To "
            "continue a run use --resume_from_checkpoint; to start from trained weights, merge them first."
        )
    if m.mm_patch_merge_type != "flat":
        raise ConfigError(
            f"--mm_patch_merge_type {m.mm_patch_merge_type}: only flat (LLaVA-1.5). LLaVA-1.6's spatial merge "
            "belongs to HF's LlavaNext, which llava_df does not build."
        )
    if m.mm_vision_select_feature is not None and m.mm_vision_select_feature not in SELECT_FEATURES:
        raise ConfigError(
            f"--mm_vision_select_feature {m.mm_vision_select_feature}: expected patch (LLaVA's default, CLS dropped) "
            "or cls_patch."
        )
    if d.image_aspect_ratio is not None and d.image_aspect_ratio not in ASPECT_RATIOS:
        extra = (
            " (anyres is LLaVA-1.6's tiling: HF LlavaNext, not built here)"
            if d.image_aspect_ratio == "anyres"
            else ""
        )
        raise ConfigError(
            f"--image_aspect_ratio {d.image_aspect_ratio}: expected pad (LLaVA-1.5: pad to a square in the mean "
            f"colour, then resize) or square (resize as is){extra}."
        )
    if d.task not in TASKS:
        raise ConfigError(
            f"--task {d.task}: expected detect (Real/Fake answers, scored) or caption (free-text answers, stage 1)."
        )
    if d.task == "caption" and not d.data_path:
        raise ConfigError(CAPTIONS_NEED_DATA_PATH)
    name = m.model_name_or_path
    if name == "tiny_clip":
        raise ConfigError(
            "--model_name_or_path tiny_clip is a vision tower. Pass --model_name_or_path tiny_llm --vision_tower tiny_clip "
            "to build a LLaVA from the tiny preset's parts, or --model_name_or_path tiny."
        )
    if name in TINY_PARTS and not m.vision_tower:
        raise ConfigError(
            f"--model_name_or_path {name} is a plain LLM: add --vision_tower tiny_clip to build a LLaVA from it (stage 1), "
            "or use --model_name_or_path tiny."
        )
    if m.vision_tower == "tiny_llm":
        raise ConfigError("--vision_tower tiny_llm is an LLM; the tiny preset's tower is tiny_clip.")
