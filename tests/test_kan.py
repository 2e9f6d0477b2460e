"""The B-spline KAN projector (llava_df.projectors.kan) against efficient-kan's math.

benchmarks/reference_kan.py is efficient-kan's KANLinear written out densely (full basis tensor, autograd
through it); it is the oracle for values, gradients, init and state-dict layout.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from reference_kan import ReferenceKAN, ReferenceKANLinear  # benchmarks/ (on sys.path via conftest)

from llava_df.projectors import PRESETS, create_projector
from llava_df.projectors.bspline import dense_bases
from llava_df.projectors.kan import KANLinear, KANProjector
from llava_df.projectors.profile import num_parameters, saved_tensor_bytes

F64 = torch.float64


def clip_like(n=300, width=32, seed=0, dtype=torch.float32, outliers=True):
    """Features far from [-1, 1]: scale 3, a per-dim offset, and (optionally) two dims 8x larger."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, width, generator=gen) * 3 + torch.randn(width, generator=gen) * 2
    if outliers:
        x[:, :2] *= 8  # CLIP has a handful of massive-activation dims
    return x.to(dtype)


def pair(n_in=6, n_out=5, g=5, k=3, seed=0, **kwargs):
    """(reference, ours) with identical float64 weights; spline weights made non-trivial."""
    torch.manual_seed(seed)
    ref = ReferenceKANLinear(n_in, n_out, g, k, **kwargs).double()
    with torch.no_grad():
        ref.spline_weight.normal_()  # efficient-kan's init is ~1e-2 noise: too easy to match
    ours = KANLinear(n_in, n_out, g, k, **kwargs).double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


# ---- registry and size -------------------------------------------------------------------------
def test_presets_are_registered_and_parse():
    for name in ("kan_h256_g5_k3", "kan_h128_g5_k3", "kan_h64_g5_k3", "kan_h64_g3_k2"):
        assert name in PRESETS
    proj = create_projector("kan_h64_g3_k2", 24, 40)
    assert isinstance(proj, KANProjector) and proj.widths == [24, 64, 40]
    assert [(layer.grid_size, layer.spline_order) for layer in proj.layers] == [(3, 2), (3, 2)]
    assert proj.layers[0].grid.shape == (24, 3 + 2 * 2 + 1)


def test_parameter_count_kan_1024_256_4096():
    # base (out, in) + spline (out, in, G+K) + scaler (out, in) = (G + K + 2) per edge.
    proj = create_projector("kan_h256_g5_k3", 1024, 4096)
    assert num_parameters(proj) == (1024 * 256 + 256 * 4096) * (5 + 3 + 2) == 13_107_200
    # The non-affine LayerNorms add no parameters; LLaVA's MLP is 20,979,712.
    assert num_parameters(create_projector("mlp2x_gelu", 1024, 4096)) == 20_979_712


# ---- efficient-kan compatibility ---------------------------------------------------------------
def test_same_seed_gives_efficient_kan_init():
    torch.manual_seed(7)
    ref = ReferenceKANLinear(9, 4, 5, 3, scale_noise=0.3, scale_base=0.5, scale_spline=2.0)
    torch.manual_seed(7)
    ours = KANLinear(9, 4, 5, 3, scale_noise=0.3, scale_base=0.5, scale_spline=2.0)
    for key, value in ref.state_dict().items():
        # spline_weight: pinv here vs lstsq there, the same minimum-norm solution.
        assert torch.allclose(ours.state_dict()[key], value, atol=1e-6), key
    assert ours.spline_weight.abs().max() > 0


def test_efficient_kan_state_dict_loads_strictly_and_gives_the_same_output():
    ref = ReferenceKAN([12, 7, 10], grid_size=4, spline_order=2).double()
    proj = KANProjector([12, 7, 10], 4, 2, input_norm="none", hidden_norm="none").double()
    assert proj.state_dict().keys() == ref.state_dict().keys()
    assert all(proj.state_dict()[k].shape == v.shape for k, v in ref.state_dict().items())
    proj.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 5, 12, dtype=F64)
    assert torch.allclose(proj(x), ref(x), atol=1e-12)


@pytest.mark.parametrize("nonuniform", [False, True])
def test_layer_output_and_gradients_equal_reference_in_float64(nonuniform):
    ref, ours = pair()
    if nonuniform:  # e.g. after update_grid: knots from data, the general (gathering) path
        with torch.no_grad():
            ref.update_grid(torch.randn(200, 6, dtype=F64) * 0.7)
        ours.load_state_dict(ref.state_dict())
    x = (torch.randn(40, 6, dtype=F64) * 1.5).requires_grad_()
    y_ref, y = ref(x), ours(x)
    assert torch.allclose(y, y_ref, atol=1e-12, rtol=0)
    gy = torch.randn_like(y)
    params = ["base_weight", "spline_weight", "spline_scaler"]
    g_ref = torch.autograd.grad(y_ref, [x] + [getattr(ref, p) for p in params], gy)
    g = torch.autograd.grad(y, [x] + [getattr(ours, p) for p in params], gy)
    for name, a, b in zip(["x"] + params, g, g_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-10, rtol=0), name


