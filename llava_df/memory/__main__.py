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

from llava_df.errors import cli_entry
from llava_df.memory.budget import format_budget, search
from llava_df.memory.check import check_runs, format_check
from llava_df.memory.plan import format_plan, make_plan
from llava_df.memory.plan_flags import PlanArguments, parse, parse_size


@cli_entry
def main(argv: list[str]) -> dict:
    return run(parse(argv))


def run(parsed: tuple[PlanArguments, list[str]]) -> dict:
    """Plan, search or check as the flags say (parsed and checked by llava_df.memory.plan_flags.parse)."""
    opts, train_argv = parsed
    if opts.check is not None:
        rows = check_runs(opts.check)
        print(json.dumps(rows, indent=2) if opts.json else format_check(rows))
        return {"runs": rows}
    if opts.budget is not None:
        found = search(
            train_argv, budget_bytes=parse_size(opts.budget), margin=opts.margin, target=opts.target,
            top=opts.top, text_tokens=opts.text_tokens, verify=not opts.no_dry_run,
        )  # fmt: skip
        print(json.dumps(found, indent=2, default=str) if opts.json else format_budget(found, opts.budget))
        return found
    plan = make_plan(train_argv, target=opts.target, text_tokens=opts.text_tokens, dry=not opts.no_dry_run)
    if opts.json:
        print(json.dumps(plan, indent=2, default=str))
    else:
        print(format_plan(plan))
    return plan


if __name__ == "__main__":
    main(sys.argv[1:])
