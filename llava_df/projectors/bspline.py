"""B-spline bases on per-input knot vectors, and the KAN layer as a memory-lean autograd Function.

Notation (efficient-kan's): ``G`` grid intervals, spline order ``K``, ``C = G + K`` bases per
input, knots ``grid (in, G + 2K + 1)``. Basis ``B_m`` (``m < C``) lives on ``[t_m, t_{m+K+1})``;
in knot interval ``j`` (``t_j <= u < t_{j+1}``) only ``B_{j-K} .. B_j`` are non-zero, so each
input value has K + 1 *local* values, computed here by de Boor's recursion on (tokens, in, K + 1)
instead of the full (tokens, in, G + 2K) Cox-de Boor table. Outside ``[t_0, t_{G+2K})`` every
basis is 0 (efficient-kan's semantics).

``kan_linear`` is the layer

    y = silu(u) @ base_weight.T + sum_{i,c} B_c(u_i) * spline_weight[:, i, c] * spline_scaler[:, i]

with ``u = x`` or ``u = layer_norm(x) * scale + shift`` (the optional fused input normalization).
It saves only ``x`` (and the small knot buffer) for backward and rebuilds the bases there, so a
training step never keeps a (tokens, in, C) tensor alive; forward and backward build it in
chunks of input features (``feature_chunk_bytes``) and free each chunk after its GEMM.

Basis math runs in float32 even for bf16/fp16 weights (float64 stays float64): in bf16,
``u - t_j`` keeps ~3 significant digits, so the local values lose partition of unity by ~1%;
the GEMMs then run in the weight dtype on the float32 values rounded once.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Transient feature chunk (tokens x in_chunk x C) per GEMM. 16 MiB stays under glibc's largest
# reusable heap block (32 MiB) on CPU, so chunks are not page-faulted in afresh every call;
# on GPU the caching allocator makes large chunks cheap, so fewer, bigger GEMMs win there.
CPU_CHUNK_BYTES = 8 * 2**20
CUDA_CHUNK_BYTES = 256 * 2**20


def uniform_grid(
    in_features: int, grid_size: int, spline_order: int, grid_range=(-1.0, 1.0), device=None
) -> torch.Tensor:
    """efficient-kan's knots: G uniform intervals over grid_range plus K more on each side.

    Same arithmetic as efficient-kan (int arange times a Python float, in the default dtype) so
    freshly built layers hold bit-identical buffers. Returns (in_features, G + 2K + 1).
    """
    h = (grid_range[1] - grid_range[0]) / grid_size
    knots = torch.arange(-spline_order, grid_size + spline_order + 1, device=device) * h + grid_range[0]
    return knots.expand(in_features, -1).contiguous()


def is_uniform(grid: torch.Tensor) -> bool:
    """True when every row of ``grid`` is evenly spaced to within its dtype's rounding.

    Uniform rows take the fast path (knots from ``t_0`` and a step, no gathers). The tolerance
    is relative to the grid's own dtype, so float32 knots cast to float64 count as non-uniform
    and are used exactly as stored.
    """
    n = grid.shape[1] - 1
    t0, t_last = grid[:, :1], grid[:, -1:]
    ideal = t0 + (t_last - t0) * torch.arange(n + 1, device=grid.device, dtype=grid.dtype) / n
    tol = 16 * torch.finfo(grid.dtype).eps * grid.abs().amax().clamp_min(1.0)
    return bool(((grid - ideal).abs().amax() <= tol).item()) and bool((t_last > t0).all().item())


@functools.lru_cache(maxsize=None)
def cardinal_pieces(order: int) -> tuple[tuple[float, ...], ...]:
    """Coefficients ``coef[p][r]`` of the K + 1 local values on an evenly spaced grid.

    With knots ``t_m = t_0 + m h`` and ``u = t_j + s h`` (0 <= s < 1), the local value ``r``
    (basis ``B_{j-K+r}``) is ``sum_p coef[p][r] s**p``, the same in every interval. Derived here
    by running de Boor's recursion on polynomials in s (every denominator is k), so the fast
    path needs no knot look-ups at all.
    """

    def mul(a, b):
        out = [0.0] * (len(a) + len(b) - 1)
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                out[i + j] += x * y
        return out

    def add(a, b):
        n = max(len(a), len(b))
        return [(a[i] if i < len(a) else 0.0) + (b[i] if i < len(b) else 0.0) for i in range(n)]

    vals = [[1.0]]
    for k in range(1, order + 1):
        nxt, saved = [], None
        for r in range(k):
            temp = [c / k for c in vals[r]]
            term = mul(temp, [r + 1.0, -1.0])  # right_{r+1} = t_{j+r+1} - u = (r + 1 - s) h
            nxt.append(term if saved is None else add(term, saved))
            saved = mul(temp, [k - r - 1.0, 1.0])  # left_{k-r} = u - t_{j+1-k+r} = (s + k - r - 1) h
        nxt.append(saved)
        vals = nxt
    vals = [v + [0.0] * (order + 1 - len(v)) for v in vals]
    return tuple(tuple(vals[r][p] for r in range(order + 1)) for p in range(order + 1))


def _uniform_local(u, grid, order, derivative):
    """Evenly spaced knots: interval from floor((u - t_0) / h), values from cardinal_pieces."""
    n_knots = grid.shape[1]
    inv_h = (n_knots - 1) / (grid[:, -1] - grid[:, 0])  # (I,)
    # Knot units, clamped to the span [0, L-1], so out-of-span inputs need no mask: at t = 0 the
    # one real local value is s**K / K! = 0, and t = L-1 falls in the interval past the last
    # knot, whose K + 1 local values are all phantom bases (see place_bases).
    t = torch.addcmul(-grid[:, 0] * inv_h, u, inv_h).clamp_(0.0, float(n_knots - 1))  # (N, I)
    jf = t.floor()
    s = t - jf  # in [0, 1)
    powers = [None, s]
    for _ in range(2, order + 1):
        powers.append(powers[-1] * s)
    coef = torch.tensor(cardinal_pieces(order), dtype=u.dtype, device=u.device)  # (p, r)

    def poly(c):  # sum_p c[p][r] s**p, built directly as (N, K+1, I)
        out = c[0].view(1, -1, 1).expand(u.shape[0], -1, u.shape[1]).clone()
        for p in range(1, c.shape[0]):
            out.addcmul_(c[p].view(1, -1, 1), powers[p].unsqueeze(1))
        return out

    vals = poly(coef)
    dvals = None
    if derivative:
        dcoef = coef[1:] * torch.arange(1, order + 1, dtype=u.dtype, device=u.device)[:, None]  # d/ds
        inside = ((t > 0) & (t < n_knots - 1)).to(u.dtype) * inv_h  # slope 0 outside the span
        dvals = poly(dcoef) * inside.unsqueeze(1)
    return jf.long(), vals, dvals


def _general_local(u, grid, order, derivative):
    """Any increasing knots: interval by comparisons, values by de Boor's recursion on gathered knots."""
    n_knots = grid.shape[1]
    # Interval index by comparison with each knot: for the small knot counts of a KAN
    # (G + 2K + 1 ~ 12) this is several times faster on CPU than searchsorted.
    j = torch.zeros(u.shape, dtype=torch.long, device=u.device)
    for m in range(1, n_knots - 1):
        j += u >= grid[:, m]
    # j in [0, L-2]; u clamped into the span so the ends behave as in _uniform_local.
    uc = torch.minimum(torch.maximum(u, grid[:, 0]), grid[:, -1])
    # Knots t_{j-K+1} .. t_{j+K} from a copy padded by K knots on each side (only phantom
    # bases near the ends use the padding; it just has to keep the knots increasing).
    step_lo = grid[:, 1] - grid[:, 0]
    step_hi = grid[:, -1] - grid[:, -2]
    pad = torch.arange(1, order + 1, device=grid.device, dtype=grid.dtype)
    padded = torch.cat(
        [grid[:, :1] - step_lo[:, None] * pad.flip(0), grid, grid[:, -1:] + step_hi[:, None] * pad], dim=1
    )  # (I, L + 2K)
    row = torch.arange(grid.shape[0], device=u.device) * padded.shape[1] + order  # (I,)
    base = j + row  # (N, I) flat index of t_j in `padded`
    flat = padded.reshape(-1)
    left = [None] + [uc - flat.take(base + 1 - k) for k in range(1, order + 1)]  # u - t_{j+1-k}
    right = [None] + [flat.take(base + k) - uc for k in range(1, order + 1)]  # t_{j+k} - u

    # de Boor's BSPLVB: level k turns the k values of order k-1 into the k+1 values of order k.
    vals = [torch.ones_like(u)]
    temps: list[torch.Tensor] = []
    for k in range(1, order + 1):
        nxt, temps, saved = [], [], None
        for r in range(k):
            temp = vals[r] / (right[r + 1] + left[k - r])
            term = right[r + 1] * temp
            nxt.append(term if saved is None else term + saved)
            saved = left[k - r] * temp
            temps.append(temp)
        nxt.append(saved)
        vals = nxt
    dvals = None
    if derivative:
        # d B_{j-K+r} / du = K (temp_{r-1} - temp_r), temps of the last level (temp_{-1} = temp_K = 0).
        inside = ((u > grid[:, 0]) & (u < grid[:, -1])).to(u.dtype) * order
        ext = [None, *temps, None]
        dv = []
        for r in range(order + 1):
            a, b = ext[r], ext[r + 1]
            dv.append((b.neg() if a is None else a if b is None else a - b) * inside)
        dvals = torch.stack(dv, dim=1)
    return j, torch.stack(vals, dim=1), dvals


