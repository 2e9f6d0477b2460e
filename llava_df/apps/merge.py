"""``llava-df merge``: a trained run as one standalone checkpoint (LoRA folded in), through the Detector.

    llava-df merge --run_dir outputs/run --output_dir outputs/run-merged [--dtype bfloat16] [--overwrite]
    llava-df merge --help                   # every flag, with its default

Rebuilds the base at 16 bits (LoRA trained on an INT8/NF4 base is merged into the unquantized
weights, as QLoRA does), loads projector + unfrozen layers + adapter, folds LoRA into the weights
and writes ``save_pretrained`` + the processor + what the detector needs to score like the run
(llava_df.eval.detector.Detector.save_pretrained). Load it back with ``Detector.from_pretrained``;
``mlp2x_gelu`` and ``linear`` projectors also load with plain
``LlavaForConditionalGeneration.from_pretrained`` (llava_df.model.merged).

Interface::

    merge_run(run_dir, output_dir, *, torch_dtype=None) -> Path
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llava_df.apps.merge_flags import MergeArguments, check_merge_target, parse
from llava_df.errors import UsageError, cli_entry
from llava_df.eval.detector import CLASSIFIER_NOT_MERGED, SAVED_IF_ANY, Detector, answer_head_of_run
from llava_df.model.checkpoint import CHECKPOINT_JSON

DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
    weights = "best" if (Path(run_dir) / "best" / CHECKPOINT_JSON).is_file() else "final"
    if answer_head_of_run(run_dir, weights) == "classifier":  # before any weight loads
        raise UsageError(CLASSIFIER_NOT_MERGED.format(where=run_dir))
    detector = Detector.from_pretrained(
        run_dir, weights=weights, bits=16, threshold=SAVED_IF_ANY, torch_dtype=torch_dtype,
        allow_base_mismatch=allow_base_mismatch,
    )  # fmt: skip
    out = detector.save_pretrained(output_dir)
    summary = json.loads((out / "llava_df_detector.json").read_text())
    print(json.dumps({"output_dir": str(out), "mm_projector_type": detector.info.get("projector"),
                      "load_with": summary["load_with"], "threshold": detector.threshold}))  # fmt: skip
    return out


@cli_entry
def main(argv: list[str]) -> None:
    run(parse(argv))


def run(args: MergeArguments) -> None:
    """Merge as ``args`` say (parsed and checked by llava_df.apps.merge_flags.parse)."""
    merge_run(
        args.run_dir, args.output_dir, torch_dtype=DTYPES[args.dtype], overwrite=args.overwrite,
        allow_base_mismatch=args.allow_base_mismatch,
    )  # fmt: skip


if __name__ == "__main__":
    main()
