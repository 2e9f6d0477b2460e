"""B-spline bases on per-input knot vectors, and the KAN layer as a memory-lean autograd Function.

Notation (efficient-kan's): ``G`` grid intervals, spline order ``K``, ``C = G + K`` bases per
input, knots ``grid (in, G + 2K + 1)``. Basis ``B_m`` (``m < C``) lives on ``[t_m, t_{m+K+1})``;
in knot interval ``j`` (``t_j <= u < t_{j+1}``) only ``B_{j-K} .. B_j`` are non-zero, so each
input value has K + 1 *local* values, computed on (tokens, K + 1, in) instead of the full
(tokens, in, G + 2K) Cox-de Boor table: by de Boor's recursion on the gathered knots for any
grid, or, for evenly spaced knots (every grid until ``update_grid``), by the fixed polynomials
in the offset within the interval that the same recursion gives. Outside ``[t_0, t_{G+2K})``
every basis is 0 (efficient-kan's semantics).

``kan_linear`` is the layer

    y = silu(u) @ base_weight.T + sum_{i,c} B_c(u_i) * spline_weight[:, i, c] * spline_scaler[:, i]

with ``u = x`` or ``u = layer_norm(x) * scale + shift`` (the optional fused input normalization).
It saves only ``x`` (and the small knot buffer) for backward and rebuilds the bases there, so a
training step never keeps a (tokens, in, C) tensor alive; forward and backward build the dense
bases in chunks of input features (``chunk_bytes`` each), one GEMM per chunk, in scratch
buffers that are freed when the call returns.

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

# Bytes of each transient block (bases (N, C+2K+1, w) or weights (out, C, w)) per chunk of w
# input features. On CPU: under glibc's 32 MiB mmap ceiling, so blocks are mostly reused
# rather than page-faulted in afresh, yet few chunks, because on a shared CPU every
# elementwise kernel is an OpenMP region that may wait for a descheduled thread. On GPU the
# caching allocator makes big blocks cheap: fewer, larger GEMMs.
CPU_CHUNK_BYTES = 24 * 2**20
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


@functools.cache
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
    s = (t - jf).unsqueeze(1)  # (N, 1, I), in [0, 1)
    coef = torch.tensor(cardinal_pieces(order), dtype=u.dtype, device=u.device).unsqueeze(-1)  # (p, r, 1)

    def horner(c):  # sum_p c[p][r] s**p as (N, K+1, I): one fused multiply-add per power
        out = c[-1].expand(-1, u.shape[1]) if c.shape[0] == 1 else torch.addcmul(c[-2], c[-1], s)
        for p in range(c.shape[0] - 3, -1, -1):
            out = torch.addcmul(c[p], out, s)
        return out

    vals = horner(coef)
    dvals = None
    if derivative:
        dcoef = coef[1:] * torch.arange(1, order + 1, dtype=u.dtype, device=u.device).view(-1, 1, 1)  # d/ds
        dvals = horner(dcoef) * inv_h.view(1, 1, -1)
        if dvals.shape[0] != u.shape[0]:  # K = 1: constant slopes, broadcast over tokens
            dvals = dvals.expand(u.shape[0], -1, -1)
        if order == 1:
            # Clamped (out-of-span) inputs sit at a span end; for K >= 2 every real basis is
            # flat there, for K = 1 the slope must be zeroed by hand.
            dvals = dvals * ((t > 0) & (t < n_knots - 1)).unsqueeze(1)
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


def scatter_index(j: torch.Tensor, n_bases: int, order: int) -> torch.Tensor:
    """Where the local values of intervals j (N, w) go in a token's (C + 2K + 1, w) block.

    Basis m = j - K + r lands on row m + K = j + r: rows [K, K + C) hold the real bases, the
    spare rows (K before, K + 1 after) the phantom ones. Returns offsets (N, K+1, w) within
    each token's row of the (N, (C + 2K + 1) * w) buffer.
    """
    width = j.shape[1]
    within = torch.arange(order + 1, device=j.device).view(-1, 1) * width + torch.arange(
        width, device=j.device
    )
    return within + (j * width).unsqueeze(1)


def place_bases(
    index: torch.Tensor,
    vals: torch.Tensor,
    n_bases: int,
    order: int,
    dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scatter local values (N, K+1, w) to ``index`` in a (N, C + 2K + 1, w) buffer (``out`` or new).

    ``[:, K:K+C]`` of the result, viewed as (N, C * w), is a valid GEMM operand (row stride
    (C + 2K + 1) * w, no copy). Scattering phantom values into spare rows is cheaper than
    masking them. One scatter per token row (dim 1 of (N, -1)): ~4x faster on CPU than
    scattering along dim 1 of the 3-D buffer, and unlike a flat 1-D scatter it runs in parallel.
    """
    n_tok, _, width = vals.shape
    if out is None:
        out = torch.empty(n_tok, n_bases + 2 * order + 1, width, dtype=dtype, device=vals.device)
    out[:, order : order + n_bases].zero_()  # spare rows are never read: no need to clear them
    out.view(n_tok, -1).scatter_(1, index.reshape(n_tok, -1), vals.to(dtype).reshape(n_tok, -1))
    return out


