"""``python -m llava_df.memory plan``: will this training config fit, and where does the memory go?

Usage::

    python -m llava_df.memory plan --config configs/llava15_7b_12-16gb_lora.yaml
    python -m llava_df.memory plan --model_name_or_path llava-hf/llava-1.5-7b-hf --strategy lora --bits 8 \\
        --bf16 true --per_device_train_batch_size 4 --gradient_checkpointing true [--json]
    python -m llava_df.memory plan --config ... --budget 24GB [--margin 0.1] [--top 3]

Every training flag is accepted (``python -m llava_df.train --help``); the planner's own:
``--target cuda|cpu`` (whose kernels to predict; default cuda), ``--json``, ``--budget SIZE``,
``--margin F``, ``--top N``, ``--text_tokens N`` (prompt + answer tokens per sample, default 48),
``--no_dry_run`` (closed form only). No GPU, no weights, no network: shapes come from the
config (``llava_df.memory.shapes``), every size in it checked first. Without ``--model_max_length``
the plan takes the checkpoint's (``shapes.checkpoint_max_length``: 2048 for LLaVA-1.5), not
training's default of 512, and says so in a note.
"""

from __future__ import annotations

import json
import sys

from llava_df.errors import ArgumentParser, UsageError, cli_entry
from llava_df.memory.plan import format_plan, make_plan

GIB = 2**30


def _planner_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m llava_df.memory plan", add_help=False)
    ap.add_argument("--target", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--budget", default=None)
    ap.add_argument("--margin", type=float, default=0.1)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--text_tokens", type=int, default=48)
    ap.add_argument("--no_dry_run", action="store_true")
    ap.add_argument("-h", "--help", action="store_true")
    return ap


@cli_entry
def main(argv: list[str]) -> dict:
    if not argv or argv[0] != "plan":
        raise UsageError(
            f"expected the subcommand `plan`, got {argv[0] if argv else 'nothing'!r}. "
            "Run `python -m llava_df.memory plan --config <training YAML>` (or any training flags)."
        )
    opts, train_argv = _planner_parser().parse_known_args(argv[1:])
    if opts.help:
        print(__doc__)
        return {}
    if opts.text_tokens < 1:
        raise UsageError(
            f"--text_tokens {opts.text_tokens}: expected a positive number of prompt + answer tokens."
        )
    if opts.top < 1:
        raise UsageError(f"--top {opts.top}: expected at least 1.")
    if opts.budget is not None:
        from llava_df.memory.budget import parse_size, search

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
