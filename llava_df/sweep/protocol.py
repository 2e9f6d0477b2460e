"""An analysis protocol (protocols/*.yaml), read and checked before any run: what the tables apply."""

from __future__ import annotations

from pathlib import Path

import yaml

from llava_df.errors import UsageError


def load_protocol(path: Path) -> dict:
    try:
        protocol = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(
            f"--protocol {path}: unreadable ({type(err).__name__}). Pass protocols/<name>.yaml."
        ) from None
    need = (
        "reference",
        "candidates",
        "strategies",
        "margin",
        "alpha",
        "power",
        "target_mdd",
        "benchmark_seed",
    )
    missing = [k for k in need if k not in (protocol or {})]
    if missing:
        raise UsageError(f"--protocol {path}: missing {', '.join(missing)}; every protocol states them.")
    _check_optional(path, protocol)
    return protocol


def _number(value, low: float, high: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


# Protocol v3's optional keys: {key: (check, what is expected)}; a protocol without them reads as before.
OPTIONAL = {
    "sensitivity_margins": (lambda v: isinstance(v, list) and v and all(_number(m, 1e-9, 1) for m in v),
                            "a list of AUC margins in (0, 1], e.g. [0.01, 0.015, 0.02]"),
    "secondary": (lambda v: isinstance(v, list), "a list of endpoints, e.g. [family_auc, tpr_at_fpr_0.01]"),
    "max_last_eval_share": (lambda v: _number(v, 0, 1), "a share in [0, 1], e.g. 0.2"),
    "one_commit": (lambda v: isinstance(v, bool), "true or false"),
    "bootstrap_draws": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2, "an integer >= 2"),
    "bootstrap_seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    # strategy_mean: one primary comparison per candidate, its difference averaged over the strategies
    # (inference.compare_to_reference on [strategies, seeds, N]); the per-strategy ones become secondary
    "primary": (lambda v: v in ("per_strategy", "strategy_mean"), "per_strategy (the default) or strategy_mean"),
    "seeds": (lambda v: isinstance(v, list) and v and all(isinstance(k, int) and not isinstance(k, bool) for k in v),
              "a list of training seeds, e.g. [0, 1, 2]"),
    "lr_choice": (lambda v: isinstance(v, str) and v.endswith(".json"), "the grid's choice file, e.g. results/.../lr_choice.json"),
    # the one machine type every run of the study is made on: the CPU's model name as records hold it
    # (provenance.cpu_model, env.device.cpu_model); two "Intel Xeon" VM types differ 7x in bf16 speed
    "machine": (lambda v: isinstance(v, str) and v.strip() != "", 'a CPU model name, e.g. "Intel(R) Xeon(R) Processor"'),
}  # fmt: skip


def _check_optional(path: Path, protocol: dict) -> None:
    for key, (ok, expected) in OPTIONAL.items():
        if key in protocol and not ok(protocol[key]):
            raise UsageError(
                f"--protocol {path}: {key} is {protocol[key]!r}; expected {expected}. Fix the file."
            )
