"""B-spline KAN projector ``kan_h{hidden}_g{grid}_k{order}``: widths [in, hidden, out].

Each layer is efficient-kan's ``KANLinear`` (same parameters, buffer, init and state-dict keys,
``enable_standalone_scale_spline=True``, SiLU base), computed by the memory-lean autograd
Function of ``bspline.py``. On top of efficient-kan:

- input normalization (default): a LayerNorm *without* affine parameters, fused into the layer
  (saves nothing extra for backward), mapping +-``norm_span`` standard deviations of each token
  onto ``grid_range``. CLIP features are far outside [-1, 1]; the hidden activations drift
  during training, so the second layer normalizes its input the same way (``hidden_norm``).
  Adds no parameters.
- ``update_grid(x)``: efficient-kan's quantile grid, but the unscaled coefficients are refit
  per input dimension from (C, C) Gram matrices, so the layer keeps its function on x (up to
  the least-squares error of the new knots; efficient-kan scales the refit curve twice).
- ``regularization_loss()``: the KAN paper's L1 + entropy of the edge activations, on a sample
  of ``reg_tokens`` tokens recorded by the last training forward (cost ~ tokens x in x out per
  layer: ~1.6 s forward+backward on 2 CPU cores at 64 tokens for [1024, 256, 4096]).
- ``grid_coverage(x)``: fraction of each layer's inputs inside its grid.

Measured in benchmarks/bench_kan.py (results/kan_bench.md): forward+backward time vs
mlp2x_gelu, bytes saved for backward, grid coverage on CLIP-like features.

    >>> proj = create_projector("kan_h256_g5_k3", 1024, 4096)            # 13,107,200 parameters
    >>> proj = create_projector("kan_h64_g3_k2", 1024, 4096, input_norm="none", grid_range=(-3, 3))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from llava_df.projectors.bspline import dense_bases, is_uniform, kan_linear, uniform_grid

NORMS = ("layernorm", "none")


def _check_int(name: str, value, hint: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}; {hint}")


def _even_rows(x: torch.Tensor, max_tokens: int | None) -> torch.Tensor:
    """At most ``max_tokens`` evenly spaced rows of x (N, D): deterministic, covers all images."""
    if max_tokens is None or x.shape[0] <= max_tokens:
        return x
    idx = torch.linspace(0, x.shape[0] - 1, max_tokens, device=x.device).round().long()
    return x[idx]


class KANLinear(nn.Module):
    """efficient-kan's KANLinear, ``(..., in_features) -> (..., out_features)``.

    y = silu(u) @ base_weight.T + sum_c B_c(u) * spline_weight[..., c] * spline_scaler, with
    u = x (``input_norm="none"``, exactly efficient-kan) or the fused non-affine LayerNorm of x
    scaled so +-``norm_span`` std lands on ``grid_range``. Parameters and init follow
    efficient-kan (``scale_noise, scale_base, scale_spline, grid_eps, grid_range``); an
    efficient-kan ``KANLinear`` state dict loads with strict=True.
    """

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
        *,
        input_norm: str = "none",
        norm_span: float = 2.0,
        check_finite: bool = True,
    ):
        super().__init__()
        _check_int("in_features", in_features, "pass the width of the features fed to this layer.")
        _check_int("out_features", out_features, "pass the width this layer should produce.")
        _check_int("grid_size (G)", grid_size, "use e.g. 5 (the 'g5' in kan_h256_g5_k3).")
        _check_int(
            "spline_order (K)", spline_order, "use e.g. 3 for cubic splines (the 'k3' in kan_h256_g5_k3)."
        )
        lo, hi = (float(v) for v in grid_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(
                f"grid_range must be (low, high) with low < high, got {tuple(grid_range)!r}; e.g. (-1, 1)."
            )
        if input_norm not in NORMS:
            raise ValueError(f"input_norm must be one of {NORMS}, got {input_norm!r}.")
        if not norm_span > 0:
            raise ValueError(
                f"norm_span must be > 0 (std devs mapped onto grid_range), got {norm_span!r}; e.g. 2.0."
            )
        self.in_features, self.out_features = in_features, out_features
        self.grid_size, self.spline_order = grid_size, spline_order
        self.scale_noise, self.scale_base, self.scale_spline = scale_noise, scale_base, scale_spline
        self.grid_eps, self.grid_range = grid_eps, (lo, hi)
        self.input_norm, self.norm_span, self.check_finite = input_norm, float(norm_span), check_finite

        self.register_buffer("grid", uniform_grid(in_features, grid_size, spline_order, (lo, hi)))
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, grid_size + spline_order))
        self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features))
        self._uniform_key: tuple | None = None
        self._uniform = True
        self.reset_parameters()

    @property
    def norm(self) -> tuple[float, float] | None:
        """(scale, shift) applied after the LayerNorm, or None without normalization."""
        if self.input_norm == "none":
            return None
        lo, hi = self.grid_range
        return (hi - lo) / 2 / self.norm_span, (hi + lo) / 2

    def reset_parameters(self) -> None:
        """efficient-kan's init, drawing from the RNG in the same order (same seed, same weights)."""
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5) * self.scale_base)
        with torch.no_grad():
            g, k = self.grid_size, self.spline_order
            noise = (torch.rand(g + 1, self.in_features, self.out_features) - 1 / 2) * self.scale_noise / g
            points = self.grid.T[k:-k]  # (G+1, in): the grid points
            self.spline_weight.copy_(self._curve2coeff(points, noise.to(points)))
        nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5) * self.scale_spline)

    def _curve2coeff(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Minimum-norm least-squares coefficients: x (P, in), y (P, in, out) -> (out, in, C).

        What efficient-kan's lstsq returns on CPU (gelsy); pinv also works on GPU, where lstsq
        refuses the underdetermined (G+1 points, G+K unknowns) systems.
        """
        a = dense_bases(x, self.grid.to(x.dtype), self.spline_order).transpose(0, 1)  # (in, P, C)
        return (torch.linalg.pinv(a) @ y.transpose(0, 1)).permute(2, 0, 1)  # (out, in, C)

    def _grid_is_uniform(self) -> bool:
        # Cached per grid version: load_state_dict / update_grid bump it, .to() makes a new tensor.
        key = (self.grid.data_ptr(), self.grid._version, self.grid.dtype, self.grid.device)
        if key != self._uniform_key:
            self._uniform, self._uniform_key = is_uniform(self.grid), key
        return self._uniform

    def _flat_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate x (..., in) and return it as (N, in)."""
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != self.in_features:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"KAN layer expects input of shape (..., {self.in_features}), got {shape}; "
                f"feed features of width {self.in_features} or build the projector with in_dim={shape[-1] if isinstance(shape, tuple) and shape else '?'}."
            )
        # One reduction instead of an elementwise mask: NaN/inf make the sum non-finite (an
        # overflowing sum of finite values only triggers the exact count below).
        if self.check_finite and not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
            bad = (~torch.isfinite(x)).sum().item()
            raise ValueError(
                f"KAN layer input has {bad} non-finite values (NaN/inf) out of {x.numel()}; the splines are "
                "undefined there. Check the vision features (fp16 overflow?) before the projector."
            )
        return x.reshape(-1, self.in_features)

    def normalized_input(self, x: torch.Tensor) -> torch.Tensor:
        """u, the values the splines see: (N, in) in float32 (float64 stays float64), no grad."""
        x2 = self._flat_input(x).detach()
        x2 = x2.to(torch.float64 if x2.dtype == torch.float64 else torch.float32)
        if self.norm is None:
            return x2
        scale, shift = self.norm
        return F.layer_norm(x2, x2.shape[-1:], eps=1e-5) * scale + shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1] if isinstance(x, torch.Tensor) else ()
        x2 = self._flat_input(x).to(self.base_weight.dtype)
        y = kan_linear(
            x2,
            self.grid,
            self.base_weight,
            self.spline_weight,
            self.spline_scaler,
            self.spline_order,
            norm=self.norm,
            uniform=self._grid_is_uniform(),
        )
        return y.view(*lead, self.out_features)

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor, margin: float = 0.01, chunk_tokens: int = 512) -> None:
        """Move the knots to the distribution of x and refit the spline to keep the function on x.

        Knots: efficient-kan's (G+1 per-dimension quantiles of u blended with a uniform grid by
        ``grid_eps``, extended by K steps). Coefficients: for each input dim i, least squares
        min ||B_new c' - B_old c||^2 over the tokens of x, solved from B_new^T B_new and
        B_new^T B_old (in, C, C) in float64, accumulated ``chunk_tokens`` at a time (no
        (tokens, in, out) tensor). The *unscaled* spline_weight is refit and spline_scaler kept
        (efficient-kan refits the scaled curve and then scales it again, changing the output by
        ~100%). The fit is exact only when the old curve lies in the new spline space: smooth
        splines move by well under 1%, splines that use every old knot (long training) more.
        """
        u = self.normalized_input(x).double()  # (N, in)
        n, g, k = u.shape[0], self.grid_size, self.spline_order
        old_grid = self.grid.double()
        old_uniform = is_uniform(old_grid)

        u_sorted = u.sort(dim=0).values
        adaptive = u_sorted[torch.linspace(0, n - 1, g + 1, dtype=torch.int64, device=u.device)]  # (G+1, in)
        step = (u_sorted[-1] - u_sorted[0] + 2 * margin) / g  # (in,)
        steps = torch.arange(g + 1, dtype=u.dtype, device=u.device)[:, None]
        uniform = steps * step + u_sorted[0] - margin
        knots = self.grid_eps * uniform + (1 - self.grid_eps) * adaptive
        ext = torch.arange(1, k + 1, dtype=u.dtype, device=u.device)[:, None]
        knots = torch.cat([knots[:1] - step * ext.flip(0), knots, knots[-1:] + step * ext], dim=0)
        # Fit against the knots as they will be stored (bf16 buffers round them).
        new_grid = knots.T.to(self.grid.dtype).double().contiguous()  # (in, G+2K+1)

        n_bases = g + k
        gram_nn = u.new_zeros(self.in_features, n_bases, n_bases)
        gram_no = u.new_zeros(self.in_features, n_bases, n_bases)
        for a in range(0, n, chunk_tokens):
            b_new = dense_bases(u[a : a + chunk_tokens], new_grid, k, uniform=False)  # (n, in, C)
            b_old = dense_bases(u[a : a + chunk_tokens], old_grid, k, uniform=old_uniform)
            gram_nn += torch.einsum("nic,nid->icd", b_new, b_new)
            gram_no += torch.einsum("nic,nid->icd", b_new, b_old)
        # A tiny ridge keeps bases without data (e.g. a constant input dim) at 0 instead of NaN.
        diag = gram_nn.diagonal(dim1=1, dim2=2)
        ridge = 1e-10 * diag.mean(-1, keepdim=True).clamp_min(1e-30)
        gram_nn += torch.diag_embed(ridge.expand_as(diag))
        rhs = gram_no @ self.spline_weight.double().permute(1, 2, 0)  # (in, C, out)
        coeff = torch.linalg.solve(gram_nn, rhs)  # (in, C, out)
        self.grid.copy_(new_grid)
        self.spline_weight.copy_(coeff.permute(2, 0, 1))

    def activation_l1(
        self, x: torch.Tensor, max_tokens: int | None = 64, chunk_elements: int = 2**22
    ) -> torch.Tensor:
        """mean_n |phi_{o,i}(u_{n,i})| for every edge: (out, in), differentiable in the weights.

        phi_{o,i}(u) = base_weight[o,i] silu(u) + spline_scaler[o,i] sum_c spline_weight[o,i,c] B_c(u),
        the whole edge function as in the KAN paper. x is detached (the loss shapes each layer's
        own functions) and subsampled to ``max_tokens`` evenly spaced rows; the (tokens, out, in)
        values are made ``chunk_elements`` at a time under activation checkpointing, so memory
        stays at one chunk in forward and backward.
        """
        u = _even_rows(self.normalized_input(x), max_tokens)  # (n, in)
        n = u.shape[0]
        w_spline = (
            self.spline_weight.permute(1, 2, 0).to(u.dtype).contiguous()
        )  # (in, C, out), once for all chunks
        per_chunk = max(1, chunk_elements // (self.in_features * self.out_features))
        total = None
        for a in range(0, n, per_chunk):
            part = checkpoint(self._abs_activation_sum, u[a : a + per_chunk], w_spline, use_reentrant=False)
            total = part if total is None else total + part
        return total.T / n

    def _abs_activation_sum(self, u: torch.Tensor, w_spline: torch.Tensor) -> torch.Tensor:
        """sum_n |phi_{o,i}(u_{n,i})| for a chunk u (n, in): (in, out)."""
        bases = dense_bases(u, self.grid.to(u.dtype), self.spline_order).transpose(0, 1)  # (in, n, C)
        spline = torch.bmm(bases, w_spline) * self.spline_scaler.T.to(u.dtype)[:, None, :]  # (in, n, out)
        base = F.silu(u).T[:, :, None] * self.base_weight.T.to(u.dtype)[:, None, :]  # (in, n, out)
        return (spline + base).abs().sum(1)

    @torch.no_grad()
    def grid_coverage(self, x: torch.Tensor) -> float:
        """Fraction of the values u[n, i] inside their grid [t_K, t_{G+K}] (bounds included)."""
        u = self.normalized_input(x)
        grid = self.grid.to(u.dtype)
        lo, hi = grid[:, self.spline_order], grid[:, -self.spline_order - 1]
        return ((u >= lo) & (u <= hi)).float().mean().item()

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, grid_size={self.grid_size}, "
            f"spline_order={self.spline_order}, grid_range={self.grid_range}, input_norm={self.input_norm!r}"
        )


