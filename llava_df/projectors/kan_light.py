"""``kan_light``: LLaVA's MLP with its GELU replaced by a learnable group-rational activation.

Linear(in, out) -> GroupRational(out, groups) -> Linear(out, out): the GR-KAN layer of the
Kolmogorov-Arnold Transformer (Yang & Wang 2024) at mlp2x_gelu's widths. It adds only
``groups * (m + 1 + n)`` parameters (80 at the defaults) and a few elementwise passes, so it
costs about what mlp2x_gelu costs, unlike the B-spline KAN (see results/projectors.md).

Names:
- ``kan_light``: 8 groups, degrees 5/4, GELU init;
- ``kan_light_g{groups}``: the same with ``groups`` groups (must divide out_dim).
Options (keyword arguments of ``create_projector``): ``init="gelu"|"identity"``,
``numerator_degree``, ``denominator_degree``.

The module is an ``nn.Sequential`` whose linear layers sit at mlp2x_gelu's keys (``0.*``,
``2.*``), so a LLaVA ``mm_projector`` state dict loads into it with ``strict=False`` (only the
activation's ``1.numerator``/``1.denominator`` are missing) and, with the GELU init, starts as
that MLP (up to the fit error, for pre-activations inside [-4, 4]).
"""

from __future__ import annotations

from torch import nn

from llava_df.projectors.catalog import KAN_LIGHT_GROUPS as DEFAULT_GROUPS
from llava_df.projectors.rational import GroupRational


class KanLightProjector(nn.Sequential):
    """Linear -> group-rational activation -> Linear; ``KanLightProjector(1024, 4096)``."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        groups: int = DEFAULT_GROUPS,
        init: str = "gelu",
        numerator_degree: int = 5,
        denominator_degree: int = 4,
    ):
        if out_dim % groups:
            raise ValueError(
                f"kan_light: groups={groups} must divide out_dim={out_dim} (each group shares one rational "
                f"function over out_dim/groups channels); pick a divisor, e.g. kan_light_g{_divisor_near(out_dim, groups)}."
            )
        super().__init__(
            nn.Linear(in_dim, out_dim),
            GroupRational(out_dim, groups, numerator_degree, denominator_degree, init),
            nn.Linear(out_dim, out_dim),
        )


def _divisor_near(n: int, k: int) -> int:
    return min(
        (d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - k), -d)
    )  # nearest, ties to the larger


def build_kan_light(
    in_dim: int, out_dim: int, *, init: str = "gelu", numerator_degree: int = 5, denominator_degree: int = 4
) -> nn.Module:
    return KanLightProjector(in_dim, out_dim, DEFAULT_GROUPS, init, numerator_degree, denominator_degree)


def build_kan_light_groups(
    in_dim: int,
    out_dim: int,
    groups: int,
    *,
    init: str = "gelu",
    numerator_degree: int = 5,
    denominator_degree: int = 4,
) -> nn.Module:
    return KanLightProjector(in_dim, out_dim, groups, init, numerator_degree, denominator_degree)
