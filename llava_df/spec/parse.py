"""Parse the training command line (+ ``--config`` YAML) once into a frozen RunSpec.

How to call::

    spec = parse_spec(["--config", "tiny_lora_lowvram", "--lora_r", "8"])
    spec.model, spec.data, spec.training   # ModelArguments, DataArguments, TrainingArguments: every value final
    spec.strategy                          # resolved once: projector_only | lora | unfreeze_early
    spec.notes                             # what was renamed or derived, to log
    spec.explicit                          # {field: value} set by the YAML or the command line

Precedence: schema defaults < ``--config`` YAML (a file, or a recipe shipped in llava_df/configs/
by name) < command-line flags. transformers' HfArgumentParser reads the three dataclasses; the YAML
is read by ``spec.yaml_file`` (checked values, sections). Spellings that transformers 5 removed
(``--warmup_ratio``, ``--evaluation_strategy``, ``--logging_dir``) are mapped with a note; an
unknown flag fails naming the closest known ones. Every derived value (the strategy's flags,
LLaVA's --version, checkpointing kwargs, data parallel on CPU, ...) is decided here, on argparse's
namespace, before the argument dataclasses are built: nothing changes them afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool
from transformers.integrations import get_available_reporting_integrations

from llava_df.errors import ConfigError
from llava_df.spec.args import DataArguments, ModelArguments, TrainingArguments
from llava_df.spec.checks import validate
from llava_df.spec.flags import RENAMED, SPECIAL, unknown_message
from llava_df.spec.llava_flags import resolve_llava_flags
from llava_df.spec.run_spec import RunSpec
from llava_df.spec.strategy import check_completed, complete_strategy_flags, resolve_strategy
from llava_df.spec.yaml_file import read_flag_file

RECIPES = Path(__file__).resolve().parents[1] / "configs"  # shipped with the package (wheel included)


# With bitsandbytes INT8, non-reentrant checkpointing (transformers' default) cannot free the
# input each int8 matmul keeps on its autograd ctx; reentrant can (tiny preset, batch 4: 9.4 vs
# 12.6 MiB of live activations+grads, 18.1 unchecked). For NF4 and 16-bit the two measure the
# same (+-2%), so transformers' default stays. Figures and command: results/gradient_checkpointing.md.
# Applied when checkpointing is on and no --gradient_checkpointing_kwargs were given.
def default_checkpointing_kwargs(bits: int) -> dict:
    return {"use_reentrant": bits == 8}


class _Parser(HfArgumentParser):
    # argparse exits on errors; raising lets train.main print one clean message and tests catch it.
    def error(self, message: str):
        raise ConfigError(f"{message}\nRun `llava-df train --help` for every flag.")


def build_parser() -> _Parser:
    parser = _Parser(
        (ModelArguments, DataArguments, TrainingArguments), prog="llava-df train", allow_abbrev=False
    )
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


def parse_spec(argv: list[str] | None = None) -> RunSpec:
    """Parse ``argv`` (default ``sys.argv[1:]``) into the run's frozen spec; ConfigError with a fix on bad input."""
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
        yaml_values = read_flag_file(config_file, flags)
        yaml_values = _apply_special(_rename(yaml_values, notes, f"{config_file}: "), notes, env)

    cli_pairs = _split_argv(argv, flags)
    cli_values = {name: value for name, value in cli_pairs}
    cli_values = _apply_special(_rename(cli_values, notes, "command line: "), notes, env)
    # Special flags consumed above (e.g. --logging_dir) must not reach argparse.
    argv = [tok for name, value in cli_values.items() for tok in _to_tokens(name, value)]

    parser.set_defaults(**{dests[k]: _to_default_string(v) for k, v in yaml_values.items()})
    values = parser.parse_args(argv)
    if values.bf16 and values.fp16:  # before TrainingArguments, whose own message is about hardware
        raise ConfigError(
            "--bf16 and --fp16 are both True; pick one (bf16 on Ampere+ GPUs, fp16 on older ones)."
        )
    _check_backends(values)
    explicit_names = {dests[k] for k in yaml_values} | {dests[k] for k in cli_values}
    notes += _derive(values, explicit_names)

    outputs = []
    for dtype in (ModelArguments, DataArguments, TrainingArguments):
        names = {f.name for f in dataclasses.fields(dtype) if f.init}
        try:
            outputs.append(dtype(**{k: v for k, v in vars(values).items() if k in names}))
        except ValueError as err:  # TrainingArguments.__post_init__ checks
            raise ConfigError(f"Invalid arguments: {err}") from err
    model_args, data_args, training_args = outputs
    try:
        check_completed(model_args)
        strategy = resolve_strategy(model_args)  # the one place a strategy is derived from flags
    except ValueError as err:
        raise ConfigError(str(err)) from None
    explicit = {k: next(getattr(o, k) for o in outputs if hasattr(o, k)) for k in sorted(explicit_names)}
    spec = RunSpec(
        model_args, data_args, training_args, strategy, tuple(notes), explicit, env, config_file,
        tuple(original_argv),
    )  # fmt: skip
    validate(spec)
    return spec


