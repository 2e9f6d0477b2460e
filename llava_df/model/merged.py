"""A trained detector as one standalone checkpoint (LoRA folded in), and loading it back.

How to call::

    save_merged(model, processor, out_dir)     # save_pretrained + the processor (+ mm_projector.safetensors)
    model, processor = load_merged(out_dir)    # the model with its projector class restored

Loading the result:

- ``mlp2x_gelu`` and ``linear`` projectors are written as HF's own LlavaMultiModalProjector
  (``linear`` as linear_1 = W, identity activation, linear_2 = I), so plain
  ``LlavaForConditionalGeneration.from_pretrained(output_dir)`` loads the full model;
- any other projector (KAN, mlp3x_gelu, ...) has no HF class: its weights are also written to
  ``mm_projector.safetensors`` and ``config.json`` names it (``mm_projector_type``); ``load_merged``
  (and ``llava_df.eval.detector.Detector.from_pretrained``) re-swaps it in; plain from_pretrained
  would leave HF's projector randomly initialised (and says so in its load report).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoProcessor, LlavaForConditionalGeneration
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector
from transformers.utils import logging as hf_logging

from llava_df import io
from llava_df.model.anatomy import projector as projector_of
from llava_df.model.anatomy import unwrap
from llava_df.model.build import PROJECTOR_JSON_KEY, swap_projector

PROJECTOR_FILE = "mm_projector.safetensors"


def to_hf_projector(projector: nn.Module, config) -> LlavaMultiModalProjector | None:
    """The same function as HF's LlavaMultiModalProjector, or None when it has no such form.

    Sets ``config.projector_hidden_act`` / ``multimodal_projector_bias`` to match.
    """
    name = getattr(projector, "projector_name", None)
    if name == "mlp2x_gelu":
        first, act, second = projector[0], projector[1], projector[2]
        if not (isinstance(act, nn.GELU) and act.approximate == "none" and first.bias is not None):
            return None
        config.projector_hidden_act, config.multimodal_projector_bias = (
            "gelu",
            True,
        )  # erf GELU, like nn.GELU()
        hf = LlavaMultiModalProjector(config)
        hf.linear_1.load_state_dict(first.state_dict())
        hf.linear_2.load_state_dict(second.state_dict())
        return hf
    if name == "linear" and isinstance(projector, nn.Linear) and projector.bias is not None:
        config.projector_hidden_act, config.multimodal_projector_bias = "linear", True  # identity
        hf = LlavaMultiModalProjector(config)
        hf.linear_1.load_state_dict(projector.state_dict())
        with torch.no_grad():  # y = I x + 0: exact in floating point
            hf.linear_2.weight.copy_(torch.eye(hf.linear_2.out_features))
            hf.linear_2.bias.zero_()
        return hf
    return None


def save_merged(
    model: nn.Module, processor, out_dir: str | os.PathLike, *, extra_config: dict | None = None
) -> str:
    """Fold LoRA into the weights (PEFT ``merge_and_unload``) and write one checkpoint + processor to
    ``out_dir``; returns how to load it: "from_pretrained" or "llava_df" (a projector HF has no class for)."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    base = unwrap(model)
    dtype = base.get_input_embeddings().weight.dtype
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    proj = projector_of(base)
    hf = to_hf_projector(proj, base.config)
    if hf is None:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in proj.state_dict().items()}, out / PROJECTOR_FILE
        )
    else:
        base.model.multi_modal_projector = hf
    # One dtype for the whole checkpoint (trained parts were fp32); the projector file keeps fp32.
    base.to(dtype)
    for key, value in (extra_config or {}).items():
        setattr(base.config, key, value)
    base.save_pretrained(out)
    processor.save_pretrained(out)
    io.follow_umask(out)  # safetensors writes 0600: a merged checkpoint is shared like any model
    return "from_pretrained" if hf is not None else "llava_df"


def load_merged(path: str | os.PathLike, *, torch_dtype: torch.dtype | None = None, device_map=None):
    """Load a ``save_merged`` output: (model, processor).

    mlp2x_gelu / linear projectors were stored as HF's LlavaMultiModalProjector, so plain
    ``LlavaForConditionalGeneration.from_pretrained(path)`` loads those as well. Other projectors
    (KAN, ...) are stored in ``mm_projector.safetensors`` next to the model and need this
    function: it loads the model, then swaps in ``config.mm_projector_type`` with those weights.
    """
    path = Path(path)
    weights = path / PROJECTOR_FILE
    verbosity = hf_logging.get_verbosity()
    if weights.is_file():  # HF's projector keys are missing by design: silence that load report
        hf_logging.set_verbosity_error()
    try:
        model = LlavaForConditionalGeneration.from_pretrained(
            path, dtype=torch_dtype or "auto", device_map=device_map
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    name = getattr(model.config, PROJECTOR_JSON_KEY, None)
    if weights.is_file():
        if name is None:
            raise ValueError(
                f"{path} has mm_projector.safetensors but its config.json names no {PROJECTOR_JSON_KEY}."
            )
        swap_projector(model, name, weights=weights)
    return model.eval(), AutoProcessor.from_pretrained(path)
