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
import difflib
import importlib
import typing
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from llava_df import __version__
from llava_df.errors import UsageError

# The words HfArgumentParser's string_to_bool reads as a boolean value (case-insensitive).
TRUE_WORDS, FALSE_WORDS = frozenset({"yes", "true", "t", "y", "1"}), frozenset({"no", "false", "f", "n", "0"})


def bool_value(text: str) -> bool | None:
    """True / False for a word the dialect reads as a boolean (true/false, yes/no, t/f, y/n, 1/0), else None."""
    word = text.strip().lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def unknown_flag_message(name: str, own: list[str], others: list[str] = (), *, prog: str) -> str:
    """The message for an unknown ``--name``: the closest of the verb's ``own`` flags first (``plan --budgt`` ->
    --budget), then of the ``others`` it passes on (training's), each said as whose it is."""
    close_own = difflib.get_close_matches(name, own, n=3, cutoff=0.6)
    close_other = [
        c for c in difflib.get_close_matches(name, list(others), n=3, cutoff=0.75) if c not in close_own
    ]
    hints = [f"--{c}" for c in close_own] + [f"--{c} (a training flag)" for c in close_other if others]
    hint = f" Did you mean {' or '.join(hints[:3])}?" if hints else ""
    return f"unknown flag --{name}.{hint} Run `{prog} --help` for every flag."


class VerbParser(HfArgumentParser):
    """HfArgumentParser whose errors raise UsageError (printed by cli_entry) instead of exiting."""

    def error(self, message: str):
        raise UsageError(f"{message}. Run `{self.prog} --help` for every flag.")


def _bare_booleans(dataclass_type, argv: list[str]) -> list[str]:
    """``argv`` with ``True`` after each boolean flag that is followed by a positional argument.

    HfArgumentParser's boolean takes an optional value (``--flag [BOOL]``), so in ``--generate face.jpg``
    it would read ``face.jpg`` as that value and fail; with a positional argument in the verb the
    bare flag means True and the file is a positional.
    """
    hints = typing.get_type_hints(dataclass_type)
    names = [
        f.name for f in dataclasses.fields(dataclass_type) if f.init and hints[f.name] in (bool, bool | None)
    ]
    flags = {f"--{n}" for n in names} | {f"--{n.replace('_', '-')}" for n in names}
    end = argv.index("--") if "--" in argv else len(argv)  # after "--" every argument is positional
    out: list[str] = []
    for i, token in enumerate(argv):
        out.append(token)
        value = argv[i + 1] if i + 1 < end else None
        if token in flags and value is not None and not value.startswith("-") and bool_value(value) is None:
            out.append("True")
    return out


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
    ``description``: a docstring's first line does; its ``literal`` markup is shown plain.
    """
    description = description.replace("``", "") if description else description
    parser = VerbParser(dataclass_type, prog=prog, description=description, epilog=epilog, allow_abbrev=False)
    if positional is not None:
        name, nargs, help_ = positional
        parser.add_argument(name, nargs=nargs, help=help_, **({"default": []} if nargs == "*" else {}))
        argv = _bare_booleans(dataclass_type, argv)
    namespace, rest = parser.parse_known_args(argv)
    if rest and not allow_unknown:
        flag = next((t for t in rest if t.startswith("--")), None)
        if flag is not None:  # a typo: the closest of this verb's own flags, never another verb's
            own = [f.name for f in dataclasses.fields(dataclass_type) if f.init]
            raise UsageError(
                unknown_flag_message(flag[2:].split("=", 1)[0].replace("-", "_"), own, prog=prog)
            )
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    values = vars(namespace)
    fields = {f.name for f in dataclasses.fields(dataclass_type) if f.init}
    args = dataclass_type(**{k: v for k, v in values.items() if k in fields})
    if positional is not None:
        object.__setattr__(args, positional[0], values[positional[0]])
    return args, rest


def install_command(extra: str) -> str:
    """The command that installs llava_df's optional ``extra`` where this llava_df was installed from: the
    checkout's editable install (``pip install -e '.[demo]'``) or the package (``pip install 'llava_df[demo]'``)."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "llava_df").is_dir():
        return f"pip install -e '{checkout}[{extra}]'"
    return f"pip install 'llava_df[{extra}]'"


def run_verb(flags: str, run: str, argv: list[str], prefix: tuple[str, ...] = ()):
    """A verb in two steps: ``flags`` (``"module:function"``, a module that imports no torch) parses and checks
    ``[*prefix, *argv]``; only then is ``run``'s module imported (torch, transformers, the model) and its function
    called with what ``flags`` returned. ``--help``, ``--version`` and every usage error so answer at once.
    Errors end as one ``error:`` line (call it under ``llava_df.errors.cli_entry``)."""
    if "--version" in argv:
        print(f"llava_df {__version__}")
        raise SystemExit(0)
    parsed = _function(flags)([*prefix, *argv])
    return _function(run)(parsed)


def _function(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def help_requested(argv: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


__all__ = ["VerbParser", "argparse", "bool_value", "help_requested", "parse_verb"]
