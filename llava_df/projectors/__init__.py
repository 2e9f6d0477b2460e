"""Interchangeable vision-to-language projectors, looked up by exact name or name pattern.

Importing this package registers every family; each family lives in its own module and is
imported explicitly below (no folder scan, so what exists is visible in one place).
"""

from . import mlp  # noqa: F401  (registers identity, linear, mlp{depth}x_gelu)
from .registry import PRESETS, available_projectors, create_projector, register_projector, resolve

__all__ = ["PRESETS", "available_projectors", "create_projector", "register_projector", "resolve"]