def _derive(values: argparse.Namespace, explicit: set[str]) -> list[str]:
    """Every derived setting, on argparse's namespace before anything is built; returns the notes."""
    notes = complete_strategy_flags(values, explicit)  # --strategy -> LLaVA's flags
    notes += resolve_llava_flags(values, explicit)  # --version -> template, task; .bin -> .safetensors
    if values.activation_checkpointing and not values.activation_checkpointing_kwargs:
        kwargs = default_checkpointing_kwargs(int(values.bits))
        values.activation_checkpointing_kwargs = values.gradient_checkpointing_kwargs = kwargs
        notes.append(
            f"--bits {values.bits}: checkpointing kwargs {kwargs} (see results/gradient_checkpointing.md)"
        )
    launcher = _data_parallel_on_cpu(values)
    if launcher:
        notes.append(launcher)
    if not torch.cuda.is_available():
        values.dataloader_pin_memory = False  # pinning needs an accelerator; without one it only warns
    if values.task == "caption":
        values.prediction_loss_only = True  # stage 1: loss on captions, nothing to score
    return notes


def _data_parallel_on_cpu(namespace) -> str | None:
    """Under a launcher (WORLD_SIZE > 1) on a machine without CUDA, train data parallel on gloo: set
    --use_cpu True (and say so). Without it transformers sets up no process group on CPU, so each
    process would train alone, the same run twice into the same folder."""
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
    missing = [
        w for w in wanted if w not in ("all", "none") and w not in get_available_reporting_integrations()
    ]
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
    """(--config's file, the other arguments). A name that is not a file is looked up among the recipes
    shipped in llava_df/configs (``--config sweep_tiny``), so an installed wheel runs them too."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    ns, rest = pre.parse_known_args(argv)
    if ns.config is None or Path(ns.config).is_file():
        return ns.config, rest
    shipped = RECIPES / (ns.config if ns.config.endswith((".yaml", ".yml")) else f"{ns.config}.yaml")
    if shipped.is_file():
        return str(shipped), rest
    names = sorted(p.stem for p in RECIPES.glob("*.yaml"))
    raise ConfigError(
        f"--config {ns.config}: no such file, and no shipped recipe of that name. Pass a YAML file, or one of: "
        f"{', '.join(names)}."
    )


def _split_argv(argv: list[str], flags: list[str]) -> list[tuple[str, list[str] | None]]:
    """['--a', '1', '--b=2', '--c'] -> [('a', ['1']), ('b', ['2']), ('c', [])]; unknown flags fail."""
    pairs: list[tuple[str, list[str]]] = []
    for tok in argv:
        if tok.startswith("--") and len(tok) > 2:
            name, eq, value = tok[2:].partition("=")
            name = name.replace("-", "_")
            if name not in flags:
                raise ConfigError(unknown_message(name, flags, where="command line"))
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
