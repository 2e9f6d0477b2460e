"""What a result was produced with: git commit + dirty flag, package versions, device (env.json).

How to call::

    info = run_environment()               # dict, JSON-serializable
    write_environment("outputs/run/env.json")
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from llava_df.cpu_info import cpu_model, cpu_native_bf16  # noqa: F401  (re-exported: records' callers)

PACKAGES = (
    "llava_df",
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "accelerate",
    "datasets",
    "tokenizers",
    "safetensors",
    "scikit-learn",
    "numpy",
)
REPO_ROOT = Path(__file__).resolve().parent.parent


def git_state(repo: str | os.PathLike = REPO_ROOT) -> dict:
    """{'commit': sha or None, 'dirty': bool or None}; None when not a git checkout or no git."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # Tracked changes and untracked files both mean the commit alone cannot reproduce the run.
    # results/ is what runs write (the sweep adds its records there while it runs): not code.
    status = (
        git("status", "--porcelain", "--untracked-files=normal", "--", ".", ":(exclude)results")
        if commit is not None
        else None
    )
    return {
        "commit": commit.strip() if commit else None,
        "dirty": bool(status.strip()) if status is not None else None,
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # e.g. llava_df run from a checkout, not pip-installed
            versions[name] = _module_version(name)
    return versions


def _module_version(name: str) -> str | None:
    try:
        return getattr(__import__(name), "__version__", None)
    except ImportError:
        return None


def device_info() -> dict:

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda_version=torch.version.cuda,
        )
    return info


def run_environment() -> dict:
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(),
        "packages": package_versions(),
        "device": device_info()
        | {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "cpu_native_bf16": cpu_native_bf16()},
    }


def write_environment(path: str | os.PathLike) -> dict:
    info = run_environment()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2))
    return info