def local_bases(
    u: torch.Tensor, grid: torch.Tensor, order: int, *, uniform: bool, derivative: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The K + 1 possibly non-zero B-spline values of each ``u[n, i]`` on knots ``grid[i]``.

    u: (N, I) float; grid: (I, G + 2K + 1) increasing knots (same dtype as u).
    Returns ``j`` (N, I) int64, the knot interval (in [0, G + 2K]), and ``vals`` (N, K+1, I):
    ``vals[:, r]`` is basis ``B_{j-K+r}``, plus ``dvals = d vals / du`` when ``derivative``
    (else None). Indices ``j-K+r`` outside [0, C) are phantom bases (past either end of the
    knot vector); ``place_bases`` drops them without masks by scattering into spare rows.
    Inputs outside [t_0, t_{G+2K}) evaluate as a span end, where every real basis is 0: the
    all-zero rows of efficient-kan.
    """
    if uniform:
        return _uniform_local(u, grid, order, derivative)
    return _general_local(u, grid, order, derivative)


def scatter_base(n_tok: int, width: int, n_bases: int, order: int, device=None) -> torch.Tensor:
    """Flat offsets of element (n, r, i) in a (N, C + 2K + 1, w) buffer: (N, K+1, w) int64.

    Depends only on the shapes, so a layer computes it once per call and reuses it per chunk.
    """
    rows = n_bases + 2 * order + 1
    n = torch.arange(n_tok, device=device).view(-1, 1, 1) * (rows * width)
    r = torch.arange(order + 1, device=device).view(1, -1, 1) * width
    return (n + torch.arange(width, device=device)) + r


def place_bases(
    j: torch.Tensor, vals: torch.Tensor, n_bases: int, order: int, dtype: torch.dtype, base: torch.Tensor | None = None
) -> torch.Tensor:
    """Scatter local values (N, K+1, w) at intervals j (N, w) into the GEMM layout (N, C + 2K + 1, w).

    Basis m lands on row m + K, so rows [K, K + C) are the real bases: ``[:, K:K+C]`` viewed as
    (N, C * w) is a valid GEMM operand (row stride (C + 2K + 1) * w, no copy). The spare rows
    (K before, K + 1 after) catch the phantom values, which is cheaper than masking them.
    ``base``: ``scatter_base`` for these shapes (computed here when not given).
    """
    n_tok, width = j.shape
    if base is None:
        base = scatter_base(n_tok, width, n_bases, order, j.device)
    out = torch.empty(n_tok, n_bases + 2 * order + 1, width, dtype=dtype, device=j.device)
    out[:, order : order + n_bases].zero_()  # spare rows are never read: no need to clear them
    # A flat 1-D scatter is ~3x faster on CPU than scattering along dim 1 of the 3-D buffer.
    index = base + (j * width).unsqueeze(1)  # (N, K+1, w): element (n, j + r, i)
    out.view(-1).scatter_(0, index.view(-1), vals.to(dtype).reshape(-1))
    return out


class _ScatterBases:
    """scatter_base per chunk width, built once per call (chunks share one or two widths)."""

    def __init__(self, n_tok, n_bases, order, device):
        self.args, self.cache = (n_tok, n_bases, order, device), {}

    def __call__(self, width):
        if width not in self.cache:
            n_tok, n_bases, order, device = self.args
            self.cache[width] = scatter_base(n_tok, width, n_bases, order, device)
        return self.cache[width]


def dense_bases(u: torch.Tensor, grid: torch.Tensor, order: int, uniform: bool | None = None) -> torch.Tensor:
    """All C = G + K basis values of each u[n, i]: (N, I) -> (N, I, C). For fitting and tests."""
    if uniform is None:
        uniform = is_uniform(grid)
    n_bases = grid.shape[1] - order - 1
    j, vals, _ = local_bases(u, grid.to(u.dtype), order, uniform=uniform)
    return place_bases(j, vals, n_bases, order, u.dtype)[:, order : order + n_bases].transpose(1, 2)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Basis math dtype: float64 stays float64, everything else runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def feature_chunks(n_in: int, per_feature_bytes: int, budget: int) -> list[tuple[int, int]]:
    """Split input features into near-equal chunks of at most ``budget`` bytes of temporaries each."""
    width = max(1, budget // max(1, per_feature_bytes))
    n_chunks = math.ceil(n_in / width)
    width = math.ceil(n_in / n_chunks)
    return [(a, min(a + width, n_in)) for a in range(0, n_in, width)]


def _normalize(x: torch.Tensor, norm: tuple[float, float] | None) -> torch.Tensor:
    """u = layer_norm(x) * scale + shift (no affine parameters), or x itself when norm is None."""
    if norm is None:
        return x
    scale, shift = norm
    return F.layer_norm(x, x.shape[-1:], eps=1e-5) * scale + shift


def _chunk_weight(spline_weight, spline_scaler, a, b):
    """Scaled spline weights of input features [a, b) in the GEMM layout: (out, C * w).

    Written in one pass straight into the (out, C, w) order; broadcasting the scaler over the
    short C axis in the parameter's own (out, w, C) order is several times slower on CPU.
    """
    n_out, _, n_bases = spline_weight.shape
    w_eff = spline_weight.new_empty(n_out, n_bases, b - a)
    torch.mul(spline_weight[:, a:b].transpose(1, 2), spline_scaler[:, None, a:b], out=w_eff)
    return w_eff.view(n_out, -1)


def _chunks(n_tok, n_in, n_out, n_bases, order, dtype, budget):
    """Feature chunks bounding both the (N, C + 2K + 1, w) bases and the (out, C, w) weight blocks.

    Keeping every temporary well under 32 MiB also keeps it on glibc's heap: bigger blocks are
    mmap-ed and page-faulted in afresh on every call, which costs as much as the arithmetic.
    """
    itemsize = torch.finfo(dtype).bits // 8
    per_feature = max(n_tok * (n_bases + 2 * order + 1), n_out * n_bases) * max(itemsize, 4)
    return feature_chunks(n_in, per_feature, budget)


class KANLinearFunction(torch.autograd.Function):
    """efficient-kan's KANLinear forward with a recompute-in-backward gradient.

    apply(x, grid, base_weight, spline_weight, spline_scaler, order, norm, uniform, chunk_bytes)
    x: (N, in) in the weight dtype; returns (N, out). Saved for backward: x and grid only.
    Bases are built and multiplied chunk by chunk of w input features, laid out (N, C, w)
    (basis-major) so the scatter target needs no copy before the GEMM; the weights follow as
    (out, C, w).
    """

    @staticmethod
    def forward(ctx, x, grid, base_weight, spline_weight, spline_scaler, order, norm, uniform, chunk_bytes):
        wdt = base_weight.dtype
        cdt = compute_dtype(wdt)
        n_tok, n_in = x.shape
        n_out, _, n_bases = spline_weight.shape
        u = _normalize(x.to(cdt), norm)  # (N, in)
        y = F.silu(u).to(wdt) @ base_weight.T  # (N, out)
        g = grid.to(cdt)
        bases = _ScatterBases(n_tok, n_bases, order, x.device)
        for a, b in _chunks(n_tok, n_in, n_out, n_bases, order, wdt, chunk_bytes):
            # Per chunk (not once for all inputs): the values stay in cache for the scatter.
            j, vals, _ = local_bases(u[:, a:b], g[a:b], order, uniform=uniform)  # (N, w), (N, K+1, w)
            feats = place_bases(j, vals, n_bases, order, wdt, bases(b - a))  # (N, C+2K+1, w)
            w_eff = _chunk_weight(spline_weight, spline_scaler, a, b)  # (out, C * w)
            y.addmm_(feats[:, order : order + n_bases].reshape(n_tok, -1), w_eff.T)
            del feats, w_eff  # transient blocks: freed before the next chunk, never saved
        ctx.save_for_backward(x, grid, base_weight, spline_weight, spline_scaler)
        ctx.order, ctx.norm, ctx.uniform, ctx.chunk_bytes = order, norm, uniform, chunk_bytes
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, grid, base_weight, spline_weight, spline_scaler = ctx.saved_tensors
        need_x, _, need_wb, need_ws, need_sc = ctx.needs_input_grad[:5]
        order = ctx.order
        wdt = base_weight.dtype
        cdt = compute_dtype(wdt)
        n_tok, n_in = x.shape
        n_out, _, n_bases = spline_weight.shape
        gy = gy.to(wdt).contiguous()  # (N, out)

        xr = x.detach().to(cdt)
        if need_x and ctx.norm is not None:
            xr.requires_grad_(True)
        with torch.enable_grad() if xr.requires_grad else torch.no_grad():
            u_graph = _normalize(xr, ctx.norm)  # the LayerNorm's own backward is reused below
        u = u_graph.detach()  # (N, in)

        g_x = g_wb = g_ws = g_sc = None
        if need_wb:
            g_wb = gy.T @ F.silu(u).to(wdt)  # (out, in)
        if need_x:
            sig = torch.sigmoid(u)
            g_u = (gy @ base_weight).to(cdt) * (sig * (1 + u * (1 - sig)))  # through silu'(u), (N, in)
        if need_ws:
            g_ws = torch.empty_like(spline_weight)
        if need_sc:
            g_sc = torch.empty_like(spline_scaler)
        if need_x or need_ws or need_sc:
            g = grid.to(cdt)
            bases = _ScatterBases(n_tok, n_bases, order, x.device)
            for a, b in _chunks(n_tok, n_in, n_out, n_bases, order, wdt, ctx.chunk_bytes):
                w = b - a
                j, vals, dvals = local_bases(u[:, a:b], g[a:b], order, uniform=ctx.uniform, derivative=need_x)
                if need_ws or need_sc:
                    feats = place_bases(j, vals, n_bases, order, wdt, bases(w))
                    g_eff = gy.T @ feats[:, order : order + n_bases].reshape(n_tok, -1)  # (out, C * w)
                    del feats
                    g_eff = g_eff.view(n_out, n_bases, w)
                    if need_ws:
                        torch.mul(g_eff.transpose(1, 2), spline_scaler[:, a:b, None], out=g_ws[:, a:b])
                    if need_sc:  # in place: g_eff is not needed any more
                        prod = g_eff.mul_(spline_weight[:, a:b].transpose(1, 2))  # (out, C, w)
                        g_sc[:, a:b] = prod.sum(1, dtype=cdt)
                    del g_eff
                if need_x:
                    dfeats = place_bases(j, dvals, n_bases, order, cdt, bases(w))
                    g_feats = gy @ _chunk_weight(spline_weight, spline_scaler, a, b)  # (N, C * w)
                    g_feats = g_feats.view(n_tok, n_bases, w).to(cdt)
                    g_u[:, a:b] += (g_feats * dfeats[:, order : order + n_bases]).sum(1)
                    del g_feats, dfeats
        if need_x:
            if ctx.norm is not None:
                (g_x,) = torch.autograd.grad(u_graph, xr, g_u)
            else:
                g_x = g_u
            g_x = g_x.to(x.dtype)
        return g_x, None, g_wb, g_ws, g_sc, None, None, None, None


def kan_linear(
    x: torch.Tensor,
    grid: torch.Tensor,
    base_weight: torch.Tensor,
    spline_weight: torch.Tensor,
    spline_scaler: torch.Tensor,
    order: int,
    *,
    norm: tuple[float, float] | None = None,
    uniform: bool | None = None,
    chunk_bytes: int | None = None,
) -> torch.Tensor:
    """One KAN layer on x (N, in) -> (N, out); see the module docstring for the formula.

    norm: (scale, shift) of the fused non-affine LayerNorm, or None. uniform: take the
    evenly-spaced-knots path (default: detect from ``grid``). chunk_bytes: size of each
    transient feature block (default: 16 MiB on CPU, 256 MiB on GPU).
    """
    if uniform is None:
        uniform = is_uniform(grid)
    if chunk_bytes is None:
        chunk_bytes = CUDA_CHUNK_BYTES if x.is_cuda else CPU_CHUNK_BYTES
    return KANLinearFunction.apply(
        x, grid, base_weight, spline_weight, spline_scaler, order, norm, uniform, chunk_bytes
    )
