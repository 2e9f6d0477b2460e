"""Every projector family, registered by exact name or name pattern: the one list of what exists.

Each entry names its builder as ``"module:function"`` (imported only when a projector is built, see
registry.py) and its parameter count as a formula, so that names and sizes are checked before torch
loads. Registration order is the order of PRESETS, of ``llava-df projectors`` and of the sweep.
"""

from __future__ import annotations

from llava_df.projectors.registry import register_projector

KAN_LIGHT_GROUPS = 8  # kan_light's rational groups (kan_light_g{groups} sets another count)
# bottleneck_h{hidden}_rational's rational groups over the hidden width (1 when 8 does not divide it)
BOTTLENECK_GROUPS = 8
# where kan_light's rational init is fitted to GELU (llava_df.projectors.rational)
GELU_FIT_RANGE = (-4.0, 4.0)


def _kan_light_params(i: int, o: int, groups: int = KAN_LIGHT_GROUPS) -> int:
    # Two Linear layers (as mlp2x_gelu) + per group a degree-5 numerator and a degree-4 denominator.
    return (i + 1) * o + (o + 1) * o + groups * (6 + 4)


# ---- LLaVA's own (llava_df/projectors/mlp.py) -------------------------------------------------
register_projector(
    "identity", "llava_df.projectors.mlp:build_identity",
    description="no projection (needs in_dim == out_dim)", params=lambda i, o: 0,
)  # fmt: skip
register_projector(
    "linear", "llava_df.projectors.mlp:build_linear", description="one Linear (LLaVA-1.0)",
    params=lambda i, o: (i + 1) * o,
)  # fmt: skip
register_projector(
    "mlp{depth}x_gelu", "llava_df.projectors.mlp:build_mlp",
    description="LLaVA MLP: Linear + (depth-1) x [GELU, Linear]", presets=("mlp2x_gelu",),
    params=lambda i, o, depth: (i + 1) * o + (depth - 1) * (o + 1) * o,
)  # fmt: skip

# ---- B-spline KAN (llava_df/projectors/kan.py) ------------------------------------------------
register_projector(
    "kan_h{hidden}_g{grid}_k{order}", "llava_df.projectors.kan:build_kan",
    description="B-spline KAN [in, hidden, out], grid size G, spline order K (efficient-kan layout)",
    presets=("kan_h256_g5_k3", "kan_h128_g5_k3", "kan_h64_g5_k3", "kan_h64_g3_k2"),
    # efficient-kan layout per edge: base weight, G+K spline coefficients, spline scaler.
    params=lambda i, o, hidden, grid, order: (i * hidden + hidden * o) * (grid + order + 2),
)  # fmt: skip

# ---- learnable-activation KAN (llava_df/projectors/kan_light.py) -------------------------------
register_projector(
    "kan_light", "llava_df.projectors.kan_light:build_kan_light",
    description="GR-KAN: Linear + group-rational activation (8 groups, GELU init) + Linear",
    params=_kan_light_params,
)  # fmt: skip
register_projector(
    "kan_light_g{groups}", "llava_df.projectors.kan_light:build_kan_light_groups",
    description="kan_light with {groups} rational groups", params=_kan_light_params,
)  # fmt: skip

# ---- the users' "Efficient KAN": a bottleneck MLP, and its learnable-activation twin (bottleneck.py) ---------
register_projector(
    "bottleneck_h{hidden}_silu", "llava_df.projectors.bottleneck:build_bottleneck_silu",
    description="bottleneck MLP: Linear(in, hidden) + SiLU + Linear(hidden, out) (the notes' 'Efficient KAN')",
    presets=("bottleneck_h64_silu",), params=lambda i, o, hidden: (i + 1) * hidden + (hidden + 1) * o,
)  # fmt: skip
register_projector(
    "bottleneck_h{hidden}_rational", "llava_df.projectors.bottleneck:build_bottleneck_rational",
    description="the bottleneck with a learnable group-rational activation (GR-KAN) in place of SiLU",
    presets=("bottleneck_h64_rational",),
    params=lambda i, o, hidden: (i + 1) * hidden + (hidden + 1) * o
    + (BOTTLENECK_GROUPS if hidden % BOTTLENECK_GROUPS == 0 else 1) * (6 + 4),
)  # fmt: skip
