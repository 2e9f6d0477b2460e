"""``llava-df plan``: will this training config fit, and where does the memory go?

How to call (``python -m llava_df.memory plan ...`` is the same command)::

    llava-df plan --config configs/llava15_7b_12-16gb_lora.yaml
    llava-df plan --model_name_or_path llava-hf/llava-1.5-7b-hf --strategy lora --bits 8 \\
        --bf16 true --per_device_train_batch_size 4 --gradient_checkpointing true [--json]
    llava-df plan --config ... --budget 24GB [--margin 0.1] [--top 3]
    llava-df plan --check outputs/run1 outputs/run2 ...   # planned vs measured peak of finished runs, worst error
    llava-df plan --help                    # the planner's own flags, with their defaults

Every training flag is accepted (``llava-df train --help``); the planner's own are PlanArguments
below. No GPU, no weights, no network: shapes come from the config (``llava_df.memory.shapes``),
every size in it checked first. Without ``--model_max_length`` the plan takes the checkpoint's
(``shapes.checkpoint_max_length``: 2048 for LLaVA-1.5), not training's default of 512, and says so
in a note.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Literal

from llava_df.cli_args import parse_verb
from llava_df.errors import UsageError, cli_entry
from llava_df.memory.budget import parse_size, search
from llava_df.memory.check import check_runs, format_check
from llava_df.memory.plan import format_plan, make_plan

GIB = 2**30


@dataclass
class PlanArguments:
    """The planner's own flags; every other flag is a training flag (the run to plan)."""

    target: Literal["cuda", "cpu"] = field(default="cuda", metadata={"help": "Whose kernels to predict."})
    json: bool = field(default=False, metadata={"help": "Print the plan (or the --budget search) as JSON."})
    budget: str | None = field(
        default=None,
        metadata={"help": "Search for the fastest configurations that fit this memory, e.g. 24GB or 16000MB; "
                          "each is printed as a ready --config file."},
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


@cli_entry
def main(argv: list[str]) -> dict:
    if not argv or argv[0] != "plan":
        raise UsageError(
            f"expected the subcommand `plan`, got {argv[0] if argv else 'nothing'!r}. "
            "Run `llava-df plan --config <training YAML>` (or any training flags)."
        )
    opts, train_argv = parse_verb(
        PlanArguments, argv[1:], prog="llava-df plan", description=__doc__.split("\n")[0],
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
    if opts.check is not None:
        if train_argv:
            raise UsageError(
                f"--check reads finished runs; drop the training flags {' '.join(train_argv[:3])} ..."
            )
        rows = check_runs(opts.check)
        print(json.dumps(rows, indent=2) if opts.json else format_check(rows))
        return {"runs": rows}
    if opts.budget is not None:
        found = search(
            train_argv, budget_bytes=parse_size(opts.budget), margin=opts.margin, target=opts.target,
            top=opts.top, text_tokens=opts.text_tokens, verify=not opts.no_dry_run,
        )  # fmt: skip
        if opts.json:
            print(json.dumps(found, indent=2, default=str))
            return found
        print(
            f"{len(found['candidates'])} configurations fit {found['budget_bytes'] / GIB:g} GiB with a "
            f"{found['margin']:.0%} margin ({found['searched']} searched), fastest first (speed order: a heuristic, "
            "see llava_df/memory/budget.py); each is a ready --config file:\n"
        )
        for i, cand in enumerate(found["candidates"], 1):
            print(f"--- option {i} ---\n{cand['yaml']}")
        return found
    plan = make_plan(train_argv, target=opts.target, text_tokens=opts.text_tokens, dry=not opts.no_dry_run)
    if opts.json:
        print(json.dumps(plan, indent=2, default=str))
    else:
        print(format_plan(plan))
    return plan


if __name__ == "__main__":
    main(sys.argv[1:])