def test_layernorm_layer_equals_reference_on_normalized_input():
    ref, _ = pair()
    ours = KANLinear(6, 5, input_norm="layernorm", norm_span=2.0).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(30, 6, dtype=F64) * 4 + 3
    u = F.layer_norm(x, (6,), eps=1e-5) * 0.5  # +-2 std onto grid_range (-1, 1)
    assert torch.allclose(ours(x), ref(u), atol=1e-12)


def test_state_dict_round_trip_keeps_an_updated_grid():
    proj = create_projector("kan_h64_g5_k3", 16, 24)
    x = clip_like(width=16)
    proj.update_grid(x)
    fresh = create_projector("kan_h64_g5_k3", 16, 24)
    fresh.load_state_dict(proj.state_dict(), strict=True)
    assert torch.equal(fresh.layers[0].grid, proj.layers[0].grid)
    assert torch.equal(fresh(x), proj(x))


# ---- update_grid -------------------------------------------------------------------------------
def smooth_splines_(layer, seed=0):
    """Spline coefficients sampled from a smooth curve per edge (what training tends to give)."""
    gen = torch.Generator().manual_seed(seed)
    k, n_out, n_in = layer.spline_order, layer.out_features, layer.in_features
    centers = torch.stack(
        [layer.grid[:, m : m + k + 2].mean(1) for m in range(layer.grid_size + k)], -1
    )  # (in, C)
    freq = torch.rand(n_out, n_in, 1, generator=gen, dtype=centers.dtype) * 3
    phase = torch.rand(n_out, n_in, 1, generator=gen, dtype=centers.dtype) * 6
    with torch.no_grad():
        layer.spline_weight.copy_(torch.sin(freq * centers + phase))


def test_update_grid_keeps_the_function_and_moves_the_knots():
    ref, ours = pair()
    smooth_splines_(ours)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(500, 6, dtype=F64) * 0.4 + 0.3  # narrower than, and off the centre of, [-1, 1]
    before, old_grid = ours(x), ours.grid.clone()
    ours.update_grid(x)
    change = ((ours(x) - before).norm() / before.norm()).item()
    assert change < 0.02
    assert not torch.allclose(ours.grid, old_grid)
    # Knots are efficient-kan's (quantiles blended with uniform by grid_eps).
    ref.update_grid(x)
    assert torch.allclose(ours.grid, ref.grid, atol=1e-12)
    # Its update_grid rescales the fitted curve by spline_scaler a second time.
    assert ((ref(x) - before).norm() / before.norm()).item() > 0.3


def test_projector_update_grid_on_clip_like_features():
    torch.manual_seed(0)
    proj = create_projector("kan_h64_g5_k3", 32, 48)
    for i, layer in enumerate(proj.layers):
        smooth_splines_(layer, seed=i)
    # Without the outlier dims: their values land past the old extended span, where the old
    # spline is 0, and 5 quantile intervals cannot follow both (measured 2-3% there).
    x = clip_like(width=32, outliers=False)
    before = proj(x)
    grids = [layer.grid.clone() for layer in proj.layers]
    proj.update_grid(x)
    assert ((proj(x) - before).norm() / before.norm()).item() < 0.02
    assert all(not torch.allclose(layer.grid, g) for layer, g in zip(proj.layers, grids, strict=True))


# ---- regularization ----------------------------------------------------------------------------
def brute_force_reg(proj, x, act_w, ent_w):
    """The KAN paper's L1 + entropy from the full (tokens, out, in) activation tensor."""
    total, h = 0.0, x
    for layer in proj.layers:
        u = layer.normalized_input(h)  # (N, in)
        bases = dense_bases(u, layer.grid.to(u.dtype), layer.spline_order)  # (N, in, C)
        spline = (
            torch.einsum("nic,oic->noi", bases, layer.spline_weight.double()) * layer.spline_scaler.double()
        )
        phi = spline + F.silu(u)[:, None, :] * layer.base_weight.double()  # (N, out, in)
        a = phi.abs().mean(0)
        p = a / a.sum()
        total = total + act_w * a.sum() - ent_w * (p * p.log()).sum()
        h = layer(h)
    return total


def test_regularization_loss_equals_the_dense_definition():
    torch.manual_seed(0)
    proj = create_projector("kan_h64_g3_k2", 10, 12).double()
    x = clip_like(n=50, width=10, dtype=F64)
    loss = proj.regularization_loss(x, regularize_activation=0.7, regularize_entropy=0.3, max_tokens=None)
    assert torch.allclose(loss, brute_force_reg(proj, x, 0.7, 0.3), rtol=1e-10)


