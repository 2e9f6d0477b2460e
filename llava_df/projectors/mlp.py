"""LLaVA's projectors: ``identity``, ``linear`` and ``mlp{depth}x_gelu``.

Built as ``nn.Sequential`` exactly like LLaVA's ``build_vision_projector`` so a released
``mm_projector.bin`` (keys ``0.weight, 0.bias, 2.weight, 2.bias``) loads as is. HF's
``LlavaMultiModalProjector`` names the same two layers ``linear_1``/``linear_2``; the key
mapping for that lives here too.
"""

from __future__ import annotations

import re

from torch import nn


class IdentityProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        if in_dim != out_dim:
            raise ValueError(
                f"identity projector needs in_dim == out_dim, got {in_dim} -> {out_dim}; use 'linear' or 'mlp2x_gelu'."
            )

    def forward(self, x):
        return x


def build_identity(in_dim: int, out_dim: int) -> nn.Module:
    return IdentityProjector(in_dim, out_dim)


def build_linear(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Linear(in_dim, out_dim)


class MLPProjector(nn.Sequential):
    """Linear, then (depth-1) x [GELU, Linear]; LLaVA-1.5's ``mlp2x_gelu`` at depth 2."""

    def __init__(self, in_dim: int, out_dim: int, depth: int = 2):
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        super().__init__(*layers)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Accept HF LlavaMultiModalProjector keys (linear_1 -> 0, linear_2 -> 2, linear_k -> 2(k-1)).
        for key in [k for k in state_dict if k.startswith(prefix)]:
            m = re.fullmatch(r"linear_(\d+)\.(weight|bias)", key[len(prefix) :])
            if m:
                state_dict[f"{prefix}{2 * (int(m.group(1)) - 1)}.{m.group(2)}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def build_mlp(in_dim: int, out_dim: int, depth: int) -> nn.Module:
    return MLPProjector(in_dim, out_dim, depth)
