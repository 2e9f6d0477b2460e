"""The processor a run preprocesses with: ``--image_aspect_ratio`` (LLaVA-1.5's pad, or square) applied.

How to call::

    processor, ratio = run_processor(model_args, data_args)   # the checkpoint's processor, as the run uses it
    processor, ratio, note = apply_image_aspect_ratio(processor, "pad", "llava-hf/llava-1.5-7b-hf")
    image_aspect_ratio(processor) -> "pad" | "square"      # what a processor does with a non-square image
"""

from __future__ import annotations

import logging
from importlib.util import find_spec

from llava_df.model.build import load_processor

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------
def _pads(image_processor) -> bool:
    # Every transformers 5 image processor has a do_pad attribute; only LLaVA's pads to a square with it.
    return type(image_processor).__name__.startswith("LlavaImageProcessor")


def image_aspect_ratio(processor) -> str:
    """What ``processor`` does with a non-square image: pad (LlavaImageProcessor do_pad) or square."""
    ip = processor.image_processor
    return "pad" if _pads(ip) and getattr(ip, "do_pad", False) else "square"


def _llava_image_processor(image_processor, do_pad: bool):
    """The same preprocessing as ``image_processor`` (a CLIP one) in transformers' LLaVA class, which pads."""
    if find_spec("torchvision") is not None:
        from transformers import LlavaImageProcessor as cls  # lazy: needs torchvision, which may be absent
    else:  # the PIL backend gives the same pixels without torchvision
        from transformers import LlavaImageProcessorPil as cls  # lazy: the class to use without torchvision
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


def run_processor(model_args, data_args, processor=None, source: str = "the checkpoint"):
    """(processor, aspect ratio used): ``processor`` (default: the checkpoint's, llava_df.model.build) with
    --image_aspect_ratio applied; None keeps the processor's own, and says which that is."""
    processor = processor if processor is not None else load_processor(model_args)
    processor, ratio, note = apply_image_aspect_ratio(processor, data_args.image_aspect_ratio, source)
    if note:
        logger.warning("note: %s", note)
    return processor, ratio
