"""Parse the training command line into the three argument dataclasses of ``llava_df.spec.args``.

How to call::

    parsed = parse_args(["--config", "configs/tiny_lora_lowvram.yaml", "--lora_r", "8"])
    parsed.model, parsed.data, parsed.training  # ModelArguments, DataArguments, TrainingArguments
    parsed.notes                                # what was renamed or derived, to log
    parsed.explicit                             # {field: value} set by the YAML or the command line

Precedence: schema defaults < ``--config`` YAML < command-line flags. The YAML holds flat keys
(``lora_r: 32``) or sections (``lora: {r: 32}``, ``training: {learning_rate: 1e-4}``); inside a
section ``k`` also means ``<section>_k`` (so the users' QLoRA YAML of seeds/003 reads as is).
Each value is checked before it is used: no YAML aliases, a list only where the flag takes one
(``lora_target_modules: [q_proj, v_proj]``), a mapping only where it takes a dict
(``gradient_checkpointing_kwargs: {use_reentrant: false}``), each with a size cap.
Spellings that transformers 5 removed (``--warmup_ratio``, ``--evaluation_strategy``,
``--logging_dir``) are mapped with a note; an unknown flag fails naming the closest known ones.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import functools
import json
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from llava_df.errors import ConfigError, UsageError
from llava_df.spec.args import DataArguments, ModelArguments, TrainingArguments
from llava_df.spec.ranges import check_ranges


# With bitsandbytes INT8, non-reentrant checkpointing (transformers' default) cannot free the
# input each int8 matmul keeps on its autograd ctx; reentrant can (tiny preset, batch 4: 9.4 vs
# 12.6 MiB of live activations+grads, 18.1 unchecked). For NF4 and 16-bit the two measure the
# same (+-2%), so transformers' default stays. Figures and command: results/gradient_checkpointing.md.
# Applied when checkpointing is on and no --gradient_checkpointing_kwargs were given.
def default_checkpointing_kwargs(bits: int) -> dict:
    return {"use_reentrant": bits == 8}


# Old or foreign spelling -> schema field. Each use is reported in ParsedArgs.notes.
RENAMED = {
    "evaluation_strategy": "eval_strategy",  # transformers 5 renamed it
    "warmup_ratio": "warmup_steps",  # transformers 5: warmup_steps < 1 is a fraction of all steps
    "gradient_checkpointing": "activation_checkpointing",  # deprecated alias in transformers 5.x
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
    "batch_size": "per_device_train_batch_size",  # seeds/003 YAML
    "num_epochs": "num_train_epochs",  # seeds/003 YAML
    "max_length": "model_max_length",  # seeds/003 YAML
}
# Flags that map to something other than one field (handled in _apply_special).
SPECIAL = ("logging_dir", "load_in_8bit", "load_in_4bit")


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


class _Parser(HfArgumentParser):
    # argparse exits on errors; raising lets train.main print one clean message and tests catch it.
    def error(self, message: str):
        raise ConfigError(f"{message}\nRun `python -m llava_df.train --help` for every flag.")


@dataclass
class ParsedArgs:
    model: ModelArguments
    data: DataArguments
    training: TrainingArguments
    notes: list[str] = field(default_factory=list)
    explicit: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    config_file: str | None = None
    argv: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The resolved configuration, JSON-serializable (saved as output_dir/run_config.json)."""
        return {
            "model": dataclasses.asdict(self.model),
            "data": dataclasses.asdict(self.data),
            "training": self.training.to_dict(),
            "explicit": _jsonable(self.explicit),
            "notes": list(self.notes),
            "env": dict(self.env),
            "config_file": self.config_file,
            "argv": list(self.argv),
        }


def build_parser() -> _Parser:
    parser = _Parser((ModelArguments, DataArguments, TrainingArguments), allow_abbrev=False)
    parser.add_argument(
        "--config",
        default=None,
        help="YAML of flags (flat keys or sections); command-line flags override it. See configs/.",
    )
    return parser


def known_flags(parser: argparse.ArgumentParser | None = None) -> list[str]:
    """Every flag name (without dashes) the command line accepts, old spellings included."""
    parser = parser or build_parser()
    # HfArgumentParser adds --a_b and --a-b; the underscore form is the canonical one.
    names = {
        s[2:] for a in parser._actions for s in a.option_strings if s.startswith("--") and "-" not in s[2:]
    }
    return sorted(names | set(RENAMED) | set(SPECIAL))


