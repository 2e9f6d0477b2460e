"""``llava-df merge``'s flags, checked before torch loads (llava_df.apps.merge writes the checkpoint).

How to call::

    args = parse(["--run_dir", "outputs/run", "--output_dir", "outputs/run-merged"])   # MergeArguments
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llava_df.cli_args import parse_verb
from llava_df.errors import UsageError

DESCRIPTION = "a trained run as one standalone checkpoint (LoRA folded in), through the Detector."


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


def parse(argv: list[str]) -> MergeArguments:
    """The flags of ``argv``, every value checked (UsageError) before any weight loads."""
    args, _ = parse_verb(MergeArguments, argv, prog="llava-df merge", description=DESCRIPTION)
    if not Path(args.run_dir).is_dir():
        raise UsageError(
            f"--run_dir {args.run_dir}: no such folder. Pass a training run's --output_dir or a checkpoint."
        )
    check_merge_target(args.run_dir, args.output_dir, overwrite=args.overwrite)
    return args
