"""Read a ``--config`` YAML of flags, refusing what could expand or mislead before anything is used.

How to call (llava_df.spec.parse does)::

    values = read_flag_file(path, flags)     # {flag: value}, flat; ConfigError naming file, key and fix

The YAML holds flat keys (``lora_r: 32``) or sections (``lora: {r: 32}``, ``training:
{learning_rate: 1e-4}``); inside a section ``k`` also means ``<section>_k`` (so the users' QLoRA
YAML of seeds/003 reads as is). Each value is checked before it is used: no YAML aliases, a list
only where the flag takes one (``lora_target_modules: [q_proj, v_proj]``), a mapping only where it
takes a dict (``gradient_checkpointing_kwargs: {use_reentrant: false}``), each with a size cap.
"""

from __future__ import annotations

from typing import Any

import yaml

from llava_df.errors import ConfigError
from llava_df.spec.flags import RENAMED, unknown_message

# A flag file nests a section, a mapping flag (e.g. a DeepSpeed config) and a few levels in it.
MAX_YAML_DEPTH = 16


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, but a key given twice in one mapping is an error instead of "last one wins",
    and aliases (``*name``) are refused.

    Why no aliases: PyYAML shares an aliased node instead of copying it, but what reads the values
    afterwards (``str()``, ``",".join``) walks it once per reference, so nine levels of nine-fold
    aliases (a 1 KB "billion laughs" file) expand to 9**9 values: minutes and gigabytes, then a
    MemoryError. A flag file is a handful of values; writing one out costs a line, and nothing in
    configs/ uses them. An anchor (``&name``) alone expands nothing and stays legal.
    """

    def compose_node(self, parent, index):
        if parent is None:  # the document's root: a new file
            self._depth, self._top_key = 0, None
        if self._depth > MAX_YAML_DEPTH:  # PyYAML recurses per level: a deep file would end in RecursionError
            raise ConfigError(
                f"{getattr(self, 'name', 'config')}: line {self.peek_event().start_mark.line + 1}: key "
                f"{self._top_key!r} nests more than {MAX_YAML_DEPTH} levels deep; a flag file needs a few. Flatten it."
            )
        if self._depth == 1 and isinstance(index, yaml.ScalarNode):  # a value of the top-level mapping
            self._top_key = index.value
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            key = f"key {self._top_key!r}" if self._top_key is not None else "the file"
            raise ConfigError(
                f"{getattr(self, 'name', 'config')}: line {event.start_mark.line + 1}: {key} uses the YAML alias "
                f"*{event.anchor}; aliases are not supported in a flag file (nested ones expand to billions of "
                "values). Write the value out instead."
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"{getattr(self, 'name', 'config')}: key {key!r} is set twice (lines {seen[key] + 1} and "
                    f"{key_node.start_mark.line + 1}); keep one."
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _load_yaml(path: str) -> dict:
    try:
        with open(path) as f:
            loaded = yaml.load(f, Loader=_UniqueKeyLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err}). Fix the file; configs/ has examples.") from None
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: expected a mapping of flag: value at the top level, got {type(loaded).__name__}."
        )
    return loaded


def _flatten_yaml(raw: dict, flags: list[str], path: str, kinds: dict[str, str]) -> dict[str, Any]:
    """Flat keys stay; a section (a mapping under a key that is not a flag) is opened one level.
    Every value is checked against what its flag takes (:func:`_check_yaml_value`)."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in flags:
            items = [(key, value, key)]
        elif isinstance(value, dict):
            items = [
                (k if k in flags or f"{key}_{k}" not in flags else f"{key}_{k}", v, f"{key}.{k}")
                for k, v in value.items()
            ]
        else:
            items = [(key, value, key)]
        for k, v, written in items:
            if k not in flags:
                raise ConfigError(unknown_message(k, flags, where=f"{path}"))
            if k.startswith("no_") and k[3:] in flags:  # argparse's negative flag; a YAML has values
                raise ConfigError(f"{path}: write '{k[3:]}: false' instead of '{k}'.")
            if k in flat:
                raise ConfigError(f"{path}: '{k}' is set twice (flat and in a section); keep one.")
            _check_yaml_value(k, v, f"{path}: {written}" + (f" (--{k})" if written != k else ""), kinds)
            flat[k] = v
    return flat


