"""One flag dialect for every ``llava-df`` verb: transformers' HfArgumentParser over a dataclass.

How to call (each verb does)::

    @dataclass
    class PredictArguments:
        run_dir: str | None = field(default=None, metadata={"help": "A training run's --output_dir."})
        generate: bool = field(default=False, metadata={"help": "Also generate the model's answer."})

    args, rest = parse_verb(PredictArguments, argv, prog="llava-df predict", positional=("images", "*", "..."))

The dialect is training's: ``--flag value`` (``--flag=value`` too, and ``--flag-name`` for
``--flag_name``); a boolean is ``--flag`` alone, or ``--flag True/False``; ``--help`` lists every
flag with its default. A bad command line raises UsageError (one ``error:`` line, exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from transformers import HfArgumentParser

from llava_df.errors import UsageError


class VerbParser(HfArgumentParser):
    """HfArgumentParser whose errors raise UsageError (printed by cli_entry) instead of exiting."""

    def error(self, message: str):
        raise UsageError(f"{message}. Run `{self.prog} --help` for every flag.")


def parse_verb(
    dataclass_type,
    argv: list[str],
    *,
    prog: str,
    description: str | None = None,
    positional: tuple[str, str, str] | None = None,
    allow_unknown: bool = False,
    epilog: str | None = None,
) -> tuple[Any, list[str]]:
    """(the dataclass filled from ``argv``, unknown arguments: [] unless ``allow_unknown``).

    ``positional``: (name, nargs, help) of one positional argument, set as an attribute of the result.
    """
    parser = VerbParser(dataclass_type, prog=prog, description=description, epilog=epilog, allow_abbrev=False)
    if positional is not None:
        name, nargs, help_ = positional
        parser.add_argument(name, nargs=nargs, help=help_)
    namespace, rest = parser.parse_known_args(argv)
    if rest and not allow_unknown:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    values = vars(namespace)
    fields = {f.name for f in dataclasses.fields(dataclass_type) if f.init}
    args = dataclass_type(**{k: v for k, v in values.items() if k in fields})
    if positional is not None:
        object.__setattr__(args, positional[0], values[positional[0]])
    return args, rest


def help_requested(argv: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


__all__ = ["VerbParser", "argparse", "help_requested", "parse_verb"]
