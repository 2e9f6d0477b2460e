"""Interchangeable vision-to-language projectors, looked up by exact name or name pattern.

Importing this package registers every family; each family lives in its own module and is
imported explicitly below (no folder scan, so what exists is visible in one place).
"""

# Import order = registration order = the order of PRESETS and of the CLI table.
# isort: off
from llava_df.projectors import mlp  # noqa: F401  (registers identity, linear, mlp{depth}x_gelu)
from llava_df.projectors import kan  # noqa: F401
from llava_df.projectors import kan_light  # noqa: F401  (registers kan_light, kan_light_g{groups})

# isort: on
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
