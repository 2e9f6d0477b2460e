"""``llava-df evaluate``'s flags, checked before torch loads (llava_df.apps.evaluate scores the split).

How to call::

    args = parse(["--run_dir", "outputs/run", "--split", "heldout"])   # EvaluateArguments
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llava_df.cli_args import parse_verb
from llava_df.errors import UsageError

DESCRIPTION = "rebuild a finished run's model and data, score one split at the run's threshold rule."


@dataclass
class EvaluateArguments:
    """``llava-df evaluate``'s flags."""

    run_dir: str = field(metadata={"help": "Required: a finished run's output_dir (has run_config.json)."})
    weights: Literal["best", "final"] = field(
        default="best", metadata={"help": "Which saved weights to load."}
    )
    split: Literal["train", "val", "test", "heldout"] = field(
        default="test", metadata={"help": "The split to score (heldout: the held-out manipulation family)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Images per forward pass."})
    output: str | None = field(
        default=None,
        metadata={
            "help": "Where to write the metrics JSON (None: RUN_DIR/eval_<weights>_<split>.json); use it for a "
            "read-only run folder."
        },
    )
    drop_nonfinite_scores: bool = field(
        default=False,
        metadata={
            "help": "Leave samples with a NaN/inf score out of the metrics instead of stopping with an error."
        },
    )
    allow_base_mismatch: bool = field(
        default=False, metadata={"help": "Load the run's weights even onto another base revision."}
    )


def parse(argv: list[str]) -> EvaluateArguments:
    """The flags of ``argv``, every value checked (UsageError) before the run's model or data load."""
    args, _ = parse_verb(EvaluateArguments, argv, prog="llava-df evaluate", description=DESCRIPTION)
    if args.batch_size < 1:
        raise UsageError(f"--batch_size {args.batch_size}: expected an integer >= 1.")
    if not Path(args.run_dir).is_dir():
        raise UsageError(
            f"--run_dir {args.run_dir}: no such folder. Pass a finished training run's --output_dir."
        )
    if args.output is not None and Path(args.output).is_dir():
        raise UsageError(f"--output {args.output} is a folder: expected a .json file name.")
    return args