def parse_args(argv: list[str] | None = None) -> ParsedArgs:
    """Parse ``argv`` (default ``sys.argv[1:]``); raise ConfigError with a fix on bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    original_argv = list(argv)
    parser = build_parser()
    flags = known_flags(parser)
    dests = {s.lstrip("-").replace("-", "_"): a.dest for a in parser._actions for s in a.option_strings}
    notes: list[str] = []
    env: dict[str, str] = {}

    config_file, argv = _pop_config(argv)
    yaml_values: dict[str, Any] = {}
    if config_file is not None:
        yaml_values = _flatten_yaml(_load_yaml(config_file), flags, config_file)
        yaml_values = _apply_special(_rename(yaml_values, notes, f"{config_file}: "), notes, env)

    cli_pairs = _split_argv(argv, flags)
    cli_values = {name: value for name, value in cli_pairs}
    cli_values = _apply_special(_rename(cli_values, notes, "command line: "), notes, env)
    # Special flags consumed above (e.g. --logging_dir) must not reach argparse.
    argv = [tok for name, value in cli_values.items() for tok in _to_tokens(name, value)]

    parser.set_defaults(**{dests[k]: _to_default_string(v) for k, v in yaml_values.items()})
    namespace = parser.parse_args(argv)
    if namespace.bf16 and namespace.fp16:  # before TrainingArguments, whose own message is about hardware
        raise ConfigError(
            "--bf16 and --fp16 are both True; pick one (bf16 on Ampere+ GPUs, fp16 on older ones)."
        )
    _check_backends(namespace)
    launcher_note = _data_parallel_on_cpu(namespace)
    if launcher_note:
        notes.append(launcher_note)
    outputs = []
    for dtype in (ModelArguments, DataArguments, TrainingArguments):
        names = {f.name for f in dataclasses.fields(dtype) if f.init}
        try:
            outputs.append(dtype(**{k: v for k, v in vars(namespace).items() if k in names}))
        except ValueError as err:  # TrainingArguments.__post_init__ checks
            raise ConfigError(f"Invalid arguments: {err}") from err
    model_args, data_args, training_args = outputs

    explicit = {dests[k]: None for k in yaml_values} | {dests[k]: None for k in cli_values}
    for dataclass_obj in outputs:
        for k in explicit:
            if hasattr(dataclass_obj, k):
                explicit[k] = getattr(dataclass_obj, k)

    parsed = ParsedArgs(
        model_args, data_args, training_args, notes, explicit, env, config_file, original_argv
    )
    _resolve(parsed)
    validate(parsed)
    return parsed


def _data_parallel_on_cpu(namespace) -> str | None:
    """Under a launcher (WORLD_SIZE > 1) on a machine without CUDA, train data parallel on gloo: set
    --use_cpu True (and say so). Without it transformers sets up no process group on CPU, so each
    process would train alone, the same run twice into the same folder."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or namespace.use_cpu or torch.cuda.is_available():
        return None
    namespace.use_cpu = True
    return (
        f"launched as {world} processes on a machine without CUDA: --use_cpu True (data parallel on gloo, one "
        "run); pass --use_cpu True yourself to silence this"
    )


def _check_backends(namespace) -> None:
    """Flags that need a package (LLaVA's scripts pass --deepspeed and --report_to wandb): say which, up front."""
    from importlib.util import find_spec

    from transformers.integrations import get_available_reporting_integrations

    if namespace.deepspeed:
        namespace.deepspeed = _deepspeed_config(namespace.deepspeed, int(namespace.bits))
    if namespace.fsdp and int(namespace.bits) < 16:
        raise ConfigError(
            f"--fsdp with --bits {namespace.bits}: FSDP shards weights, and bitsandbytes INT8/NF4 weights cannot be "
            "sharded. Use data parallel (torchrun / accelerate launch) or DeepSpeed ZeRO-2 (--deepspeed zero2), or "
            "--bits 16 with FSDP."
        )
    if namespace.deepspeed and find_spec("deepspeed") is None:
        raise ConfigError(
            f"--deepspeed {namespace.deepspeed} needs DeepSpeed, which is not installed. `pip install deepspeed` (on a "
            "CUDA machine), or drop --deepspeed to train in one process."
        )
    wanted = namespace.report_to
    wanted = [w.strip() for w in wanted.split(",")] if isinstance(wanted, str) else list(wanted or [])
    missing = [w for w in wanted if w not in ("all", "none") and w not in get_available_reporting_integrations()]
    if missing:
        raise ConfigError(
            f"--report_to {','.join(missing)}: not installed here (available: "
            f"{', '.join(get_available_reporting_integrations()) or 'none'}). `pip install {' '.join(missing)}`, or pass "
            "--report_to tensorboard (or none)."
        )


