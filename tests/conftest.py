"""Test-suite environment: offline, private caches, and library deprecations raised by our calls fail.

- The hub is never reached (HF_HUB_OFFLINE and friends), as on CI.
- The tiny preset's cache (LLAVA_DF_CACHE) and datasets' cache live in a temporary folder for the
  session, so the tests neither read a stale ~/.cache/llava_df nor write into the user's home.
- A DeprecationWarning, PendingDeprecationWarning or FutureWarning whose nearest caller outside the
  warning library is llava_df (or a test) is an error: the next release that removes the API
  would break us, so we see it a release early. A library warning about its own internal calls
  stays a warning (the caller decides, e.g. PEFT reading transformers' is_gradient_checkpointing).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_key] = "1"
_CACHE = Path(tempfile.mkdtemp(prefix="llava_df_test_cache_"))
os.environ["LLAVA_DF_CACHE"] = str(_CACHE / "llava_df")  # subprocesses inherit it too
os.environ["HF_DATASETS_CACHE"] = str(_CACHE / "datasets")

REPO = Path(__file__).resolve().parent.parent
# Code that training never uses lives outside the package: benchmarks/ (the dense efficient-kan
# reference) and tools/ (the tiny tower's pretraining). Their tests import them from there.
sys.path[:0] = [str(REPO / "tools"), str(REPO / "benchmarks")]
OURS = (str(REPO / "llava_df") + os.sep, str(REPO / "tests") + os.sep, str(REPO / "benchmarks") + os.sep)
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_original_warn = warnings.warn


def _package(frame) -> str:
    return str(frame.f_globals.get("__name__", "")).split(".")[0]


def our_call_site(frame):
    """The frame that called into the warning's package, if it is ours (llava_df, tests, benchmarks)."""
    origin = _package(frame)
    while frame is not None and (_package(frame) == origin or _package(frame) in ("warnings", "functools")):
        frame = frame.f_back
    if frame is not None and frame.f_code.co_filename.startswith(OURS):
        return frame
    return None


def _warn(message, category=None, stacklevel=1, source=None, **kwargs):
    cls = type(message) if isinstance(message, Warning) else (category or UserWarning)
    if issubclass(cls, DEPRECATIONS):
        site = our_call_site(sys._getframe(1))
        if site is not None:
            where = f"{site.f_code.co_filename}:{site.f_lineno}"
            raise cls(f"{message} [raised by our call at {where}; move to the replacement API]")
    return _original_warn(message, category, stacklevel + 1, source, **kwargs)


def pytest_configure(config):
    warnings.warn = _warn


def pytest_unconfigure(config):
    warnings.warn = _original_warn
    shutil.rmtree(_CACHE, ignore_errors=True)
