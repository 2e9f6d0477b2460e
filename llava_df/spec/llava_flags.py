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

from llava_df.errors import ConfigError

logger = logging.getLogger(__name__)

TASKS = ("detect", "caption")
ASPECT_RATIOS = ("pad", "square")
SELECT_FEATURES = {"patch": "default", "cls_patch": "full"}


def resolve_llava_flags(parsed) -> list[str]:
    """Derived settings from LLaVA's flags; returns notes (also appended to parsed.notes)."""
    from llava_df.data.conversation import canonical_name

    m, d, t = parsed.model, parsed.data, parsed.training
    notes: list[str] = []
    if m.version is not None:
        try:
            version = canonical_name(m.version)
        except KeyError as err:
            reason = str(err).strip("'\"")
            raise ConfigError(f"--version {m.version}: {reason}") from None
        if "conv_template" in parsed.explicit and canonical_name(d.conv_template) != version:
            raise ConfigError(
                f"--version {m.version} and --conv_template {d.conv_template} name different templates; they are the "
                "same setting (LLaVA's name and this project's). Keep one."
            )
        if d.conv_template != version:
            notes.append(f"--version {m.version} -> --conv_template {version}")
        d.conv_template = version
    if d.task is None:
        d.task = "caption" if canonical_name(d.conv_template) == "plain" else "detect"
        if d.task == "caption":
            notes.append(
                "--version plain: caption task (stage 1): free-text answers, loss on the caption tokens, no Real/Fake "
                "scores; pass --task detect to score Real/Fake answers with the plain layout"
            )
    adapter = m.pretrain_mm_mlp_adapter
    if adapter is not None and not Path(adapter).is_file() and Path(adapter).name == "mm_projector.bin":
        sibling = Path(adapter).with_suffix(".safetensors")
        if sibling.is_file():  # stage 1 here writes .safetensors; LLaVA's finetune scripts name the .bin
            notes.append(
                f"--pretrain_mm_mlp_adapter {adapter}: not there; using {sibling} (stage 1's output)"
            )
            m.pretrain_mm_mlp_adapter = str(sibling)
    for flag, on, meaning in (
        ("lazy_preprocess", d.lazy_preprocess, "samples are always tokenized per batch here"),
        (
            "group_by_modality_length",
            t.group_by_modality_length,
            "every sample has an image, nothing to group",
        ),
    ):
        if on:
            notes.append(f"--{flag} True accepted: {meaning}")
    parsed.notes.extend(notes)
    return notes


def check_llava_flags(parsed) -> None:
    from llava_df.model.assemble import TINY_PARTS

    m, d, t = parsed.model, parsed.data, parsed.training
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
        from llava_df.data.load import CAPTIONS_NEED_DATA_PATH

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


# ---- images ---------------------------------------------------------------------------------
def _pads(image_processor) -> bool:
    # Every transformers 5 image processor has a do_pad attribute; only LLaVA's pads to a square with it.
    return type(image_processor).__name__.startswith("LlavaImageProcessor")


def image_aspect_ratio(processor) -> str:
    """What ``processor`` does with a non-square image: pad (LlavaImageProcessor do_pad) or square."""
    ip = processor.image_processor
    return "pad" if _pads(ip) and getattr(ip, "do_pad", False) else "square"


def _llava_image_processor(image_processor, do_pad: bool):
    """The same preprocessing as ``image_processor`` (a CLIP one) in transformers' LLaVA class, which pads."""
    from importlib.util import find_spec

    if find_spec("torchvision") is not None:
        from transformers import LlavaImageProcessor as cls
    else:  # the PIL backend gives the same pixels without torchvision
        from transformers import LlavaImageProcessorPil as cls
    keep = (
        "do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
        "do_normalize", "image_mean", "image_std", "do_convert_rgb",
    )  # fmt: skip
    settings = {k: getattr(image_processor, k) for k in keep if getattr(image_processor, k, None) is not None}
    return cls(**settings, do_pad=do_pad)


def apply_image_aspect_ratio(processor, wanted: str | None, source: str):
    """(processor, resolved value, note or None). ``wanted`` None keeps the checkpoint's own."""
    own = image_aspect_ratio(processor)
    if wanted is None or wanted == own:
        return processor, own, None
    if _pads(processor.image_processor):
        processor.image_processor.do_pad = wanted == "pad"
    else:
        processor.image_processor = _llava_image_processor(processor.image_processor, wanted == "pad")
    note = (
        f"--image_aspect_ratio {wanted}: {source}'s image processor does {own} "
        f"({'pads to a square' if own == 'pad' else 'resizes without padding'}); this run uses {wanted}. "
        "Keep the setting a checkpoint was trained with (LLaVA-1.5: pad) when evaluating it."
    )
    return processor, wanted, note