def dense_bases(u: torch.Tensor, grid: torch.Tensor, order: int, uniform: bool | None = None) -> torch.Tensor:
    """All C = G + K basis values of each u[n, i]: (N, I) -> (N, I, C). For fitting and tests."""
    if uniform is None:
        uniform = is_uniform(grid)
    n_bases = grid.shape[1] - order - 1
    j, vals, _ = local_bases(u, grid.to(u.dtype), order, uniform=uniform)
    feats = place_bases(scatter_index(j, n_bases, order), vals, n_bases, order, u.dtype)
    return feats[:, order : order + n_bases].transpose(1, 2)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Basis math dtype: float64 stays float64, everything else runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def feature_chunks(n_in: int, per_feature_bytes: int, budget: int, align: int = 32) -> list[tuple[int, int]]:
    """Split input features into near-equal chunks of at most ``budget`` bytes of temporaries each.

    Widths are rounded up to a multiple of ``align`` when that stays within the budget (GEMM
    kernels run their full-width path on aligned sizes).
    """
    width = max(1, budget // max(1, per_feature_bytes))
    n_chunks = math.ceil(n_in / width)
    width = math.ceil(n_in / n_chunks)
    aligned = math.ceil(width / align) * align
    if aligned * per_feature_bytes <= budget:
        width = aligned
    return [(a, min(a + width, n_in)) for a in range(0, n_in, width)]


def _normalize(x: torch.Tensor, norm: tuple[float, float] | None) -> torch.Tensor:
    """u = layer_norm(x) * scale + shift (no affine parameters), or x itself when norm is None."""
    if norm is None:
        return x
    scale, shift = norm
    # The constant scale/shift ride on layer_norm's affine slots: one kernel instead of three.
    weight = torch.full(x.shape[-1:], scale, dtype=x.dtype, device=x.device)
    bias = torch.full(x.shape[-1:], shift, dtype=x.dtype, device=x.device)
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps=1e-5)


def _chunk_weight(base_weight, spline_weight, spline_scaler, a, b, out):
    """Weights of input features [a, b) in the GEMM layout, into ``out`` (out, C + 1, w).

    Rows 0..C-1: spline_weight * spline_scaler, written in one pass straight into the (out, C, w)
    order (broadcasting the scaler over the short C axis in the parameter's own (out, w, C)
    order is several times slower on CPU); row C: base_weight, for the silu row of the bases.
    Returns the (out, (C + 1) * w) view.
    """
    n_bases = spline_weight.shape[2]
    torch.mul(spline_weight[:, a:b].transpose(1, 2), spline_scaler[:, None, a:b], out=out[:, :n_bases])
    out[:, n_bases].copy_(base_weight[:, a:b])
    return out.view(spline_weight.shape[0], -1)


def _features(u, grid, order, uniform, out, derivative=False):
    """Bases and silu of u (N, w) in ``out`` (N, C + 2K + 1, w); also the scatter index and slopes.

    The silu row (K + C) is written after the scatter: right-hand phantom values may land there.
    """
    n_bases = grid.shape[1] - order - 1
    j, vals, dvals = local_bases(
        u, grid, order, uniform=uniform, derivative=derivative
    )  # (N, w), (N, K+1, w)
    index = scatter_index(j, n_bases, order)  # (N, K+1, w)
    place_bases(index, vals, n_bases, order, out.dtype, out=out)
    row = out[:, order + n_bases]
    if row.dtype == u.dtype:
        torch.ops.aten.silu.out(u, out=row)  # straight into the row, no temporary
    else:
        row.copy_(F.silu(u))
    return out, index, dvals


