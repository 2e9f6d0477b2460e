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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from llava_df.cli_args import parse_verb
from llava_df.errors import UsageError, cli_entry
from llava_df.eval.detector import CLASSIFIER_NOT_MERGED, SAVED_IF_ANY, Detector, answer_head_of_run
from llava_df.model.checkpoint import CHECKPOINT_JSON

DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


@dataclass
class MergeArguments:
    """``llava-df merge``'s flags."""

    run_dir: str = field(
        metadata={"help": "Required: a checkpoint folder, or a run folder with best/ or final/."}
    )
    output_dir: str = field(metadata={"help": "Required: where the standalone checkpoint is written."})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "Weights dtype (auto: the base checkpoint's)."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Write into a non-empty --output_dir (never into the run itself)."}
    )
    allow_base_mismatch: bool = field(
        default=False, metadata={"help": "Merge even onto another base revision than trained on."}
    )


@cli_entry
def main(argv: list[str]) -> None:
    args, _ = parse_verb(MergeArguments, argv, prog="llava-df merge", description=__doc__.split("\n")[0])
    merge_run(
        args.run_dir, args.output_dir, torch_dtype=DTYPES[args.dtype], overwrite=args.overwrite,
        allow_base_mismatch=args.allow_base_mismatch,
    )  # fmt: skip


if __name__ == "__main__":
    main()
