"""RunSpec: one run, resolved once from the command line and YAML, read by everything after.

How to call::

    spec = parse_spec(["--config", "tiny_lora_lowvram", "--lora_r", "8"])   # llava_df.spec.resolve
    spec.strategy, spec.projector, spec.bits, spec.checkpointing, spec.task, spec.output_dir
    spec.model, spec.data, spec.training       # the argument dataclasses, every derived value filled in
    spec.to_json()                             # what run_config.json stores; resume compares it
    saved = SavedRun.read(run_dir)             # a finished run's spec, read back (predict, evaluate, merge)

Frozen: the model and data arguments are frozen dataclasses and the spec itself is frozen, so no
consumer can change a setting another one already read. ``training`` is transformers'
TrainingArguments, which the Trainer needs as that type; every value it holds is decided before it
is built (llava_df.spec.parse), and no llava_df code assigns to it afterwards (a test runs a
training and compares it before and after). A variant (the memory planner's --budget candidates)
is a new spec: ``dataclasses.replace``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from llava_df.errors import RunError
from llava_df.spec.args import DataArguments, ModelArguments

if TYPE_CHECKING:  # transformers' TrainingArguments imports torch; a RunSpec is only built once it is loaded
    from llava_df.spec.training_args import TrainingArguments


def _frozen_mapping(values: Mapping | None) -> Mapping:
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True)
class RunSpec:
    model: ModelArguments
    data: DataArguments
    training: TrainingArguments
    strategy: str  # projector_only | lora | unfreeze_early (llava_df.spec.strategy.STRATEGIES)
    notes: tuple[str, ...] = ()  # what was renamed or derived, logged when the run starts
    explicit: Mapping[str, Any] = field(
        default_factory=dict
    )  # {flag: value} set by the YAML or the command line
    env: Mapping[str, str] = field(
        default_factory=dict
    )  # environment a flag maps to (TENSORBOARD_LOGGING_DIR)
    config_file: str | None = None
    argv: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "explicit", _frozen_mapping(self.explicit))
        object.__setattr__(self, "env", _frozen_mapping(self.env))

    # ---- derived, read-only -----------------------------------------------------------------
    @property
    def projector(self) -> str:
        return self.model.mm_projector_type

    @property
    def bits(self) -> int:
        return int(self.model.bits)

    @property
    def task(self) -> str:
        return self.data.task

    @property
    def output_dir(self) -> Path:
        return Path(self.training.output_dir)

    @property
    def checkpointing(self) -> str:
        """off | reentrant | non-reentrant: gradient checkpointing as the run applies it."""
        t = self.training
        if not t.activation_checkpointing:
            return "off"
        return (
            "reentrant" if (t.activation_checkpointing_kwargs or {}).get("use_reentrant") else "non-reentrant"
        )

    @property
    def unfrozen_layers(self) -> int:
        """LLM decoder layers trained in full (loaded unquantized): N for unfreeze_early, else 0."""
        return self.model.num_unfreeze_early_layers if self.strategy == "unfreeze_early" else 0

    # ---- stored with the run ----------------------------------------------------------------
    def to_json(self) -> dict:
        """The resolved spec, JSON-serializable: run_config.json's core, what resume compares."""
        return {
            "model": dataclasses.asdict(self.model),
            "data": dataclasses.asdict(self.data),
            "training": self.training.to_dict(),
            "strategy": self.strategy,
            "explicit": _jsonable(dict(self.explicit)),
            "notes": list(self.notes),
            "env": dict(self.env),
            "config_file": self.config_file,
            "argv": list(self.argv),
        }

    @contextlib.contextmanager
    def environment(self, default_tensorboard_dir: str | None = None):
        """Export the environment the flags map to (TENSORBOARD_LOGGING_DIR, default
        ``default_tensorboard_dir``) for the block; the previous values come back afterwards."""
        values = dict(self.env)
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


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values, default=lambda v: getattr(v, "value", str(v))))


def known_fields(cls, values: Mapping) -> dict:
    """``values`` restricted to ``cls``'s fields: a run folder written by another llava_df version may
    hold a setting this one dropped (it cannot matter here) and lack one it added (its default)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return {k: v for k, v in values.items() if k in names}


@dataclass(frozen=True)
class SavedRun:
    """A run's spec as its run_config.json holds it: what predict, the demo, evaluate and merge need.

    ``training`` stays a plain mapping: rebuilding transformers' TrainingArguments would re-check the
    hardware (a --bf16 run cannot be described on a CPU machine), and nothing after training needs it.
    """

    model: ModelArguments
    data: DataArguments
    training: Mapping[str, Any]
    strategy: str
    folder: Path

    @classmethod
    def from_json(cls, config: Mapping, folder: str | os.PathLike) -> SavedRun:
        try:
            return cls(
                model=ModelArguments(**known_fields(ModelArguments, config["model"])),
                data=DataArguments(**known_fields(DataArguments, config["data"])),
                training=_frozen_mapping(config["training"]),
                strategy=config.get("strategy"),
                folder=Path(folder),
            )
        except (KeyError, TypeError) as err:
            raise RunError(
                f"{folder}/run_config.json is not a llava_df run config ({type(err).__name__}: {err}). Pass the "
                "--output_dir of a llava_df training run."
            ) from None

    @classmethod
    def read(cls, run_dir: str | os.PathLike) -> SavedRun:
        path = Path(run_dir) / "run_config.json"
        if not path.is_file():
            raise RunError(
                f"{run_dir} has no run_config.json: pass the --output_dir of a llava_df training run."
            )
        try:
            config = json.loads(path.read_text())
        except ValueError as err:
            raise RunError(f"{path} is unreadable ({err}); re-run training or restore it.") from None
        return cls.from_json(config, run_dir)

    @property
    def model_max_length(self) -> int:
        return int(self.training["model_max_length"])
