"""Merge a trained run into a standalone LLaVA checkpoint.

    python -m llava_df.merge --run_dir outputs/run --output_dir outputs/run-merged [--dtype bfloat16]

Rebuilds the base at 16 bits (LoRA trained on an INT8/NF4 base is merged into the unquantized
weights, as QLoRA does), loads projector + unfrozen layers + adapter, folds LoRA into the
weights (PEFT ``merge_and_unload``) and writes ``save_pretrained`` + the processor.

Loading the result:

- ``mlp2x_gelu`` and ``linear`` projectors are written as HF's own LlavaMultiModalProjector
  (``linear`` as linear_1 = W, identity activation, linear_2 = I), so plain
  ``LlavaForConditionalGeneration.from_pretrained(output_dir)`` loads the full model;
- any other projector (KAN, mlp3x_gelu, ...) has no HF class: its weights are also written to
  ``mm_projector.safetensors`` and ``config.json`` names it (``mm_projector_type``). Load with
  ``llava_df.modeling.load_merged(output_dir)``, which re-swaps it in; plain from_pretrained
  would leave HF's projector randomly initialised (and says so in its load report).

Interface::

    merge_run(run_dir, output_dir, *, torch_dtype=None) -> Path
    to_hf_projector(projector, config) -> LlavaMultiModalProjector | None
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from .checkpointing import find_checkpoint, load_trained, read_checkpoint
from .llava_layout import projector as projector_of
from .llava_layout import unwrap
from .modeling import PROJECTOR_JSON_KEY

DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def merge_run(run_dir, output_dir, *, torch_dtype: torch.dtype | None = None) -> Path:
    """Merge ``run_dir`` (a checkpoint folder, or a run with best/ or final/) into ``output_dir``."""
    ckpt = find_checkpoint(run_dir)
    model, processor = load_trained(ckpt, bits=16, torch_dtype=torch_dtype)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    base = unwrap(model)
    dtype = base.get_input_embeddings().weight.dtype
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    proj = projector_of(base)
    hf = to_hf_projector(proj, base.config)
    if hf is None:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in proj.state_dict().items()},
            out / "mm_projector.safetensors",
        )
    else:
        base.model.multi_modal_projector = hf
    # One dtype for the whole checkpoint (trained parts were fp32); the projector file keeps fp32.
    base.to(dtype)
    base.config.llava_df_merged_from = {
        "checkpoint": str(ckpt),
        "strategy": read_checkpoint(ckpt).get("strategy"),
    }
    base.save_pretrained(out)
    processor.save_pretrained(out)
    summary = {"output_dir": str(out), PROJECTOR_JSON_KEY: getattr(base.config, PROJECTOR_JSON_KEY, None)}
    summary["load_with"] = "from_pretrained" if hf is not None else "llava_df.modeling.load_merged"
    print(json.dumps(summary))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llava_df.merge", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--run_dir", required=True, help="A checkpoint folder, or a run folder with best/ or final/."
    )
    parser.add_argument("--output_dir", required=True, help="Where the standalone checkpoint is written.")
    parser.add_argument(
        "--dtype", default="auto", choices=list(DTYPES), help="Weights dtype (auto: the base checkpoint's)."
    )
    args = parser.parse_args(argv)
    merge_run(args.run_dir, args.output_dir, torch_dtype=DTYPES[args.dtype])


if __name__ == "__main__":
    main()