class KANProjector(nn.Module):
    """A stack of KANLinear layers over ``widths`` (efficient-kan's ``KAN``: keys ``layers.{i}.*``).

    The first layer normalizes its input with ``input_norm``, the others with ``hidden_norm``.
    In training mode with grad enabled, forward keeps a detached sample of ``reg_tokens`` input
    rows per layer, which ``regularization_loss()`` uses when called without ``x``.
    """

    def __init__(
        self,
        widths: Sequence[int],
        grid_size: int = 5,
        spline_order: int = 3,
        *,
        grid_range: Sequence[float] = (-1.0, 1.0),
        input_norm: str = "layernorm",
        hidden_norm: str = "layernorm",
        norm_span: float = 2.0,
        scale_noise: float = 0.1,
        scale_base: float = 1.0,
        scale_spline: float = 1.0,
        grid_eps: float = 0.02,
        reg_tokens: int = 64,
    ):
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths needs at least [in, out], got {list(widths)!r}.")
        self.widths = list(widths)
        self.reg_tokens = reg_tokens
        self.layers = nn.ModuleList(
            KANLinear(
                w_in,
                w_out,
                grid_size,
                spline_order,
                scale_noise,
                scale_base,
                scale_spline,
                grid_eps,
                grid_range,
                input_norm=input_norm if i == 0 else hidden_norm,
                norm_span=norm_span,
                check_finite=i == 0,  # hidden values are finite when the input and weights are
            )
            for i, (w_in, w_out) in enumerate(zip(self.widths[:-1], self.widths[1:], strict=True))
        )
        self._recorded: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        record = self.training and torch.is_grad_enabled()
        recorded = []
        for layer in self.layers:
            if record:
                recorded.append(_even_rows(x.detach().reshape(-1, x.shape[-1]), self.reg_tokens))
            x = layer(x)
        if record:
            self._recorded = recorded
        return x

    @torch.no_grad()
    def layer_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input of every layer for projector input x (list of (..., width) tensors)."""
        inputs = [x]
        for layer in self.layers[:-1]:
            inputs.append(layer(inputs[-1]))
        return inputs

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor, margin: float = 0.01) -> None:
        """Refit each layer's grid to its own input on x (layer by layer, like efficient-kan's KAN)."""
        for layer in self.layers:
            layer.update_grid(x, margin=margin)
            x = layer(x)

    def regularization_loss(
        self,
        x: torch.Tensor | None = None,
        regularize_activation: float = 1.0,
        regularize_entropy: float = 1.0,
        max_tokens: int | None = None,
    ) -> torch.Tensor:
        """KAN paper (Liu et al. 2024, eq. 2.17-2.20) sparsity loss, summed over layers.

        Per layer: L1 = sum over edges of mean_n |phi_{o,i}|; entropy = -sum p log p with
        p = |phi_{o,i}| / L1. Returns regularize_activation * L1 + regularize_entropy * entropy.
        Inputs: each layer's input for x, or without x the rows recorded by the last training
        forward; at most ``max_tokens`` (default ``reg_tokens``) evenly spaced tokens, detached.
        Train with ``loss + kan_reg_weight * projector.regularization_loss()``.
        """
        if x is not None:
            inputs = self.layer_inputs(x)
        elif self._recorded:
            inputs = self._recorded
        else:
            raise ValueError(
                "regularization_loss() needs the projector input x, or a training-mode forward first "
                "(which records a token sample); call regularization_loss(image_features)."
            )
        tokens = self.reg_tokens if max_tokens is None else max_tokens
        loss = None
        for layer, u in zip(self.layers, inputs, strict=True):
            act = layer.activation_l1(u, max_tokens=tokens)  # (out, in)
            l1 = act.sum()
            p = act / l1.clamp_min(torch.finfo(act.dtype).tiny)
            entropy = -(p * torch.log(p.clamp_min(torch.finfo(act.dtype).tiny))).sum()
            term = regularize_activation * l1 + regularize_entropy * entropy
            loss = term if loss is None else loss + term
        return loss

    @torch.no_grad()
    def grid_coverage(self, x: torch.Tensor) -> list[float]:
        """Per layer, the fraction of its (normalized) inputs inside its grid, for projector input x."""
        return [layer.grid_coverage(u) for layer, u in zip(self.layers, self.layer_inputs(x), strict=True)]


def build_kan(in_dim: int, out_dim: int, hidden: int, grid: int, order: int, **options) -> nn.Module:
    """Options: grid_range, input_norm, hidden_norm, norm_span, scale_noise, scale_base, scale_spline, grid_eps, reg_tokens."""
    return KANProjector([in_dim, hidden, out_dim], grid, order, **options)