DEEPSPEED_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "deepspeed"


def _deepspeed_config(value: str, bits: int) -> str:
    """--deepspeed zero2|zero3|<file.json>: the config file, checked against --bits before any weight loads."""
    path = DEEPSPEED_CONFIGS / f"{value}.json" if value in ("zero2", "zero3") else Path(value)
    if not path.is_file():
        raise ConfigError(
            f"--deepspeed {value}: no such file. Pass a DeepSpeed JSON, or zero2 / zero3 for configs/deepspeed/."
        )
    try:
        stage = json.loads(path.read_text()).get("zero_optimization", {}).get("stage", 0)
    except (ValueError, AttributeError) as err:
        raise ConfigError(f"--deepspeed {value}: {path} is not a DeepSpeed JSON config ({err}).") from None
    if stage == 3 and bits < 16:
        raise ConfigError(
            f"--deepspeed {value} (ZeRO stage 3) with --bits {bits}: ZeRO-3 shards every weight, and bitsandbytes "
            "INT8/NF4 weights cannot be sharded. Use --deepspeed zero2 (configs/deepspeed/zero2.json) with --bits "
            f"{bits}, or --bits 16 with ZeRO-3."
        )
    return str(path)


def _pop_config(argv: list[str]) -> tuple[str | None, list[str]]:
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    ns, rest = pre.parse_known_args(argv)
    if ns.config is not None and not Path(ns.config).is_file():
        raise ConfigError(
            f"--config {ns.config}: no such file. Pass a YAML file, e.g. configs/tiny_lora_lowvram.yaml."
        )
    return ns.config, rest


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


def _flatten_yaml(raw: dict, flags: list[str], path: str) -> dict[str, Any]:
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
                raise ConfigError(_unknown_message(k, flags, where=f"{path}"))
            if k.startswith("no_") and k[3:] in flags:  # argparse's negative flag; a YAML has values
                raise ConfigError(f"{path}: write '{k[3:]}: false' instead of '{k}'.")
            if k in flat:
                raise ConfigError(f"{path}: '{k}' is set twice (flat and in a section); keep one.")
            _check_yaml_value(k, v, f"{path}: {written}" + (f" (--{k})" if written != k else ""))
            flat[k] = v
    return flat


# Our str flags that take a comma-separated list, which a YAML may write as a list.
COMMA_LIST_FLAGS = ("lora_target_modules", "resume_allow_changes")
# A YAML list is joined into one flag value: more than any flag needs (LoRA targets, loggers) and
# small enough that the join is instant.
MAX_YAML_LIST = 256
# Values inside a mapping flag (a DeepSpeed or FSDP config is a few dozen).
MAX_YAML_MAPPING_VALUES = 1000


@functools.cache
def _flag_kinds() -> dict[str, str]:
    """{flag: "list" | "dict"} for the flags whose YAML value may be a list or a mapping, from the
    argument dataclasses' field types (``list[...]`` / ``dict`` in the annotation); every other
    flag takes one value."""
    kinds = dict.fromkeys(COMMA_LIST_FLAGS, "list")
    for dtype in (ModelArguments, DataArguments, TrainingArguments):
        hints = typing.get_type_hints(dtype)
        for f in dataclasses.fields(dtype):
            hint = hints.get(f.name)
            union = typing.get_origin(hint) in (typing.Union, types.UnionType)
            origins = {typing.get_origin(m) or m for m in (typing.get_args(hint) if union else (hint,))}
            if dict in origins:
                kinds[f.name] = "dict"
            elif list in origins:
                kinds[f.name] = "list"
    for old, new in RENAMED.items():  # the old spelling takes what the new one does
        if new in kinds:
            kinds[old] = kinds[new]
    return kinds


def _check_yaml_value(flag: str, value: Any, where: str) -> None:
    """A list only where ``flag`` takes one (of plain values, at most MAX_YAML_LIST), a mapping only
    where it takes a dict (at most MAX_YAML_MAPPING_VALUES values); ConfigError naming the fix."""
    kind = _flag_kinds().get(flag)
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


