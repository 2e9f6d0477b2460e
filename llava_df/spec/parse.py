"""Parse the training command line (+ ``--config`` YAML) into checked flag values, without torch.

How to call::

    parsed = parse_flags(["--config", "tiny_lora_lowvram", "--lora_r", "8"])   # ConfigError with a fix on bad input
    parsed.values          # argparse namespace: every flag, derived ones set, validated
    parsed.notes           # what was renamed or derived, to log
    parsed.explicit        # the flags the YAML or the command line set

``llava_df.spec.resolve.parse_spec`` turns the same command line into the run's frozen RunSpec with the
real argument dataclasses (transformers' TrainingArguments, hence torch). Both run ``parse_with`` below:
one pipeline, so a command line is refused here exactly when it would be refused there, only seconds
sooner (``llava-df train --help`` and every usage error come from here; see flag_table.py).

Precedence: schema defaults < ``--config`` YAML (a file, or a recipe shipped in llava_df/configs/
by name) < command-line flags. The YAML is read by ``spec.yaml_file`` (checked values, sections).
Spellings that transformers 5 removed (``--warmup_ratio``, ``--evaluation_strategy``,
``--logging_dir``) are mapped with a note; an unknown flag fails naming the closest known ones.
Every derived value (the strategy's flags, LLaVA's --version, checkpointing kwargs, ...) is decided
on argparse's namespace before the argument dataclasses are built: nothing changes them afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from transformers.hf_argparser import string_to_bool

from llava_df.cpu_info import cpu_model, cpu_native_bf16
from llava_df.errors import ConfigError
from llava_df.spec.args import DataArguments, ModelArguments
from llava_df.spec.checks import validate
from llava_df.spec.flag_table import FlagTable, flag_table
from llava_df.spec.flags import RENAMED, SPECIAL, unknown_message
from llava_df.spec.llava_flags import resolve_llava_flags
from llava_df.spec.run_spec import known_fields
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


@dataclass
class ParsedFlags:
    """A training command line, parsed, derived and validated (before any dataclass or weight)."""

    values: argparse.Namespace
    notes: list[str] = field(default_factory=list)
    explicit: set[str] = field(default_factory=set)  # dests set by the YAML or the command line
    env: dict[str, str] = field(default_factory=dict)
    config_file: str | None = None
    argv: tuple[str, ...] = ()


def known_flags(table: FlagTable) -> list[str]:
    """Every flag name (without dashes) the command line accepts, old spellings included."""
    return sorted(set(table.flags) | set(RENAMED) | set(SPECIAL))


def check_train_argv(argv: list[str]) -> list[str]:
    """``llava-df train``'s first step (llava_df.cli_args.run_verb): ``argv`` checked without torch, returned as is
    for llava_df.train.workflow.run to parse into the RunSpec."""
    parse_flags(argv)
    return list(argv)


def train_flag_names() -> list[str] | None:
    """Every flag ``llava-df train`` accepts (no torch), or None when the flag table cannot be made here."""
    table = flag_table()
    return None if table is None else known_flags(table)


def parse_with(argv: list[str], parser, table: FlagTable) -> ParsedFlags:
    """The one parsing pipeline (see the module docstring), on ``parser``: the real one or the table's."""
    original_argv = list(argv)
    flags = known_flags(table)
    notes: list[str] = []
    env: dict[str, str] = {}
    config_file, argv = _pop_config(argv)
    yaml_values: dict[str, Any] = {}
    if config_file is not None:
        yaml_values = read_flag_file(config_file, flags, table.kinds)
        yaml_values = _apply_special(_rename(yaml_values, notes, f"{config_file}: "), notes, env)
    cli_values = dict(_split_argv(argv, flags))
    cli_values = _apply_special(_rename(cli_values, notes, "command line: "), notes, env)
    # Special flags consumed above (e.g. --logging_dir) must not reach argparse.
    argv = [tok for name, value in cli_values.items() for tok in _to_tokens(name, value)]
    fields = {f["name"] for f in table.all_fields()}
    # --no_X sets X (HfArgumentParser's negation of a bool that defaults to True)
    dest = {name: name[3:] if name.startswith("no_") and name not in fields else name for name in flags}
    parser.set_defaults(**{dest[k]: _to_default_string(v) for k, v in yaml_values.items()})
    values = parser.parse_args(argv)
    if values.bf16 and values.fp16:  # before TrainingArguments, whose own message is about hardware
        raise ConfigError(
            "--bf16 and --fp16 are both True; pick one (bf16 on Ampere+ GPUs, fp16 on older ones)."
        )
    _check_backends(values)
    explicit = {dest[k] for k in yaml_values} | {dest[k] for k in cli_values}
    notes += derive(values, explicit)
    return ParsedFlags(values, notes, explicit, env, config_file, tuple(original_argv))