# Our str flags that take a comma-separated list, which a YAML may write as a list.
COMMA_LIST_FLAGS = ("lora_target_modules", "resume_allow_changes")
# A YAML list is joined into one flag value: more than any flag needs (LoRA targets, loggers) and
# small enough that the join is instant.
MAX_YAML_LIST = 256
# Values inside a mapping flag (a DeepSpeed or FSDP config is a few dozen).
MAX_YAML_MAPPING_VALUES = 1000


def flag_kinds(kinds: dict[str, str]) -> dict[str, str]:
    """{flag: "list" | "dict"} for the flags whose YAML value may be a list or a mapping: ``kinds`` (from the
    argument dataclasses' field types, llava_df.spec.flag_table), our comma-list flags, and old spellings."""
    kinds = dict.fromkeys(COMMA_LIST_FLAGS, "list") | dict(kinds)
    for old, new in RENAMED.items():  # the old spelling takes what the new one does
        if new in kinds:
            kinds[old] = kinds[new]
    return kinds


def _check_yaml_value(flag: str, value: Any, where: str, kinds: dict[str, str]) -> None:
    """A list only where ``flag`` takes one (of plain values, at most MAX_YAML_LIST), a mapping only
    where it takes a dict (at most MAX_YAML_MAPPING_VALUES values); ConfigError naming the fix."""
    kind = kinds.get(flag)
    if isinstance(value, list | tuple | set):
        if kind != "list":
            raise ConfigError(f"{where}: got a list; --{flag} takes {_takes(flag, kind)}.")
        if len(value) > MAX_YAML_LIST:
            raise ConfigError(
                f"{where}: a list of {len(value)} values; --{flag} takes at most {MAX_YAML_LIST}. Shorten the list."
            )
        nested = next((v for v in value if isinstance(v, list | tuple | set | dict)), None)
        if nested is not None:
            raise ConfigError(
                f"{where}: a list holding a {type(nested).__name__}; --{flag} takes a list of plain values. "
                f"Write it flat, e.g. {flag}: [a, b]."
            )
    elif isinstance(value, dict):
        if kind != "dict":
            raise ConfigError(f"{where}: got a mapping; --{flag} takes {_takes(flag, kind)}.")
        _count_values(value, flag, where, budget=[MAX_YAML_MAPPING_VALUES])


def _takes(flag: str, kind: str | None) -> str:
    if kind == "list":
        return f"a list of plain values. Write e.g. {flag}: [a, b]"
    if kind == "dict":
        return f"a mapping. Write e.g. {flag}: {{key: value}}"
    return f"one value. Write e.g. {flag}: x"


def _count_values(value: Any, flag: str, where: str, budget: list[int]) -> None:
    """Walk a mapping flag's value, refusing it past ``budget`` values (stops there: never expands more)."""
    if isinstance(value, dict):
        children = value.values()
    elif isinstance(value, list | tuple | set):
        children = value
    else:
        return
    for child in children:
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError(
                f"{where}: more than {MAX_YAML_MAPPING_VALUES} values in the mapping of --{flag}. Put it in a JSON "
                f"file and pass its path (e.g. {flag}: config.json) if the flag takes one, or shorten it."
            )
        _count_values(child, flag, where, budget)


def read_flag_file(path: str, flags: list[str], kinds: dict[str, str]) -> dict[str, Any]:
    """The file's flags, flat and checked (see the module docstring); ``kinds``: FlagTable.kinds."""
    return _flatten_yaml(_load_yaml(path), flags, path, flag_kinds(kinds))
