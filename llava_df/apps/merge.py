"""Merge a trained run into a standalone LLaVA checkpoint.

    python -m llava_df.apps.merge --run_dir outputs/run --output_dir outputs/run-merged [--dtype bfloat16] [--overwrite]

Rebuilds the base at 16 bits (LoRA trained on an INT8/NF4 base is merged into the unquantized
weights, as QLoRA does), loads projector + unfrozen layers + adapter, folds LoRA into the
weights (PEFT ``merge_and_unload``) and writes ``save_pretrained`` + the processor.

Loading the result:

- ``mlp2x_gelu`` and ``linear`` projectors are written as HF's own LlavaMultiModalProjector
  (``linear`` as linear_1 = W, identity activation, linear_2 = I), so plain
  ``LlavaForConditionalGeneration.from_pretrained(output_dir)`` loads the full model;
- any other projector (KAN, mlp3x_gelu, ...) has no HF class: its weights are also written to
  ``mm_projector.safetensors`` and ``config.json`` names it (``mm_projector_type``). Load with
  ``llava_df.model.build.load_merged(output_dir)``, which re-swaps it in; plain from_pretrained
  would leave HF's projector randomly initialised (and says so in its load report).

Interface::

    merge_run(run_dir, output_dir, *, torch_dtype=None) -> Path
    to_hf_projector(projector, config) -> LlavaMultiModalProjector | None
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from llava_df.errors import ArgumentParser, RunError, UsageError, cli_entry
from llava_df.model.anatomy import projector as projector_of
from llava_df.model.anatomy import unwrap
from llava_df.model.build import PROJECTOR_JSON_KEY
from llava_df.model.checkpoint import find_checkpoint, load_trained, read_checkpoint

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


def check_merge_target(run_dir, output_dir, *, overwrite: bool = False) -> None:
    """Refuse to write into the run itself or into a non-empty folder, unless ``overwrite``."""
    out, run = Path(output_dir).resolve(), Path(run_dir).resolve()
    if not str(output_dir).strip():
        raise UsageError(
            "--output_dir '': expected a folder for the merged checkpoint, e.g. outputs/run-merged."
        )
    if out == run or run in out.parents or out in run.parents:
        raise UsageError(
            f"--output_dir {output_dir} is inside (or holds) --run_dir {run_dir}: the merged 7B checkpoint would mix "
            f"with the run's files. Pick a folder next to it, e.g. {run_dir}-merged."
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UsageError(
            f"--output_dir {output_dir} exists and is not empty. Pick an empty or new folder, or pass --overwrite "
            "to write over what is there."
        )


def _write_detector_spec(ckpt: Path, out: Path) -> None:
    """What `python -m llava_df.apps.predict --model_dir` needs besides the weights: the run's data settings
    (prompt, template, answers, image aspect ratio) and its threshold, when the run chose one for these weights."""
    import shutil

    from llava_df.apps.predict import DETECTOR_FILE
    from llava_df.eval.threshold import THRESHOLD_FILE

    run_config = read_checkpoint(ckpt).get("run_config") or {}
    if not run_config.get("data"):
        return
    from llava_df.model.checkpoint import weights_identity

    identity = weights_identity(ckpt)
    spec = {
        "weights": identity,  # the trained weights merged in: threshold.json must be theirs
        "data": run_config["data"],
        "model_max_length": run_config["training"]["model_max_length"],
        "info": {
            "run": ckpt.parent.name,
            "projector": run_config["model"]["mm_projector_type"],
            "strategy": run_config.get("strategy"),
            "weights": f"merged from {ckpt.name}/",
        },
    }
    (out / DETECTOR_FILE).write_text(json.dumps(spec, indent=2))
    saved = ckpt.parent / THRESHOLD_FILE
    if saved.is_file():
        chosen = json.loads(saved.read_text())
        # The run's threshold belongs to these weights when it names them (hash), or, for runs from before the
        # hash was recorded, the same checkpoint folder.
        same = chosen.get("weights_sha256") == identity.get("sha256") if chosen.get("weights_sha256") else (
            chosen.get("weights") == ckpt.name
        )
        if same:
            shutil.copyfile(saved, out / THRESHOLD_FILE)


def merge_run(
    run_dir,
    output_dir,
    *,
    torch_dtype: torch.dtype | None = None,
    overwrite: bool = False,
    allow_base_mismatch: bool = False,
) -> Path:
    """Merge ``run_dir`` (a checkpoint folder, or a run with best/ or final/) into ``output_dir``."""
    check_merge_target(run_dir, output_dir, overwrite=overwrite)
    try:
        ckpt = find_checkpoint(run_dir)
    except FileNotFoundError as err:
        raise RunError(str(err)) from None
    model, processor = load_trained(ckpt, bits=16, torch_dtype=torch_dtype, allow_base_mismatch=allow_base_mismatch)
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
    _write_detector_spec(ckpt, out)
    summary = {"output_dir": str(out), PROJECTOR_JSON_KEY: getattr(base.config, PROJECTOR_JSON_KEY, None)}
    summary["load_with"] = "from_pretrained" if hf is not None else "llava_df.model.build.load_merged"
    print(json.dumps(summary))
    return out


@cli_entry
def main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="python -m llava_df.apps.merge", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--run_dir", required=True, help="A checkpoint folder, or a run folder with best/ or final/."
    )
    parser.add_argument("--output_dir", required=True, help="Where the standalone checkpoint is written.")
    parser.add_argument(
        "--dtype", default="auto", choices=list(DTYPES), help="Weights dtype (auto: the base checkpoint's)."
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Write into a non-empty --output_dir (never into the run itself).",
    )
    parser.add_argument(
        "--allow_base_mismatch", action="store_true", help="Merge even onto another base revision than trained on."
    )
    args = parser.parse_args(argv)
    merge_run(
        args.run_dir, args.output_dir, torch_dtype=DTYPES[args.dtype], overwrite=args.overwrite,
        allow_base_mismatch=args.allow_base_mismatch,
    )  # fmt: skip


if __name__ == "__main__":
    main()
