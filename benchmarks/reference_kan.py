"""efficient-kan's KANLinear math, written out densely: the correctness oracle and the baseline.

Not registered as a projector. It builds the full (tokens, in, G + 2K) Cox-de Boor table, lets
autograd keep every level of it, and multiplies the (tokens, in * C) bases by the scaled spline
weights, exactly like efficient-kan (Blealtan/efficient-kan, ``src/efficient_kan/kan.py``):
same parameter names, buffer, init order and ``update_grid`` (including its double application
of ``spline_scaler``, kept here on purpose so tests can show the difference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ReferenceKANLinear(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        scale_noise: float = 0.1,
        scale_base: float = 1.0,
        scale_spline: float = 1.0,
        grid_eps: float = 0.02,
        grid_range: Sequence[float] = (-1.0, 1.0),
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.grid_size, self.spline_order = grid_size, spline_order
        self.scale_noise, self.scale_base, self.scale_spline = scale_noise, scale_base, scale_spline
        self.grid_eps = grid_eps
        h = (grid_range[1] - grid_range[0]) / grid_size
        grid = torch.arange(-spline_order, grid_size + spline_order + 1) * h + grid_range[0]
        self.register_buffer("grid", grid.expand(in_features, -1).contiguous())  # (in, G+2K+1)
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, grid_size + spline_order))
        self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5) * self.scale_base)
        with torch.no_grad():
            noise = (
                (torch.rand(self.grid_size + 1, self.in_features, self.out_features) - 1 / 2)
                * self.scale_noise
                / self.grid_size
            )
            k = self.spline_order
            self.spline_weight.copy_(self.curve2coeff(self.grid.T[k:-k], noise))
        nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5) * self.scale_spline)

    def b_splines(self, x: torch.Tensor) -> torch.Tensor:
        """Cox-de Boor on the whole knot vector: x (N, in) -> (N, in, G + K)."""
        grid = self.grid  # (in, G+2K+1)
        x = x.unsqueeze(-1)  # (N, in, 1)
        bases = ((x >= grid[:, :-1]) & (x < grid[:, 1:])).to(x.dtype)  # (N, in, G+2K)
        for k in range(1, self.spline_order + 1):
            left = (x - grid[:, : -(k + 1)]) / (grid[:, k:-1] - grid[:, : -(k + 1)])
            right = (grid[:, k + 1 :] - x) / (grid[:, k + 1 :] - grid[:, 1:(-k)])
            bases = left * bases[:, :, :-1] + right * bases[:, :, 1:]
        return bases.contiguous()

    def curve2coeff(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """lstsq of the bases at x (N, in) against y (N, in, out) -> (out, in, G + K)."""
        a = self.b_splines(x).transpose(0, 1)  # (in, N, C)
        b = y.transpose(0, 1)  # (in, N, out)
        return torch.linalg.lstsq(a, b).solution.permute(2, 0, 1).contiguous()

    @property
    def scaled_spline_weight(self) -> torch.Tensor:
        return self.spline_weight * self.spline_scaler.unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, self.in_features)
        base = F.linear(F.silu(x), self.base_weight)
        spline = F.linear(
            self.b_splines(x).view(x.size(0), -1), self.scaled_spline_weight.view(self.out_features, -1)
        )
        return (base + spline).view(*shape[:-1], self.out_features)

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor, margin: float = 0.01) -> None:
        """efficient-kan's update_grid, verbatim in effect (builds (N, in, out); scales twice)."""
        batch = x.size(0)
        splines = self.b_splines(x).permute(1, 0, 2)  # (in, N, C)
        orig_coeff = self.scaled_spline_weight.permute(1, 2, 0)  # (in, C, out)
        unreduced = torch.bmm(splines, orig_coeff).permute(1, 0, 2)  # (N, in, out)
        x_sorted = torch.sort(x, dim=0)[0]
        grid_adaptive = x_sorted[
            torch.linspace(0, batch - 1, self.grid_size + 1, dtype=torch.int64, device=x.device)
        ]
        uniform_step = (x_sorted[-1] - x_sorted[0] + 2 * margin) / self.grid_size
        grid_uniform = (
            torch.arange(self.grid_size + 1, dtype=x.dtype, device=x.device).unsqueeze(1) * uniform_step
            + x_sorted[0]
            - margin
        )
        grid = self.grid_eps * grid_uniform + (1 - self.grid_eps) * grid_adaptive
        k = self.spline_order
        grid = torch.cat(
            [
                grid[:1] - uniform_step * torch.arange(k, 0, -1, device=x.device).unsqueeze(1),
                grid,
                grid[-1:] + uniform_step * torch.arange(1, k + 1, device=x.device).unsqueeze(1),
            ],
            dim=0,
        )
        self.grid.copy_(grid.T)
        self.spline_weight.copy_(self.curve2coeff(x, unreduced))


class ReferenceKAN(nn.Module):
    """efficient-kan's ``KAN``: ReferenceKANLinear layers over ``widths`` (keys ``layers.{i}.*``)."""

    def __init__(self, widths: Sequence[int], grid_size: int = 5, spline_order: int = 3, **kwargs):
        super().__init__()
        self.layers = nn.ModuleList(
            ReferenceKANLinear(a, b, grid_size, spline_order, **kwargs)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