def test_regularization_loss_is_differentiable_memory_bounded_and_tracks_weights():
    torch.manual_seed(0)
    proj = create_projector("kan_h64_g5_k3", 16, 24)
    x = clip_like(n=100, width=16)
    loss = proj.regularization_loss(x, max_tokens=32)
    assert torch.isfinite(loss) and loss.item() >= 0
    loss.backward()
    for name, p in proj.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # Chunking (one token per chunk) gives the same value.
    small = [
        layer.activation_l1(h, max_tokens=32, chunk_elements=1)
        for layer, h in zip(proj.layers, proj.layer_inputs(x), strict=True)
    ]
    full = [
        layer.activation_l1(h, max_tokens=32)
        for layer, h in zip(proj.layers, proj.layer_inputs(x), strict=True)
    ]
    assert all(torch.allclose(a, b, rtol=1e-5) for a, b in zip(small, full, strict=True))
    with torch.no_grad():
        proj.layers[1].spline_weight.mul_(3)
    assert proj.regularization_loss(x, max_tokens=32).item() != pytest.approx(loss.item(), rel=1e-3)


def test_regularization_loss_uses_the_last_training_forward():
    torch.manual_seed(0)
    proj = create_projector("kan_h64_g5_k3", 16, 24)  # reg_tokens=64 >= 40 tokens: all recorded
    with pytest.raises(ValueError, match="regularization_loss"):
        proj.regularization_loss()
    x = clip_like(n=40, width=16)
    proj.train()
    proj(x)
    assert torch.allclose(proj.regularization_loss(), proj.regularization_loss(x))


# ---- grid coverage and normalization -----------------------------------------------------------
def test_grid_coverage_on_a_constructed_example():
    layer = KANLinear(4, 3, input_norm="none")  # grid range [-1, 1]
    x = torch.tensor([[-2.0, -1.0, 0.0, 0.5], [1.0, 1.5, 3.0, -0.99]])  # 5 of 8 values inside
    assert layer.grid_coverage(x) == pytest.approx(5 / 8)
    proj = KANProjector([4, 6, 3], input_norm="none")
    cov = proj.grid_coverage(x)
    assert len(cov) == 2 and cov[0] == pytest.approx(5 / 8) and all(0 <= c <= 1 for c in cov)


def test_normalization_puts_clip_like_features_inside_both_grids():
    x = clip_like(n=500, width=64)
    torch.manual_seed(0)
    cov_norm = create_projector("kan_h64_g5_k3", 64, 48).grid_coverage(x)
    torch.manual_seed(0)
    cov_raw = create_projector("kan_h64_g5_k3", 64, 48, input_norm="none", hidden_norm="none").grid_coverage(
        x
    )
    assert all(c > 0.9 for c in cov_norm)  # +-2 std on the grid: ~95% of a Gaussian
    assert cov_raw[0] < 0.4  # raw CLIP-like values mostly miss [-1, 1]


# ---- memory, dtypes, errors --------------------------------------------------------------------
def test_saved_for_backward_is_the_two_layer_inputs_only():
    proj = create_projector("kan_h64_g5_k3", 32, 48)
    x = clip_like(n=200, width=32)  # frozen vision features: no grad
    grids = sum(layer.grid.numel() * 4 for layer in proj.layers)
    # x (input of layer 1) and the hidden activations (input of layer 2): what two nn.Linear save.
    assert saved_tensor_bytes(proj, x) == x.numel() * 4 + 200 * 64 * 4 + grids


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_forward_and_backward_in_each_dtype(dtype):
    torch.manual_seed(0)
    proj = create_projector("kan_h64_g5_k3", 32, 48)
    x = clip_like(n=60, width=32)
    ref = proj(x).detach()
    proj = proj.to(dtype)
    out = proj(x.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() <= 0.05 * ref.abs().max()
    out.float().pow(2).mean().backward()
    assert all(
        p.grad is not None and p.grad.dtype == dtype and torch.isfinite(p.grad).all()
        for p in proj.parameters()
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"grid_size": 0}, r"grid_size \(G\) must be an int >= 1, got 0"),
        ({"spline_order": 0}, r"spline_order \(K\) must be an int >= 1, got 0"),
        ({"grid_size": 2.5}, r"grid_size \(G\) must be an int >= 1, got 2.5"),
        ({"grid_range": (1, -1)}, r"grid_range must be \(low, high\) with low < high, got \(1, -1\)"),
        ({"input_norm": "batchnorm"}, r"input_norm must be one of \('layernorm', 'none'\), got 'batchnorm'"),
        ({"norm_span": 0}, r"norm_span must be > 0"),
    ],
)
def test_bad_settings_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KANLinear(4, 3, **kwargs)


def test_bad_input_raises_clear_errors():
    layer = KANLinear(4, 3)
    with pytest.raises(ValueError, match=r"expects input of shape \(\.\.\., 4\), got \(2, 5\)"):
        layer(torch.randn(2, 5))
    x = torch.randn(3, 4)
    x[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"1 non-finite values \(NaN/inf\)"):
        layer(x)
    x[1, 2] = math.inf
    with pytest.raises(ValueError, match=r"1 non-finite"):
        KANProjector([4, 8, 3])(x)
    with pytest.raises(TypeError, match="grid_sizes"):
        create_projector("kan_h64_g5_k3", 4, 3, grid_sizes=3)
