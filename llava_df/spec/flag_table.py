"""The training command line's flags, readable without importing torch (``llava-df train --help`` at once).

Every usage error of the training flags is answered from it too.

``llava-df train`` accepts transformers' TrainingArguments (the Trainer's ~120 flags), whose module
imports torch, accelerate and bitsandbytes: seconds before a typo could be pointed out. The table
holds what parsing needs of every flag (name, value type, choices, default, section) and the real
parser's ``--help`` text. It is made once per (llava_df's argument schema, transformers, torch) from
the real dataclasses, in this process when torch is already loaded or else in a child process, and
cached as JSON under ``$LLAVA_DF_CACHE/flags/``.

How to call::

    table = flag_table()          # FlagTable (cached); None only when it cannot be made (then parse for real)
    parser = table.parser()       # transformers' HfArgumentParser over light stand-ins of the same fields
    table.flags                   # every flag name, --no_X negations included
    table.help                    # the real parser's --help text

The stand-in fields keep what HfArgumentParser reads (bool, int, float, str, their Optional forms,
lists, choices from an Enum or Literal) and a default; a type it would read as text (a dict or a
config object passed as a path or JSON) stays text. tests/test_fast_verbs.py parses the same command
lines with both parsers and compares the values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import os
import subprocess
import sys
import types
import typing
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from llava_df.io import cache_root, write_text
from llava_df.spec.flags import CONFIG_HELP, TrainParser

FOLDER = "flags"
SECTIONS = ("model", "data", "training")  # the argument dataclasses, in the parser's order
# The files that define the schema: an edit to any of them (an editable install) makes a new table.
_SCHEMA_FILES = ("args.py", "training_args.py", "flag_table.py")


@dataclass(frozen=True)
class FlagTable:
    fields: dict[str, list[dict]]  # section -> [{"name", "type", "default", "help", "choices"}]
    help: str  # the real parser's --help
    kinds: dict[str, str]  # flag -> "list" | "dict": what a YAML value of the flag may be

    @property
    def flags(self) -> list[str]:
        """Every flag name (without dashes): the fields, the --no_X negation of each bool defaulting to True,
        and --config."""
        names = {"config", "help"}
        for spec in self.all_fields():
            names.add(spec["name"])
            if spec["type"] in ("bool", "bool?") and spec["default"] is True:
                names.add(f"no_{spec['name']}")
        return sorted(names)

    def all_fields(self) -> list[dict]:
        return [spec for section in SECTIONS for spec in self.fields[section]]

    def section_of(self, name: str) -> str | None:
        return next((s for s in SECTIONS if any(f["name"] == name for f in self.fields[s])), None)

    def dataclasses(self) -> tuple[type, ...]:
        """One light dataclass per section, fields typed so that HfArgumentParser reads them as it reads the real ones."""
        return tuple(
            dataclasses.make_dataclass(
                f"{section.title()}Flags", [_light_field(f) for f in self.fields[section]]
            )
            for section in SECTIONS
        )

    def parser(self, prog: str = "llava-df train") -> TrainParser:
        parser = TrainParser(self.dataclasses(), prog=prog, allow_abbrev=False)
        parser.add_argument("--config", default=None, help=CONFIG_HELP)
        return parser


def _light_type(spec: dict):
    kind = spec["type"]
    if kind == "choice":
        return Literal[tuple(spec["choices"])]
    base = {"bool": bool, "int": int, "float": float, "str": str, "list[str]": list[str], "list[int]": list[int],
            "list[float]": list[float]}[kind.rstrip("?")]  # fmt: skip
    return base | None if kind.endswith("?") else base


def _light_field(spec: dict) -> tuple:
    # metadata is handed to argparse as is (transformers sets nargs="?" and const on a few flags): keep it all
    default, meta = spec["default"], {**spec.get("metadata", {}), "help": spec["help"]}
    if isinstance(default, list):
        return (
            spec["name"],
            _light_type(spec),
            dataclasses.field(default_factory=lambda: list(default), metadata=meta),
        )
    return spec["name"], _light_type(spec), dataclasses.field(default=default, metadata=meta)


# ---- made from the real dataclasses ----------------------------------------------------------
def _type_spec(hint) -> tuple[str, list | None]:
    """(kind, choices) of a field's annotation, reduced exactly as HfArgumentParser._parse_dataclass_field reduces
    it (transformers 5.x): Union[X, str] -> X; Optional[X] -> X (the argument parsed, None its default), except
    Optional[bool]; an Enum or Literal -> its choices; a type argparse cannot read (dict, a config object) -> str."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        optional = type(None) in args
        if type(None) not in args:
            hint = args[0] if args[1] is str else args[1]
        elif bool not in args:
            hint = args[0] if isinstance(None, args[1]) else args[1]
        else:
            hint = bool
    origin = typing.get_origin(hint) or hint
    if origin is Literal:
        return "choice", list(typing.get_args(hint))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "choice", [m.value for m in hint]
    if hint is bool:
        return ("bool?" if optional else "bool"), None
    if origin is list:
        inner = (typing.get_args(hint) or (str,))[0]
        name = f"list[{inner.__name__}]" if inner in (str, int, float) else "list[str]"
        return name + ("?" if optional else ""), None
    if hint in (int, float, str):
        return hint.__name__ + ("?" if optional else ""), None
    return ("str?" if optional else "str"), None  # dict, a config object: given as a path or JSON text


