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
    return protocol