def derive(values: argparse.Namespace, explicit: set[str]) -> list[str]:
    """Every derived setting that needs no torch, on argparse's namespace before anything is built; the notes."""
    notes = complete_strategy_flags(values, explicit)  # --strategy -> LLaVA's flags
    notes += resolve_llava_flags(values, explicit)  # --version -> template, task; .bin -> .safetensors
    if values.activation_checkpointing and not values.activation_checkpointing_kwargs:
        kwargs = default_checkpointing_kwargs(int(values.bits))
        values.activation_checkpointing_kwargs = values.gradient_checkpointing_kwargs = kwargs
        notes.append(
            f"--bits {values.bits}: checkpointing kwargs {kwargs} (see results/gradient_checkpointing.md)"
        )
    if values.task == "caption":
        values.prediction_loss_only = True  # stage 1: loss on captions, nothing to score
    if values.bf16 and values.use_cpu and cpu_native_bf16() is False:
        notes.append(
            f"--bf16 on a CPU without AVX512-BF16 or AMX ({cpu_model()}): autocast emulates bf16, about 3x slower than "
            "fp32 on such a CPU (results/smol/xeon_2.80GHz/cost.md); --bf16 False runs faster (not bit-identical)"
        )
    return notes


def parse_flags(argv: list[str] | None = None, *, prog: str = "llava-df train") -> ParsedFlags | None:
    """Parse and check a training command line without importing torch (see the module docstring); ConfigError
    on bad input. None when the flag table cannot be made here: the real parse then checks everything."""
    argv = list(sys.argv[1:] if argv is None else argv)
    table = flag_table()
    if table is None:
        return None
    if any(a in ("-h", "--help") for a in argv):
        print(table.help.replace("llava-df train", prog, 1))
        raise SystemExit(0)
    parsed = parse_with(argv, table.parser(prog), table)
    values = vars(parsed.values)
    view = SimpleNamespace(
        model=ModelArguments(**known_fields(ModelArguments, values)),
        data=DataArguments(**known_fields(DataArguments, values)),
        training=SimpleNamespace(**{f["name"]: values[f["name"]] for f in table.fields["training"]}),
    )
    try:
        check_completed(view.model)
        resolve_strategy(view.model)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    validate(view)
    return parsed


def _check_backends(namespace) -> None:
    """Flags that need a package or a file (LLaVA's scripts pass --deepspeed): say which, up front. (--report_to's
    loggers are checked by llava_df.spec.resolve: transformers lists them only once torch is imported.)"""
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
    pre.add_argument("--config", action="append", default=[])
    ns, rest = pre.parse_known_args(argv)
    if len(ns.config) > 1:  # argparse's "the last one wins" would silently drop a whole file of flags
        raise ConfigError(
            f"--config given {len(ns.config)} times ({', '.join(ns.config)}); pass one YAML. To combine two, put the "
            "flags of one on the command line (they override the file's)."
        )
    ns.config = ns.config[0] if ns.config else None
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
