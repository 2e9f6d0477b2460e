"""Interchangeable vision-to-language projectors, looked up by exact name or name pattern.

Importing this package registers every family (``catalog.py``, the one list of what exists); a
family's module (and torch) is imported only when one of its projectors is built, so names and
sizes are checked in no time.
"""

from llava_df.projectors import catalog  # noqa: F401  (registers every family)
from llava_df.projectors.registry import (
    PRESETS,
    available_projectors,
    count_parameters,
    create_projector,
    register_projector,
    resolve,
)

__all__ = [
    "PRESETS",
    "available_projectors",
    "count_parameters",
    "create_projector",
    "register_projector",
    "resolve",
]
