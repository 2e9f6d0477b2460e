"""B-spline bases and the KAN layer's autograd Function (llava_df.projectors.bspline).

Oracles: scipy.interpolate.BSpline for the bases, float64 finite differences (gradcheck) for
the hand-written backward, efficient-kan's dense formula for the layer.
"""

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline

from llava_df.projectors.bspline import (
    KANLinearFunction,
    cardinal_pieces,
    dense_bases,
    feature_chunks,
    is_uniform,
    kan_linear,
    local_bases,
    uniform_grid,
)

F64 = torch.float64


def knots(g: int, k: int, uniform: bool, n_in: int = 3, seed: int = 0) -> torch.Tensor:
    """(n_in, G + 2K + 1) float64 knots: exactly uniform over [-1, 1], or random increasing."""
    if uniform:
        step = 2.0 / g
        row = torch.arange(-k, g + k + 1, dtype=F64) * step - 1.0
        return row.expand(n_in, -1).contiguous()
    gen = torch.Generator().manual_seed(seed)
    gaps = torch.rand(n_in, g + 2 * k, generator=gen, dtype=F64) + 0.2
    return torch.cat([torch.zeros(n_in, 1, dtype=F64), gaps.cumsum(1)], 1) - 2.0


def scipy_bases(x: np.ndarray, t: np.ndarray, k: int) -> np.ndarray:
    """Every basis B_m on knots t at x, 0 outside its support (scipy gives NaN there)."""
    n_bases = len(t) - k - 1
    cols = [
        np.nan_to_num(BSpline.basis_element(t[m : m + k + 2], extrapolate=False)(x)) for m in range(n_bases)
    ]
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("g", [1, 3, 5])
def test_bases_equal_scipy_inside_and_outside_the_grid(g, k, uniform):
    grid = knots(g, k, uniform)
    x = torch.linspace(-4.0, 4.0, 801, dtype=F64)  # well past the extended knot span on both sides
    u = x[:, None].expand(-1, grid.shape[0]).contiguous()
    ours = dense_bases(u, grid, k, uniform=uniform)  # (N, in, C)
    assert ours.shape == (801, grid.shape[0], g + k)
    for i in range(grid.shape[0]):
        t = grid[i].numpy()
        ref = scipy_bases(x.numpy(), t, k)
        np.testing.assert_allclose(ours[:, i].numpy(), ref, atol=1e-6, rtol=0)
        # And scipy's design matrix on the base interval [t_K, t_{G+K}] (extrapolate=False).
        inside = x[(x >= t[k]) & (x <= t[g + k])].numpy()
        design = BSpline.design_matrix(inside, t, k, extrapolate=False).toarray()
        mask = ((x >= t[k]) & (x <= t[g + k])).numpy()
        np.testing.assert_allclose(ours[mask, i].numpy(), design, atol=1e-6, rtol=0)


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_partition_of_unity_inside_and_zero_outside_the_span(k, uniform):
    g = 5
    grid = knots(g, k, uniform, n_in=2)
    lo, hi = grid[:, k], grid[:, g + k]  # the grid range
    frac = torch.rand(500, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    u = lo + frac * (hi - lo)
    assert torch.allclose(dense_bases(u, grid, k, uniform=uniform).sum(-1), torch.ones_like(u), atol=1e-12)
    # Outside [t_0, t_{G+2K}) every basis is 0 (efficient-kan's semantics), even for huge values.
    far = torch.stack(
        [
            grid[:, 0] - 0.5,
            grid[:, -1] + 0.5,
            torch.full((2,), -1e30, dtype=F64),
            torch.full((2,), 1e30, dtype=F64),
        ]
    )
    assert dense_bases(far, grid, k, uniform=uniform).abs().max() == 0
    # At the last knot itself: 0 up to the rounding of (u - t_0) / h.
    assert dense_bases(grid[:, -1][None], grid, k, uniform=uniform).abs().max() <= 1e-12


@pytest.mark.parametrize("k", [1, 2, 3])
def test_uniform_fast_path_equals_general_de_boor_path(k):
    grid = knots(5, k, uniform=True)
    u = torch.randn(300, 3, dtype=F64) * 1.5
    j1, v1, d1 = local_bases(u, grid, k, uniform=True, derivative=True)
    j2, v2, d2 = local_bases(u, grid, k, uniform=False, derivative=True)
    assert v1.shape == (300, k + 1, 3)  # only the K + 1 local values, never (N, in, G + 2K)
    assert torch.allclose(
        dense_bases(u, grid, k, uniform=True), dense_bases(u, grid, k, uniform=False), atol=1e-12
    )
    inside = (u > grid[:, 0]) & (u < grid[:, -1])  # past the span the paths park u differently
    assert torch.equal(j1[inside], j2[inside])
    mask = inside.unsqueeze(1)
    assert torch.allclose(v1 * mask, v2 * mask, atol=1e-12) and torch.allclose(
        d1 * mask, d2 * mask, atol=1e-10
    )


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_basis_derivative_matches_finite_differences(k, uniform):
    grid = knots(4, k, uniform)
    u = torch.rand(400, 3, dtype=F64, generator=torch.Generator().manual_seed(2)) * 8 - 4
    # Stay away from knots, where the derivative of order-K splines jumps (K = 1) or bends.
    near = (u[..., None] - grid[None]).abs().amin(-1) < 1e-4
    u = torch.where(near, u + 3e-4, u)
    j, vals, dvals = local_bases(u, grid, k, uniform=uniform, derivative=True)
    eps = 1e-7
    fd = (dense_bases(u + eps, grid, k, uniform=uniform) - dense_bases(u - eps, grid, k, uniform=uniform)) / (
        2 * eps
    )
    dense_d = torch.zeros_like(fd)
    cols = j[..., None] - k + torch.arange(k + 1)  # basis index of each local value
    valid = (cols >= 0) & (cols < fd.shape[-1])
    dense_d.scatter_add_(-1, cols.clamp(0, fd.shape[-1] - 1), torch.where(valid, dvals.transpose(1, 2), 0.0))
    assert torch.allclose(dense_d, fd, atol=1e-6)


def test_cardinal_pieces_known_values():
    assert cardinal_pieces(1) == ((1.0, 0.0), (-1.0, 1.0))  # 1 - s and s
    coef = np.array(cardinal_pieces(3))  # (power, local index)
    at0 = coef[0]  # cubic B-spline at a knot: 1/6, 2/3, 1/6, 0
    np.testing.assert_allclose(at0, [1 / 6, 2 / 3, 1 / 6, 0.0], atol=1e-15)
    for k in (1, 2, 3, 4):  # the K + 1 local values sum to 1 for every s
        s = np.linspace(0, 1, 7)
        total = sum(np.array(cardinal_pieces(k))[p].sum() * s**p for p in range(k + 1))
        np.testing.assert_allclose(total, 1.0, atol=1e-12)


def test_is_uniform():
    assert is_uniform(uniform_grid(4, 5, 3, (-1, 1)))
    assert not is_uniform(knots(5, 3, uniform=False))
    # float32 knots used in float64 are taken exactly as stored, i.e. by the general path.
    assert not is_uniform(uniform_grid(4, 5, 3, (-1, 1)).double())
    assert is_uniform(knots(5, 3, uniform=True))


def test_feature_chunks_cover_every_feature_within_budget():
    chunks = feature_chunks(1000, per_feature_bytes=100, budget=3000)
    assert chunks[0][0] == 0 and chunks[-1][1] == 1000
    assert all(a2 == b1 for (_, b1), (a2, _) in zip(chunks[:-1], chunks[1:], strict=True))
    assert all((b - a) * 100 <= 3000 for a, b in chunks)
    assert feature_chunks(7, per_feature_bytes=10**9, budget=1) == [(i, i + 1) for i in range(7)]


def dense_layer(x, grid, wb, ws, sc, k, norm=None):
    """efficient-kan's layer written densely (the oracle): autograd through everything."""
    if norm is not None:
        x = torch.nn.functional.layer_norm(x, x.shape[-1:], eps=1e-5) * norm[0] + norm[1]
    bases = dense_bases(x, grid, k, uniform=False)  # (N, in, C)
    return (
        torch.nn.functional.silu(x) @ wb.T
        + bases.reshape(x.shape[0], -1) @ (ws * sc[..., None]).reshape(ws.shape[0], -1).T
    )


def layer_tensors(n_in=4, n_out=3, g=3, k=2, uniform=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    grid = knots(g, k, uniform, n_in=n_in)
    wb = torch.randn(n_out, n_in, dtype=F64, generator=gen)
    ws = torch.randn(n_out, n_in, g + k, dtype=F64, generator=gen)
    sc = torch.randn(n_out, n_in, dtype=F64, generator=gen)
    x = torch.randn(6, n_in, dtype=F64, generator=gen) * 1.2
    return x, grid, wb, ws, sc


@pytest.mark.parametrize("chunk_bytes", [2**30, 1])  # one chunk, and one input feature per chunk
@pytest.mark.parametrize("norm", [None, (0.5, 0.1)])
@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("k", [1, 3])
def test_gradcheck_input_and_every_weight(k, uniform, norm, chunk_bytes):
    x, grid, wb, ws, sc = layer_tensors(k=k, uniform=uniform)
    tensors = [t.requires_grad_() for t in (x, wb, ws, sc)]

    def fn(x, wb, ws, sc):
        return KANLinearFunction.apply(x, grid, wb, ws, sc, k, norm, uniform, chunk_bytes)

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-5)
    # And the same values and gradients as the dense formula.
    ours = fn(*tensors)
    ref = dense_layer(x, grid, wb, ws, sc, k, norm)
    assert torch.allclose(ours, ref, atol=1e-12)
    gy = torch.randn_like(ours)
    g_ours = torch.autograd.grad(ours, tensors, gy)
    g_ref = torch.autograd.grad(ref, tensors, gy)
    for a, b in zip(g_ours, g_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def test_frozen_input_saves_only_the_input_and_gets_no_gradient():
    x, grid, wb, ws, sc = layer_tensors(n_in=8, n_out=5, g=5, k=3)
    x = x.repeat(50, 1)  # 300 tokens: a (tokens, in, C) tensor would be 300 * 8 * 8 doubles
    weights = [t.requires_grad_() for t in (wb, ws, sc)]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = kan_linear(x, grid, *weights, 3, norm=(0.5, 0.0))
    non_params = [t for t in saved if not any(t is w for w in weights)]
    assert sorted(t.numel() for t in non_params) == sorted([x.numel(), grid.numel()])
    y.sum().backward()
    assert x.grad is None and all(w.grad is not None for w in weights)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_matches_float64(dtype):
    x, grid, wb, ws, sc = layer_tensors(n_in=16, n_out=8, g=5, k=3)
    ref = kan_linear(x, grid, wb, ws, sc, 3, norm=(0.5, 0.0))
    cast = [t.to(dtype) for t in (x, grid, wb, ws, sc)]
    out = kan_linear(*cast, 3, norm=(0.5, 0.0))
    assert out.dtype == dtype
    tol = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}[dtype]
    assert (out.double() - ref).abs().max() <= tol * ref.abs().max()