def _split_argv(argv: list[str], flags: list[str]) -> list[tuple[str, list[str] | None]]:
    """['--a', '1', '--b=2', '--c'] -> [('a', ['1']), ('b', ['2']), ('c', [])]; unknown flags fail."""
    pairs: list[tuple[str, list[str]]] = []
    for tok in argv:
        if tok.startswith("--") and len(tok) > 2:
            name, eq, value = tok[2:].partition("=")
            name = name.replace("-", "_")
            if name not in flags:
                raise ConfigError(_unknown_message(name, flags, where="command line"))
            pairs.append((name, [value] if eq else []))
        elif not pairs:
            raise ConfigError(f"Unexpected argument {tok!r}: flags look like --name value. See --help.")
        else:
            pairs[-1][1].append(tok)
    seen: dict[str, list[str]] = {}
    for name, values in pairs:  # repeated flag: the last one wins, as in argparse
        seen.pop(name, None)
        seen[name] = values
    return list(seen.items())


def _unknown_message(name: str, flags: list[str], where: str) -> str:
    close = difflib.get_close_matches(name, flags, n=4, cutoff=0.6)
    hint = f" Did you mean: {', '.join('--' + c for c in close)}?" if close else ""
    return f"{where}: unknown flag --{name}.{hint} Run `python -m llava_df.train --help` for every flag."


