"""``llava-df plan``'s flags, checked before torch loads (llava_df.memory.__main__ plans).

The planner's own flags, then the training flags of the run to plan (llava_df.spec.parse, the same checks as
``llava-df train``).

How to call::

    opts, train_argv = parse(["--config", "llava15_7b_12-16gb_lora", "--budget", "24GB"])
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llava_df.cli_args import parse_verb, unknown_flag_message
from llava_df.errors import UsageError
from llava_df.spec.parse import parse_flags, train_flag_names

GIB = 2**30
DESCRIPTION = "will this training config fit, and where does the memory go?"


@dataclass
class PlanArguments:
    """The planner's own flags; every other flag is a training flag (the run to plan)."""

    target: Literal["cuda", "cpu"] = field(default="cuda", metadata={"help": "Whose kernels to predict."})
    json: bool = field(default=False, metadata={"help": "Print the plan (or the --budget search) as JSON."})
    budget: str | None = field(
        default=None,
        metadata={"help": "Search for the fastest configurations that fit this memory, e.g. 24GB, 24GiB or "
                          "16000MB. GB and GiB both mean 2**30 bytes here (a '24 GB' GPU holds 24 GiB); each "
                          "configuration is printed as a ready --config file after a one-screen summary."},
    )  # fmt: skip
    margin: float = field(default=0.1, metadata={"help": "--budget: the fraction of it kept free."})
    top: int = field(default=3, metadata={"help": "--budget: how many configurations to print."})
    text_tokens: int = field(default=48, metadata={"help": "Prompt + answer tokens per sample."})
    no_dry_run: bool = field(
        default=False, metadata={"help": "Closed form only: no dry run of the model on meta tensors."}
    )
    check: list[str] | None = field(
        default=None,
        metadata={"help": "Finished run folders (or their results.json, or sweep record files or folders): print "
                          "each run's planned against measured peak and the worst relative error."},
    )  # fmt: skip


def parse_size(text: str) -> int:
    """'24GB', '24 GiB', '12g', '24000MB', '24' (GiB) -> bytes. GB and GiB both mean 2**30 here: GPU memory
    is counted in binary units (a '24 GB' card holds 24 GiB), so the two are read alike, and said so."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([gGmMtT]?)(i?[bB])?\s*", str(text))
    if not match:
        raise UsageError(f"--budget {text!r}: expected a size such as 24GB, 12GiB or 16000MB.")
    value = float(match.group(1))
    unit = (match.group(2) or "g").lower()
    size = int(value * {"m": 2**20, "g": GIB, "t": 2**40}[unit])
    if size <= 0:
        raise UsageError(f"--budget {text!r}: expected a size above 0, such as 24GB.")
    return size


def parse(argv: list[str]) -> tuple[PlanArguments, list[str]]:
    """(the planner's flags, the training flags), every value checked (UsageError) before torch loads."""
    if not argv or argv[0] != "plan":
        raise UsageError(
            f"expected the subcommand `plan`, got {argv[0] if argv else 'nothing'!r}. "
            "Run `llava-df plan --config <training YAML>` (or any training flags)."
        )
    opts, train_argv = parse_verb(
        PlanArguments, argv[1:], prog="llava-df plan", description=DESCRIPTION,
        epilog="Every other flag is a training flag (llava-df train --help lists them), e.g. --config, "
        "--model_name_or_path, --strategy, --bits, --per_device_train_batch_size.",
        allow_unknown=True,
    )  # fmt: skip
    if opts.text_tokens < 1:
        raise UsageError(
            f"--text_tokens {opts.text_tokens}: expected a positive number of prompt + answer tokens."
        )
    if opts.top < 1:
        raise UsageError(f"--top {opts.top}: expected at least 1.")
    if not 0 <= opts.margin < 1:
        raise UsageError(f"--margin {opts.margin}: expected a fraction in [0, 1), such as 0.1 for 10%.")
    if opts.budget is not None:
        parse_size(opts.budget)
    if opts.check is not None:
        if train_argv:
            raise UsageError(
                f"--check reads finished runs; drop the training flags {' '.join(train_argv[:3])} ..."
            )
        missing = [p for p in opts.check if not Path(p).exists()]
        if missing:
            raise UsageError(
                f"--check {missing[0]}: no such file or folder. Pass run folders (their --output_dir)."
            )
        return opts, train_argv
    _check_unknown(train_argv)
    parse_flags(train_argv, prog="llava-df plan")
    return opts, train_argv


def _check_unknown(train_argv: list[str]) -> None:
    """A flag neither the planner's nor training's: suggest from the planner's own first (--budgt -> --budget)."""
    own = [f.name for f in dataclasses.fields(PlanArguments)]
    known = train_flag_names()
    if known is None:  # no flag table here: the real parse reports it
        return
    for token in train_argv:
        if token.startswith("--") and len(token) > 2:
            name = token[2:].split("=", 1)[0].replace("-", "_")
            if name not in known and name not in own:
                raise UsageError(unknown_flag_message(name, own, known, prog="llava-df plan"))