def _json_metadata(field: dataclasses.Field) -> dict:
    """A field's metadata that HfArgumentParser passes to argparse (nargs, const, metavar, aliases...), as JSON."""
    return {
        k: v
        for k, v in field.metadata.items()
        if k != "help" and isinstance(v, bool | int | float | str | list)
    }


def _json_default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return None
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return json.dumps(value) if value else None
    if isinstance(value, list | tuple):
        return [v.value if isinstance(v, enum.Enum) else v for v in value]
    return value if isinstance(value, bool | int | float | str | type(None)) else str(value)


def build_table() -> dict:
    """The table as JSON, from the real argument dataclasses (imports transformers' TrainingArguments)."""
    # lazy: transformers' TrainingArguments imports torch; this runs once per schema, in a child process
    from llava_df.spec.training_args import build_parser, dataclass_types

    fields, kinds = {}, {}
    for section, dtype in zip(SECTIONS, dataclass_types(), strict=True):
        hints = typing.get_type_hints(dtype)
        rows = []
        for f in dataclasses.fields(dtype):
            if not f.init:
                continue
            kind, choices = _type_spec(hints[f.name])
            union = typing.get_origin(hints[f.name]) in (typing.Union, types.UnionType)
            origins = {
                typing.get_origin(m) or m
                for m in (typing.get_args(hints[f.name]) if union else (hints[f.name],))
            }
            if dict in origins:
                kinds[f.name] = "dict"
            elif list in origins:
                kinds[f.name] = "list"
            rows.append({"name": f.name, "type": kind, "choices": choices, "default": _json_default(f),
                         "help": str(f.metadata.get("help", "")), "metadata": _json_metadata(f)})  # fmt: skip
        fields[section] = rows
    return {"fields": fields, "kinds": kinds, "help": build_parser().format_help(),
            "torch": _torch_loaded()}  # fmt: skip


def _torch_loaded() -> bool:
    return sys.modules.get("torch") is not None  # None: made unimportable (a test), not loaded


def _schema_key() -> str:
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _SCHEMA_FILES:
        h.update((here / name).read_bytes())
    for package in ("transformers", "torch"):
        try:
            h.update(f"{package}={metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{package}=none".encode())
    return h.hexdigest()[:20]


_TABLE: FlagTable | None = None


def flag_table() -> FlagTable | None:
    """The table (see the module docstring); None when it cannot be made here (the caller then parses with
    the real parser, which reports whatever is wrong)."""
    global _TABLE
    if _TABLE is not None:
        return _TABLE
    path = cache_root() / FOLDER / f"train-{_schema_key()}.json"
    raw = None
    with contextlib.suppress(OSError, ValueError):  # no table yet, or a damaged one: made again
        raw = json.loads(path.read_text())
    if raw is None:
        if _torch_loaded():  # already paid for: no child process
            raw = build_table()
        else:
            done = subprocess.run(
                [sys.executable, "-m", "llava_df.spec.flag_table"], capture_output=True, text=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300,
            )  # fmt: skip
            if done.returncode != 0:
                return None
            raw = json.loads(done.stdout)
        if raw.get(
            "torch"
        ):  # a table made without torch has torch-dependent defaults (optim) wrong: not kept
            with contextlib.suppress(OSError):  # a read-only cache: made again next time
                write_text(path, json.dumps(raw))
    _TABLE = FlagTable(raw["fields"], raw["help"], raw["kinds"])
    return _TABLE


def _main() -> None:
    # A child process: its stdout is the table. transformers' and bitsandbytes' log lines go to stderr.
    print(json.dumps(build_table(), default=str))


if __name__ == "__main__":
    _main()
