"""kan_light and its group-rational activation: formula, init, gradients, memory, dtypes, names."""

import pytest
import torch
import torch.nn.functional as F

import llava_df.projectors.rational as rational
from llava_df.projectors import create_projector
from llava_df.projectors.profile import num_parameters, saved_tensor_bytes
from llava_df.projectors.rational import (
    GELU_FIT_MAX_ERROR,
    GELU_FIT_RANGE,
    GroupRational,
    GroupRationalFunction,
    rational_reference,
)


def coefficients(groups, m, n, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    num = (torch.randn(groups, m + 1, generator=g, dtype=dtype) * 0.5).requires_grad_()
    den = (torch.randn(groups, n, generator=g, dtype=dtype) * 0.5).requires_grad_()
    return num, den


# ---- formula and init ------------------------------------------------------------------------
def test_stored_gelu_constants_reproduce_gelu_on_the_fit_range():
    act = GroupRational(8, groups=8, init="gelu")
    x = torch.linspace(*GELU_FIT_RANGE, 8001)
    with torch.no_grad():
        y = act(x[:, None].expand(-1, 8).contiguous())  # every group sees the whole range
    err = (y - F.gelu(x)[:, None]).abs().max().item()
    assert err <= GELU_FIT_MAX_ERROR
    assert err > GELU_FIT_MAX_ERROR / 2  # the stated bound is the fit's, not a loose guess


def test_identity_init_is_exactly_identity():
    act = GroupRational(64, groups=8, init="identity")
    x = torch.randn(3, 10, 64) * torch.logspace(-3, 6, 64)  # large values too: no x^5 round-off
    assert torch.equal(act(x), x)


@pytest.mark.parametrize("m,n", [(5, 4), (1, 1), (3, 2), (6, 6)])
def test_function_matches_plain_autograd_formula(m, n):
    x = torch.randn(4, 7, 24, dtype=torch.float64, requires_grad=True)
    num, den = coefficients(3, m, n)
    y = GroupRationalFunction.apply(x, num, den)
    y_ref = rational_reference(x, num, den)
    # Q = 1 + |b_1 x + ... + b_n x^n|, the one denominator used everywhere:
    xg = x.detach().reshape(-1, 3, 8)
    p = sum(num.detach()[:, k, None] * xg**k for k in range(m + 1))
    b = sum(den.detach()[:, k - 1, None] * xg**k for k in range(1, n + 1))
    torch.testing.assert_close(y.detach(), (p / (1 + b.abs())).reshape(x.shape))
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, num, den), g)
    grads_ref = torch.autograd.grad(y_ref, (x, num, den), g)
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want)


# ---- gradients -------------------------------------------------------------------------------
@pytest.mark.parametrize("m,n", [(5, 4), (1, 1), (2, 3)])
def test_gradcheck_input_and_coefficients(m, n):
    x = torch.randn(5, 16, dtype=torch.float64, requires_grad=True)
    num, den = coefficients(4, m, n, seed=m + n)
    assert torch.autograd.gradcheck(GroupRationalFunction.apply, (x, num, den))


def test_gradcheck_across_chunks(monkeypatch):
    # Large inputs are processed in row chunks; gradients must add up across them.
    monkeypatch.setattr(rational, "_chunk_rows", lambda x: 2)
    x = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    num, den = coefficients(2, 5, 4, seed=7)
    assert torch.autograd.gradcheck(GroupRationalFunction.apply, (x, num, den))


def test_identity_init_still_trains_its_denominator():
    # B = 0 everywhere at identity init; d|B|/dB is taken as +1 there, else b could never move.
    act = GroupRational(16, groups=4, init="identity")
    act(torch.randn(32, 16)).pow(2).sum().backward()
    assert (act.denominator.grad.abs() > 0).all()
    assert (act.numerator.grad.abs() > 0).all()


def test_rational_learns_a_target_function():
    torch.manual_seed(0)
    act = GroupRational(4, groups=1, init="identity")
    x = torch.linspace(-2, 2, 256)[:, None].expand(-1, 4)
    target = torch.sin(2 * x)
    opt = torch.optim.Adam(act.parameters(), lr=0.02)
    first = None
    for _ in range(300):
        loss = (act(x) - target).pow(2).mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 20


# ---- memory ----------------------------------------------------------------------------------
def test_saves_only_its_input_for_backward():
    x = torch.randn(64, 256, requires_grad=True)
    act = GroupRational(256, groups=8)
    assert saved_tensor_bytes(act, x) == x.numel() * x.element_size()
    # Plain autograd on the same formula keeps many input-sized intermediates.
    eager = torch.nn.Module()
    eager.forward = lambda t: rational_reference(t, act.numerator, act.denominator)
    assert saved_tensor_bytes(eager, x) > 5 * x.numel() * x.element_size()