def _rename(values: dict[str, Any], notes: list[str], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        new = RENAMED.get(key)
        if new is None:
            out[key] = value
            continue
        if key == "warmup_ratio":
            ratio = float(value[0] if isinstance(value, list) else value)
            if not 0 <= ratio < 1:
                raise ConfigError(f"{where}--warmup_ratio {ratio}: expected a fraction in [0, 1).")
            value = [str(ratio)] if isinstance(value, list) else ratio
            notes.append(
                f"{where}--warmup_ratio {ratio} -> --warmup_steps {ratio} (transformers 5: a value < 1 is a fraction of all steps)"
            )
        else:
            notes.append(f"{where}--{key} -> --{new} (the name this version uses)")
        if new in values or new in out:
            raise ConfigError(f"{where}--{key} and --{new} are the same setting; keep only --{new}.")
        out[new] = value
    return out


def _apply_special(values: dict[str, Any], notes: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = dict(values)
    if "logging_dir" in out:
        raw = out.pop("logging_dir")
        path = raw[0] if isinstance(raw, list) else str(raw)
        env["TENSORBOARD_LOGGING_DIR"] = path
        notes.append(
            f"--logging_dir {path} -> env TENSORBOARD_LOGGING_DIR={path} (transformers 5 dropped the flag)"
        )
    for flag, bits in (("load_in_8bit", 8), ("load_in_4bit", 4)):
        if flag not in out:
            continue
        raw = out.pop(flag)
        on = string_to_bool(raw[0]) if isinstance(raw, list) and raw else raw in (True, [])
        if not on:
            notes.append(f"--{flag} False ignored: --bits decides the precision")
            continue
        given = out.get("bits")
        given = given[0] if isinstance(given, list) else given
        if given is not None and int(given) != bits:
            raise ConfigError(f"--{flag} True conflicts with --bits {given}; pass only --bits {bits}.")
        out["bits"] = [str(bits)] if isinstance(raw, list) else bits
        notes.append(f"--{flag} True -> --bits {bits}")
    return out


def _to_tokens(name: str, value: list[str]) -> list[str]:
    # "--flag=value": argparse would read a lone "-1e-4" as an unknown flag, not a negative number.
    return [f"--{name}={value[0]}"] if len(value) == 1 else [f"--{name}", *value]


def _to_default_string(value: Any) -> Any:
    """YAML value -> what argparse would have read from the command line, so it is type-checked."""
    if value is None:
        return None
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _resolve(parsed: ParsedArgs) -> None:
    """Derived settings, each reported in notes."""
    m, t = parsed.model, parsed.training
    from llava_df.model.strategies import (
        complete_strategy_flags,  # the one home of the strategy <-> flags rule
    )

    parsed.notes.extend(complete_strategy_flags(m, set(parsed.explicit)))
    from llava_df.spec.llava_flags import resolve_llava_flags

    resolve_llava_flags(parsed)
    if t.activation_checkpointing and not t.activation_checkpointing_kwargs:
        kwargs = default_checkpointing_kwargs(m.bits)
        t.activation_checkpointing_kwargs = t.gradient_checkpointing_kwargs = kwargs
        parsed.notes.append(
            f"--bits {m.bits}: checkpointing kwargs {kwargs} (see results/gradient_checkpointing.md)"
        )


def validate(parsed: ParsedArgs) -> None:
    """Cross-flag checks no single field can make; raise ConfigError naming the fix."""
    m, d, t = parsed.model, parsed.data, parsed.training
    check_ranges(parsed)
    from llava_df.spec.llava_flags import check_llava_flags

    check_llava_flags(parsed)
    if not str(t.output_dir).strip():
        raise ConfigError(
            f"--output_dir {t.output_dir!r}: expected a folder name; an empty name would write into the current "
            "folder. Pass e.g. --output_dir outputs/run."
        )
    if m.pretrain_mm_mlp_adapter is not None and not Path(m.pretrain_mm_mlp_adapter).is_file():
        raise ConfigError(
            f"--pretrain_mm_mlp_adapter {m.pretrain_mm_mlp_adapter}: no such file. Pass a stage-1 mm_projector.bin "
            "or .safetensors, or leave the flag out to start the projector from random weights."
        )
    if d.image_folder is not None and not Path(d.image_folder).is_dir():
        raise ConfigError(
            f"--image_folder {d.image_folder}: no such folder. Pass the root of --data_path's images."
        )
    if d.image_folder is not None and d.data_path is None:
        raise ConfigError(
            "--image_folder is the root for --data_path's images; pass --data_path too, or drop it."
        )
    if m.bits not in (4, 8, 16):
        raise ConfigError(f"--bits {m.bits}: expected 4 (NF4), 8 (LLM.int8) or 16.")
    if m.quant_type not in ("nf4", "fp4"):
        raise ConfigError(f"--quant_type {m.quant_type}: expected nf4 or fp4.")
    if m.num_unfreeze_early_layers and not m.lora_enable:  # only when --lora_enable False was given
        raise ConfigError(
            f"--num_unfreeze_early_layers {m.num_unfreeze_early_layers} trains the first layers and LoRA elsewhere "
            "(strategy unfreeze_early), but --lora_enable is False. Pass --lora_enable True, or "
            "--num_unfreeze_early_layers 0 for projector-only training."
        )
    from llava_df.model.strategies import resolve_strategy  # the one rule for which flags mean which strategy

    try:
        resolve_strategy(m)
    except (ValueError, KeyError) as err:
        raise ConfigError(str(err).strip("'\"")) from err
    _check_projector(m.mm_projector_type)
    if d.data_dir is not None and not Path(d.data_dir).is_dir():
        raise ConfigError(
            f"--data_dir {d.data_dir}: no such folder. Expected a folder with real/ and fake/ (or metadata.csv); "
            "leave --data_dir out to use the synthetic benchmark."
        )
    if d.data_path is not None and not Path(d.data_path).is_file():
        raise ConfigError(
            f"--data_path {d.data_path}: no such file. Expected a LLaVA conversation file (JSON list or JSONL)."
        )
    from llava_df.eval.threshold import parse_rule

    try:
        parse_rule(t.threshold_rule)
    except UsageError as err:
        raise ConfigError(str(err)) from None
    if t.remove_unused_columns:
        raise ConfigError(
            "--remove_unused_columns True would drop the image/is_fake columns the collator needs; use False."
        )
    if t.min_lr >= t.learning_rate:
        raise ConfigError(
            f"--min_lr {t.min_lr} is not below --learning_rate {t.learning_rate}: training would stop at once. "
            "Lower --min_lr (0 disables the LR stop)."
        )
    if t.load_best_model_at_end:
        raise ConfigError(
            "--load_best_model_at_end is not supported: best/ is written by the plateau schedule instead."
        )


def _check_projector(name: str) -> None:
    from llava_df.projectors import available_projectors, resolve

    try:
        resolve(name)
    except (KeyError, ValueError) as err:
        raise ConfigError(
            f"--mm_projector_type {name}: not a registered projector ({err}). Known: {available_projectors()}"
        ) from err


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values, default=lambda v: getattr(v, "value", str(v))))


@contextlib.contextmanager
def run_env(parsed: ParsedArgs, default_tensorboard_dir: str | None = None):
    """Export env settings mapped from flags (TENSORBOARD_LOGGING_DIR, default output_dir/runs)
    for the duration of the block; the previous values come back afterwards."""
    values = dict(parsed.env)
    if "TENSORBOARD_LOGGING_DIR" not in values and default_tensorboard_dir is not None:
        values["TENSORBOARD_LOGGING_DIR"] = default_tensorboard_dir
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield values
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