class _Scratch:
    """Per-call buffers reused by every chunk: a fresh multi-MiB block per chunk is page-faulted
    in again on CPU (glibc returns big blocks to the OS), which costs as much as filling it."""

    def __init__(self, device):
        self.device, self.flat = device, {}

    def __call__(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        numel = math.prod(shape)
        buf = self.flat.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype:
            buf = self.flat[name] = torch.empty(numel, dtype=dtype, device=self.device)
        return buf[:numel].view(shape)


def _chunks(n_tok, n_in, n_out, n_bases, order, dtype, budget):
    """Feature chunks bounding both the (N, C + 2K + 1, w) bases and the (out, C, w) weight blocks."""
    itemsize = max(torch.finfo(dtype).bits // 8, 4)
    return feature_chunks(n_in, max(n_tok * (n_bases + 2 * order + 1), n_out * n_bases) * itemsize, budget)


class KANLinearFunction(torch.autograd.Function):
    """efficient-kan's KANLinear forward with a recompute-in-backward gradient.

    apply(x, grid, base_weight, spline_weight, spline_scaler, order, norm, uniform, chunk_bytes)
    x: (N, in) in the weight dtype; returns (N, out). Saved for backward: x and grid only.
    Per chunk of w input features the bases are laid out (N, C + 2K + 1, w), basis-major: rows
    [K, K + C) the B-splines, row K + C silu(u), the rest spare rows for phantom values. Rows
    [K, K + C + 1) are one GEMM operand (N, (C + 1) * w) against the weights laid out
    (out, C + 1, w): base and spline branch in one GEMM, no copy of the bases.
    """

    @staticmethod
    def forward(ctx, x, grid, base_weight, spline_weight, spline_scaler, order, norm, uniform, chunk_bytes):
        wdt = base_weight.dtype
        cdt = compute_dtype(wdt)
        n_tok, n_in = x.shape
        n_out, _, n_bases = spline_weight.shape
        u = _normalize(x.to(cdt), norm)  # (N, in)
        g = grid.to(cdt)
        rows, used = n_bases + 2 * order + 1, slice(order, order + n_bases + 1)  # used: bases + silu
        scratch = _Scratch(x.device)  # transient blocks, freed when forward returns, never saved
        y = torch.empty(n_tok, n_out, dtype=wdt, device=x.device)
        for c, (a, b) in enumerate(_chunks(n_tok, n_in, n_out, n_bases, order, wdt, chunk_bytes)):
            feats = _features(u[:, a:b], g[a:b], order, uniform, scratch("feats", (n_tok, rows, b - a), wdt))[
                0
            ]
            w_ext = _chunk_weight(
                base_weight,
                spline_weight,
                spline_scaler,
                a,
                b,
                scratch("w_ext", (n_out, n_bases + 1, b - a), wdt),
            )
            # mm/addmm with out=, not addmm_: FlopCounterMode (profile.macs_per_token) counts only these.
            operand = feats[:, used].reshape(n_tok, -1)
            if c == 0:
                torch.mm(operand, w_ext.T, out=y)
            else:
                torch.addmm(y, operand, w_ext.T, out=y)
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

        need_w = need_wb or need_ws or need_sc
        g_wb = torch.empty_like(base_weight) if need_wb else None
        g_ws = torch.empty_like(spline_weight) if need_ws else None
        g_sc = torch.empty_like(spline_scaler) if need_sc else None
        g_u = torch.empty_like(u) if need_x else None
        g = grid.to(cdt)
        rows, used = n_bases + 2 * order + 1, slice(order, order + n_bases + 1)
        scratch = _Scratch(x.device)
        for a, b in _chunks(n_tok, n_in, n_out, n_bases, order, wdt, ctx.chunk_bytes):
            w = b - a
            feats, index, dvals = _features(
                u[:, a:b],
                g[a:b],
                order,
                ctx.uniform,
                scratch("feats", (n_tok, rows, w), wdt),
                derivative=need_x,
            )
            if need_w:
                g_ext = scratch("g_ext", (n_out, n_bases + 1, w), wdt)
                torch.mm(gy.T, feats[:, used].reshape(n_tok, -1), out=g_ext.view(n_out, -1))  # (out, C+1, w)
                if need_wb:
                    g_wb[:, a:b] = g_ext[:, n_bases]
                if need_ws:
                    torch.mul(
                        g_ext[:, :n_bases].transpose(1, 2), spline_scaler[:, a:b, None], out=g_ws[:, a:b]
                    )
                if need_sc:  # in place: these rows are not needed any more
                    prod = g_ext[:, :n_bases].mul_(spline_weight[:, a:b].transpose(1, 2))  # (out, C, w)
                    torch.sum(prod, 1, out=g_sc[:, a:b])
            if need_x:
                # d loss / d (bases, silu), written straight into the padded layout, so the K+1
                # local entries can be read back with the scatter index.
                g_feats = scratch("g_feats", (n_tok, rows, w), wdt)
                g_feats[:, :order].zero_()  # the GEMM fills rows [K, K + C + 1); the spare rows are 0
                g_feats[:, order + n_bases + 1 :].zero_()
                w_ext = _chunk_weight(
                    base_weight,
                    spline_weight,
                    spline_scaler,
                    a,
                    b,
                    scratch("w_ext", (n_out, n_bases + 1, w), wdt),
                )
                torch.mm(gy, w_ext, out=g_feats[:, used].view(n_tok, -1))
                u_c = u[:, a:b]
                sig = torch.sigmoid(u_c)
                g_silu = g_feats[:, order + n_bases]  # (N, w)
                torch.mul(g_silu.to(cdt), sig * (1 + u_c * (1 - sig)), out=g_u[:, a:b])  # silu'(u)
                g_silu.zero_()  # the row doubles as a spare row for phantom values: their slope is 0
                g_local = torch.gather(g_feats.view(n_tok, -1), 1, index.reshape(n_tok, -1)).view_as(dvals)
                g_u[:, a:b] += (g_local.to(cdt) * dvals).sum(1)
        g_x = None
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
    transient block (default: CPU_CHUNK_BYTES = 24 MiB on CPU, CUDA_CHUNK_BYTES = 256 MiB on GPU).
    """
    if uniform is None:
        uniform = is_uniform(grid)
    if chunk_bytes is None:
        chunk_bytes = CUDA_CHUNK_BYTES if x.is_cuda else CPU_CHUNK_BYTES
    return KANLinearFunction.apply(
        x, grid, base_weight, spline_weight, spline_scaler, order, norm, uniform, chunk_bytes
    )