def test_kan_light_saves_what_mlp2x_gelu_saves():
    x = torch.randn(1, 48, 64)
    kan = create_projector("kan_light", 64, 128)
    mlp = create_projector("mlp2x_gelu", 64, 128)
    assert saved_tensor_bytes(kan, x) == saved_tensor_bytes(mlp, x)


# ---- dtypes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_are_computed_in_fp32(dtype):
    act = GroupRational(16, groups=4)
    x = (torch.randn(8, 16) * 4).to(dtype)
    x[0, 0] = 12.0  # x^5 = 248832: inf in fp16 arithmetic
    y = act(x)
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert torch.equal(y, act(x.float()).to(dtype))  # fp32 result, rounded once


def test_half_input_gradients_match_fp32():
    act = GroupRational(16, groups=4)
    x = torch.randn(8, 16).bfloat16().requires_grad_()
    x32 = x.detach().float().requires_grad_()
    g = torch.randn(8, 16)
    act(x).backward(g.bfloat16())
    grad_num_half = act.numerator.grad.clone()
    act.zero_grad()
    act(x32).backward(g.bfloat16().float())
    assert x.grad.dtype == torch.bfloat16
    torch.testing.assert_close(x.grad, x32.grad.bfloat16())
    torch.testing.assert_close(grad_num_half, act.numerator.grad)


# ---- the projector and its names -------------------------------------------------------------
def test_kan_light_structure_and_parameter_count():
    kan, mlp = create_projector("kan_light", 64, 128), create_projector("mlp2x_gelu", 64, 128)
    assert [type(m).__name__ for m in kan] == ["Linear", "GroupRational", "Linear"]
    assert kan[1].groups == 8 and kan[1].init == "gelu"
    assert num_parameters(kan) == num_parameters(mlp) + 8 * (6 + 4)
    assert num_parameters(create_projector("kan_light_g16", 64, 128)) == num_parameters(mlp) + 16 * (6 + 4)
    assert num_parameters(
        create_projector("kan_light", 64, 128, numerator_degree=3, denominator_degree=2, init="identity")
    ) == (num_parameters(mlp) + 8 * (4 + 2))


def test_groups_must_divide_out_dim():
    with pytest.raises(ValueError, match=r"groups=3 must divide out_dim=64.*kan_light_g4"):
        create_projector("kan_light_g3", 16, 64)
    assert create_projector("kan_light_g4", 16, 64)[1].groups == 4


def test_options():
    x = torch.randn(3, 16)
    torch.manual_seed(0)
    default = create_projector("kan_light", 16, 32)
    torch.manual_seed(0)
    higher = create_projector("kan_light", 16, 32, numerator_degree=7, denominator_degree=6)
    torch.testing.assert_close(higher(x), default(x))  # extra GELU coefficients start at zero
    with pytest.raises(ValueError, match=r"fitted at degrees 5/4.*init='identity'"):
        create_projector("kan_light", 16, 32, numerator_degree=3)
    with pytest.raises(ValueError, match=r"init='relu' is not one of"):
        create_projector("kan_light", 16, 32, init="relu")
    with pytest.raises(ValueError, match=r"Degrees must be >= 1"):
        create_projector("kan_light_g4", 16, 32, init="identity", denominator_degree=0)
    with pytest.raises(TypeError, match="groups"):  # groups come from the name: kan_light_g{groups}
        create_projector("kan_light", 16, 32, groups=16)


def test_identity_init_projector_is_two_linears():
    module = create_projector("kan_light", 16, 32, init="identity")
    x = torch.randn(2, 4, 16)
    torch.testing.assert_close(module(x), module[2](module[0](x)))


def test_warm_start_from_llava_mlp_weights():
    # Linear layers sit at mlp2x_gelu's keys: a LLaVA mm_projector loads (activation keys missing)
    # and, with the GELU init, gives the MLP's output up to the fit error.
    mlp = create_projector("mlp2x_gelu", 16, 32)
    kan = create_projector("kan_light", 16, 32)
    result = kan.load_state_dict(mlp.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["1.denominator", "1.numerator"] and not result.unexpected_keys
    x = torch.randn(4, 16)
    with torch.no_grad():
        assert mlp[0](x).abs().max() < GELU_FIT_RANGE[1]  # pre-activations inside the fitted range
        bound = mlp[2].weight.abs().sum(1).max() * GELU_FIT_MAX_ERROR
        assert (kan(x) - mlp(x)).abs().max() <= bound


def test_non_finite_input_raises():
    x = torch.randn(2, 16)
    x[0, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        create_projector("kan_light", 16, 32)(x)
