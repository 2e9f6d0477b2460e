"""``llava-df evaluate``'s flags, checked before torch loads (llava_df.apps.evaluate scores the split).

How to call::

    args = parse(["--run_dir", "outputs/run", "--split", "heldout"])   # EvaluateArguments
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llava_df.cli_args import parse_verb
from llava_df.errors import UsageError

DESCRIPTION = "rebuild a finished run's model and data, score one split at the run's threshold rule."
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # a --test set's name


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
    # The test-set table (llava_df.apps.test_sets): --test NAME=SOURCE, repeatable.
    test: list[str] | None = field(
        default=None,
        metadata={
            "help": "NAME=SOURCE (repeatable): also score this test set (a folder, a JSON/JSONL or a DeepfakeBench JSON; "
            "its test split) beside the run's own test split: one row each, frame and video level."
        },
    )
    video_agg: Literal["mean", "max", "median"] = field(
        default="mean", metadata={"help": "--test table: a video's score from its frames' P(Fake)."}
    )
    bootstrap: int = field(
        default=1000, metadata={"help": "--test table: bootstrap draws of videos for the 95%% CIs."}
    )
    rgb_root: str | None = field(
        default=None,
        metadata={"help": "--test with a DeepfakeBench JSON: its frames' root (default: the run's)."},
    )

    tests: list[tuple[str, str]] = field(default_factory=list, init=False)  # --test's (name, source) pairs


def collect_tests(argv: list[str]) -> tuple[list[str], list[str]]:
    """(every ``--test`` value, ``argv`` without them): ``--test a=x --test b=y`` and ``--test a=x b=y`` alike
    (the flag parser's list field would keep only the last of repeated flags)."""
    values, rest, i = [], [], 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--test="):
            values.append(token.split("=", 1)[1])
        elif token == "--test":
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            continue
        else:
            rest.append(token)
        i += 1
    return values, rest


def parse_tests(values: list[str]) -> list[tuple[str, str]]:
    """``NAME=SOURCE`` values -> [(name, source)]; UsageError naming a bad or repeated one."""
    out: list[tuple[str, str]] = []
    for value in values:
        name, sep, source = value.partition("=")
        if not sep or not NAME.fullmatch(name) or not source:
            raise UsageError(
                f"--test {value!r}: expected NAME=SOURCE, e.g. celebdf=data/rgb/Celeb-DF-v2 (NAME: letters, digits, "
                "_ . + -; SOURCE: a folder, a JSON/JSONL or a DeepfakeBench dataset JSON)."
            )
        if name in {n for n, _ in out} | {"test", "heldout"}:
            raise UsageError(
                f"--test {value!r}: the name {name!r} is taken; give each test set its own name."
            )
        if not Path(source).exists():
            raise UsageError(f"--test {value!r}: {source} does not exist. Pass a folder or a JSON file.")
        out.append((name, source))
    return out


def parse(argv: list[str]) -> EvaluateArguments:
    """The flags of ``argv``, every value checked (UsageError) before the run's model or data load."""
    tests, argv = collect_tests(argv)  # repeatable --test
    args, _ = parse_verb(EvaluateArguments, argv, prog="llava-df evaluate", description=DESCRIPTION)
    args.tests = parse_tests(tests)
    if args.bootstrap < 0:
        raise UsageError(f"--bootstrap {args.bootstrap}: expected a number of draws >= 0 (0: no intervals).")
    if args.batch_size < 1:
        raise UsageError(f"--batch_size {args.batch_size}: expected an integer >= 1.")
    if not Path(args.run_dir).is_dir():
        raise UsageError(
            f"--run_dir {args.run_dir}: no such folder. Pass a finished training run's --output_dir."
        )
    if args.output is not None and Path(args.output).is_dir():
        raise UsageError(f"--output {args.output} is a folder: expected a .json file name.")
    return args
