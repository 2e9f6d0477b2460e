"""Resolve the training command line into the run's frozen RunSpec (the real argument dataclasses).

How to call::

    spec = parse_spec(["--config", "tiny_lora_lowvram", "--lora_r", "8"])
    spec.model, spec.data, spec.training   # ModelArguments, DataArguments, TrainingArguments: every value final
    spec.strategy                          # resolved once: projector_only | lora | unfreeze_early
    spec.notes                             # what was renamed or derived, to log
    spec.explicit                          # {field: value} set by the YAML or the command line

The command line goes through the same pipeline as ``llava_df.spec.parse.parse_flags`` (which answers
usage errors before torch loads), on transformers' real parser; this module then adds what needs torch
(CUDA's presence, the installed loggers) and builds transformers' TrainingArguments.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import torch
from transformers.integrations import get_available_reporting_integrations

from llava_df.errors import ConfigError
from llava_df.spec.args import DataArguments, ModelArguments
from llava_df.spec.checks import validate
from llava_df.spec.flag_table import flag_table
from llava_df.spec.parse import parse_with
from llava_df.spec.run_spec import RunSpec
from llava_df.spec.strategy import check_completed, resolve_strategy
from llava_df.spec.training_args import TrainingArguments, build_parser


def parse_spec(argv: list[str] | None = None) -> RunSpec:
    """Parse ``argv`` (default ``sys.argv[1:]``) into the run's frozen spec; ConfigError with a fix on bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parsed = parse_with(argv, build_parser(), flag_table())
    values = parsed.values
    _check_loggers(values)
    notes = list(parsed.notes)
    launcher = _data_parallel_on_cpu(values)
    if launcher:
        notes.append(launcher)
    if not torch.cuda.is_available():
        values.dataloader_pin_memory = False  # pinning needs an accelerator; without one it only warns
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
    explicit = {k: next(getattr(o, k) for o in outputs if hasattr(o, k)) for k in sorted(parsed.explicit)}
    spec = RunSpec(
        model_args, data_args, training_args, strategy, tuple(notes), explicit, parsed.env, parsed.config_file,
        parsed.argv,
    )  # fmt: skip
    validate(spec)
    return spec


def _check_loggers(namespace) -> None:
    """--report_to names loggers that are installed (LLaVA's scripts pass wandb); transformers lists them."""
    wanted = namespace.report_to
    wanted = [w.strip() for w in wanted.split(",")] if isinstance(wanted, str) else list(wanted or [])
    available = get_available_reporting_integrations()
    missing = [w for w in wanted if w not in ("all", "none") and w not in available]
    if missing:
        raise ConfigError(
            f"--report_to {','.join(missing)}: not installed here (available: {', '.join(available) or 'none'}). "
            f"`pip install {' '.join(missing)}`, or pass --report_to tensorboard (or none)."
        )


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
