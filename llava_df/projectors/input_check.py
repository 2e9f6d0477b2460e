"""The forward pre-hook every projector gets from ``create_projector``: one clear error for bad input."""

from __future__ import annotations

import torch
from torch import nn


def check_input(module: nn.Module, args: tuple, *, name: str, in_dim: int) -> None:
    """Forward pre-hook on every projector: one clear error for bad input, whatever the family.

    - width: a Linear's own error ("mat1 and mat2 shapes cannot be multiplied") names neither
      the projector nor the expected width;
    - non-finite values: raised for every projector, not only where they break the maths (the
      KAN's grid lookup): NaN/inf features come from the vision tower (fp16 overflow) and would
      otherwise surface steps later as a NaN loss and destroyed weights. Costs one pass over
      the input (nothing next to the projector's matmuls) and, on GPU, one sync per forward.
    """
    if not args or not isinstance(args[0], torch.Tensor):
        return
    x = args[0]
    if x.dim() == 0 or x.shape[-1] != in_dim:
        raise ValueError(
            f"Projector {name!r} expects input of shape (..., {in_dim}), got {tuple(x.shape)}: last dim "
            f"{x.shape[-1] if x.dim() else 'missing'} != in_dim {in_dim}. Build it with in_dim = the vision "
            "feature width (vision hidden size x number of feature layers)."
        )
    if x.is_floating_point() and not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(
            f"Projector {name!r} got {bad} non-finite values (NaN/inf) in its input of shape {tuple(x.shape)}; "
            "check the vision features (fp16 overflow in the vision tower?) before the projector."
        )
