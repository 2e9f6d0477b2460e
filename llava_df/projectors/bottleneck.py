"""Bottleneck projectors: ``bottleneck_h{hidden}_silu`` and its learnable-activation twin ``bottleneck_h{hidden}_rational``.

The users' notes call a memory-lean projector "Efficient KAN": ``Linear(in, 64) -> activation -> Linear(64, out)``.
It is a narrow MLP, not a KAN: at LLaVA-1.5-7B's widths (1024 -> 4096) it has 0.33 M parameters against
mlp2x_gelu's 21.0 M (1.6%). The names here say what it is. ``bottleneck_h{hidden}_rational`` keeps the
bottleneck and replaces SiLU by kan_light's learnable group-rational activation (Kolmogorov-Arnold Transformer's
GR-KAN, llava_df.projectors.rational) over the hidden width: the learnable-activation question at the
bottleneck's size. (``kan_light`` itself stays LLaVA's MLP at full width with the rational activation.)

    create_projector("bottleneck_h64_silu", 1024, 4096)       # Linear(1024, 64) -> SiLU -> Linear(64, 4096)
    create_projector("bottleneck_h64_rational", 1024, 4096)   # Linear(1024, 64) -> GroupRational(64, 8) -> Linear
"""

from __future__ import annotations

from torch import nn

from llava_df.projectors.catalog import BOTTLENECK_GROUPS
from llava_df.projectors.rational import GroupRational


class BottleneckProjector(nn.Sequential):
    """Linear(in, hidden) -> activation -> Linear(hidden, out)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, activation: nn.Module):
        super().__init__(nn.Linear(in_dim, hidden), activation, nn.Linear(hidden, out_dim))


def build_bottleneck_silu(in_dim: int, out_dim: int, hidden: int) -> nn.Module:
    return BottleneckProjector(in_dim, out_dim, hidden, nn.SiLU())


def build_bottleneck_rational(
    in_dim: int,
    out_dim: int,
    hidden: int,
    *,
    init: str = "gelu",
    numerator_degree: int = 5,
    denominator_degree: int = 4,
) -> nn.Module:
    groups = (
        BOTTLENECK_GROUPS if hidden % BOTTLENECK_GROUPS == 0 else 1
    )  # one group when 8 does not divide it
    activation = GroupRational(hidden, groups, numerator_degree, denominator_degree, init)
    return BottleneckProjector(in_dim, out_dim, hidden, activation)
