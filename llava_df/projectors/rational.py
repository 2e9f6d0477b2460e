"""Group-rational activation of GR-KAN (Yang & Wang 2024, "Kolmogorov-Arnold Transformer").

Channels are split into ``groups`` contiguous groups; every channel of group ``g`` goes through
the same learnable rational function::

    F(x) = P(x) / Q(x),   P(x) = a_0 + a_1 x + ... + a_m x^m           (m = 5 by default)
                          Q(x) = 1 + |b_1 x + b_2 x^2 + ... + b_n x^n|   (n = 4 by default)

Why this denominator (KAT's code uses three different ones across its CUDA kernel, Triton
kernel and PyTorch reference; this file uses one, everywhere):
- it is the formula written in the KAT paper, so a reader can check it against the paper;
- Q >= 1 for every x and every b, so F has no pole and 1/Q never amplifies gradients;
- it costs one Horner pass and one abs; ``1 + sum |b_k| |x|^k`` costs the same but forces an
  even denominator, while this one fits GELU just as well (max error ~2.4e-3 on [-4, 4] for both).
The abs has a kink where B(x) = 0; its derivative there is taken as +1 (not torch.sign's 0), so
the identity init (b = 0, hence B = 0 everywhere) still gives the denominator a gradient; with
sign(0) = 0 the denominator of an identity-initialised layer could never leave zero.

Memory: ``GroupRationalFunction`` saves only its input (plus the coefficients, which are
parameters) and recomputes P, P', B, B' in backward. Eager autograd on the same Horner loops
would keep ~m + n intermediate tensors of the input's size alive until backward.

Precision: the polynomial is evaluated in float32 (float64 for float64 input) whatever the input
dtype, and the result cast back: x^5 overflows fp16 already at |x| > 9.2, and bf16's 8-bit
mantissa loses the cancellation between P's terms. The saved input stays in its own dtype.

GELU init: ``GELU_NUMERATOR``/``GELU_DENOMINATOR`` below were fitted once, under exactly this
formula, by::

    python -m llava_df.projectors --fit-gelu

(least squares on 4001 points of [-4, 4], started from the linearised solution of
P(x) - GELU(x) B(x) = GELU(x), refined with LBFGS in float64). Max error on [-4, 4]:
``GELU_FIT_MAX_ERROR``. Outside that range no degree-5/4 rational can follow GELU (its
asymptotes are one line on both sides); the coefficients are trainable.
"""

from __future__ import annotations

import torch
from torch import nn

from llava_df.projectors.catalog import GELU_FIT_RANGE

# Coefficients lowest degree first: a_0..a_5 and b_1..b_4, as printed by
# `python -m llava_df.projectors --fit-gelu` (see the module docstring).
GELU_NUMERATOR = (
    -0.00238093582435422,
    0.49999928136659233,
    0.41224447675142206,
    0.10787543296643866,
    0.00720742296005018,
    -0.0004590176884383732,
)
GELU_DENOMINATOR = (8.188250895996155e-06, 0.2157487564998977, -3.527422239307972e-06, -0.0009170768080923654)
GELU_FIT_MAX_ERROR = 2.4e-3  # measured max |F(x) - GELU(x)| on GELU_FIT_RANGE, rounded up

INITS = ("gelu", "identity")


def _horner(x: torch.Tensor, coef: torch.Tensor, derivative: bool = False):
    """Evaluate sum_k coef[k] x^k (and its derivative) by Horner's rule.

    x: (N, g, d); coef: (k+1, g, 1), lowest degree first, k >= 1. Each step is one fused
    addcmul over x written in place (out=): k passes (2k - 1 with the derivative) and one or two
    allocations; on CPU a fresh 4096-wide buffer costs as much as a pass (page faults).
    """
    value = torch.addcmul(coef[-2], coef[-1], x)  # (N, g, d): c_k x + c_{k-1}
    slope = None
    for k in range(coef.shape[0] - 3, -1, -1):
        if derivative:  # d/dx (v x + c) = v + v' x, with v' = c_k at the first step
            slope = (
                torch.addcmul(value, coef[-1], x)
                if slope is None
                else torch.addcmul(value, slope, x, out=slope)
            )
        torch.addcmul(coef[k], value, x, out=value)
    if derivative and slope is None:  # degree 1: the derivative is the constant c_1
        slope = coef[-1].expand_as(x).clone()  # a real buffer: backward updates it in place
    return value, slope


def _coefficients(numerator: torch.Tensor, denominator: torch.Tensor, dtype: torch.dtype):
    """(g, m+1), (g, n) parameters -> (m+1, g, 1), (n+1, g, 1) with B's zero constant term."""
    a = numerator.to(dtype).t().unsqueeze(-1)
    b = denominator.to(dtype).t().unsqueeze(-1)
    b = torch.cat([torch.zeros_like(b[:1]), b])  # B(x) has no constant term: B(0) = 0
    return a, b


def _chunk_rows(x: torch.Tensor) -> int:
    """Rows of (N, g, d) per chunk: the ~50 elementwise passes run chunk by chunk.

    CPU: 1M-element chunks (4 MiB per buffer) keep the passes in the last-level cache, 2.3x
    faster than whole-tensor passes at 1152 x 4096 on one thread; smaller chunks were no faster
    and multiply OpenMP parallel regions, which stall when the CPU is oversubscribed.
    GPU: 16M-element chunks still fill the device and cap backward's ~6 temporary buffers at
    64 MiB each, whatever the batch.
    """
    elements = 1 << 24 if x.is_cuda else 1 << 20
    return max(1, elements // (x.shape[1] * x.shape[2]))


def _rational(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """P(x) / (1 + |B(x)|) for x (n, g, d) in the compute dtype."""
    p, _ = _horner(x, a)
    q, _ = _horner(x, b)
    return p.div_(q.abs_().add_(1))


def _rational_backward(
    x: torch.Tensor, grad_out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, need_x: bool
):
    """Gradients for x (n, g, d): (dL/dx or None, dL/da (g, m+1), dL/db (g, n)), all recomputed."""
    p, dp = _horner(x, a, derivative=True)  # P, P'
    bx, dbx = _horner(x, b, derivative=True)  # B, B'
    q = torch.abs(bx).add_(1)  # Q = 1 + |B|
    # d|B|/dB = sign(B), taken as +1 at B = +0 (see module doc); Horner's last step adds the
    # zero constant, so an exact zero comes out as +0. Written over B, not needed again.
    sign = torch.copysign(torch.ones((), dtype=x.dtype, device=x.device), bx, out=bx)
    r = torch.div(grad_out, q)  # dL/dP = g / Q (grad_out is not ours to modify)
    t = p.mul_(r).div_(q).mul_(sign)  # -dL/dB = g P sign(B) / Q^2
    del q, sign, bx
    grad_x = dp.mul_(r).addcmul_(t, dbx, value=-1) if need_x else None  # g P'/Q + dL/dB B'
    del dp, dbx
    # dL/da_k = sum g x^k / Q and dL/db_k = sum dL/dB x^k over each group's elements.
    m, n = a.shape[0] - 1, b.shape[0] - 1
    sums_a, sums_b = [r.sum((0, 2))], []
    power, product = x.clone(), torch.empty_like(x)  # x^k, updated in place
    for k in range(1, max(m, n) + 1):
        if k > 1:
            power.mul_(x)
        if k <= m:
            sums_a.append(torch.mul(r, power, out=product).sum((0, 2)))
        if k <= n:
            sums_b.append(torch.mul(t, power, out=product).sum((0, 2)).neg_())
    return grad_x, torch.stack(sums_a, 1), torch.stack(sums_b, 1)


class GroupRationalFunction(torch.autograd.Function):
    """y = P(x) / (1 + |B(x)|) per channel group; saves only x, recomputes in backward.

    ``GroupRationalFunction.apply(x, numerator, denominator)`` with x (..., C), numerator
    (g, m+1) and denominator (g, n), lowest degree first; C must be divisible by g.
    Inside forward/backward nothing is recorded by autograd, so intermediates are updated in
    place to keep the number of passes and allocations low.
    """

    @staticmethod
    def forward(ctx, x, numerator, denominator):
        ctx.save_for_backward(x, numerator, denominator)
        dtype = torch.promote_types(x.dtype, torch.float32)
        a, b = _coefficients(numerator, denominator, dtype)
        groups = numerator.shape[0]
        xg = x.reshape(-1, groups, x.shape[-1] // groups)  # (N, g, d): channel c in group c // d, as in KAT
        y = torch.empty_like(xg)
        rows = _chunk_rows(xg)
        for x_c, y_c in zip(xg.split(rows), y.split(rows), strict=True):
            y_c.copy_(_rational(x_c.to(dtype), a, b))  # computed in fp32, stored in x's dtype
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad_out):
        x, numerator, denominator = ctx.saved_tensors
        dtype = torch.promote_types(x.dtype, torch.float32)
        a, b = _coefficients(numerator, denominator, dtype)
        groups = numerator.shape[0]
        xg = x.reshape(-1, groups, x.shape[-1] // groups)  # (N, g, d)
        gg = grad_out.reshape(xg.shape)
        need_x = ctx.needs_input_grad[0]
        grad_x = torch.empty_like(xg) if need_x else None
        grad_a = torch.zeros(a.shape[1], a.shape[0], dtype=dtype, device=x.device)  # (g, m+1)
        grad_b = torch.zeros(b.shape[1], b.shape[0] - 1, dtype=dtype, device=x.device)  # (g, n)
        rows = _chunk_rows(xg)
        for i, (x_c, g_c) in enumerate(zip(xg.split(rows), gg.split(rows), strict=True)):
            gx_c, ga_c, gb_c = _rational_backward(x_c.to(dtype), g_c.to(dtype), a, b, need_x)
            if need_x:
                grad_x[i * rows : i * rows + x_c.shape[0]].copy_(gx_c)
            grad_a += ga_c
            grad_b += gb_c
        grad_x = grad_x.reshape(x.shape) if need_x else None
        return grad_x, grad_a.to(numerator.dtype), grad_b.to(denominator.dtype)


class GroupRational(nn.Module):
    """Learnable group-rational activation over the last dim of width ``channels``.

    >>> act = GroupRational(4096, groups=8, init="gelu")  # ~GELU at init, 8 * (6 + 4) parameters
    >>> y = act(torch.randn(2, 576, 4096))
    """

    def __init__(
        self,
        channels: int,
        groups: int = 8,
        numerator_degree: int = 5,
        denominator_degree: int = 4,
        init: str = "gelu",
    ):
        super().__init__()
        if groups < 1 or channels % groups:
            raise ValueError(
                f"groups={groups} must be a positive divisor of the width {channels}; "
                f"pick e.g. groups=8 or 16 for widths that are multiples of 16."
            )
        if numerator_degree < 1 or denominator_degree < 1:
            raise ValueError(
                f"Degrees must be >= 1, got numerator_degree={numerator_degree}, "
                f"denominator_degree={denominator_degree}; the default is 5 / 4."
            )
        if init not in INITS:
            raise ValueError(f"init={init!r} is not one of {INITS}.")
        if init == "gelu" and (
            numerator_degree < len(GELU_NUMERATOR) - 1 or denominator_degree < len(GELU_DENOMINATOR)
        ):
            raise ValueError(
                f"The GELU init is fitted at degrees {len(GELU_NUMERATOR) - 1}/{len(GELU_DENOMINATOR)}; "
                f"degrees {numerator_degree}/{denominator_degree} cannot hold it. Use higher degrees "
                "(extra coefficients start at 0) or init='identity'."
            )
        self.channels, self.groups, self.init = channels, groups, init
        self.numerator = nn.Parameter(torch.empty(groups, numerator_degree + 1))
        self.denominator = nn.Parameter(torch.empty(groups, denominator_degree))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.numerator.zero_()
        self.denominator.zero_()
        if self.init == "identity":
            self.numerator[:, 1] = 1.0  # P(x) = x, Q(x) = 1: exactly x
        else:  # higher degrees than fitted keep zeros there: the same function
            self.numerator[:, : len(GELU_NUMERATOR)] = torch.tensor(GELU_NUMERATOR)
            self.denominator[:, : len(GELU_DENOMINATOR)] = torch.tensor(GELU_DENOMINATOR)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.channels:
            raise ValueError(
                f"GroupRational expects width {self.channels} in the last dim, got shape {tuple(x.shape)}."
            )
        return GroupRationalFunction.apply(x, self.numerator, self.denominator)

    def extra_repr(self) -> str:
        m, n = self.numerator.shape[1] - 1, self.denominator.shape[1]
        return f"channels={self.channels}, groups={self.groups}, degrees={m}/{n}, init={self.init}"


def rational_reference(x: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """Plain-autograd version of the same formula (tests compare against it; keeps intermediates)."""
    groups = numerator.shape[0]
    xg = x.reshape(-1, groups, x.shape[-1] // groups)  # (N, g, d)
    powers = torch.stack([xg**k for k in range(max(numerator.shape[1], denominator.shape[1] + 1))], -1)
    p = (powers[..., : numerator.shape[1]] * numerator[:, None, :]).sum(-1)
    bx = (powers[..., 1 : denominator.shape[1] + 1] * denominator[:, None, :]).sum(-1)
    return (p / (1 + bx.abs())).reshape(x.shape)


def fit_gelu(
    numerator_degree: int = 5,
    denominator_degree: int = 4,
    span: tuple[float, float] = GELU_FIT_RANGE,
    points: int = 4001,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Least-squares fit of P/(1 + |B|) to exact (erf) GELU on ``span``; returns (a, b, max error).

    Deterministic: starts from the linear least-squares solution of P(x) - GELU(x) B(x) = GELU(x)
    (exact when B >= 0 on the span), then LBFGS on the mean squared error, in float64.
    """
    x = torch.linspace(*span, points, dtype=torch.float64)
    target = nn.functional.gelu(x)
    num_pow = x[:, None] ** torch.arange(numerator_degree + 1)
    den_pow = x[:, None] ** torch.arange(1, denominator_degree + 1)
    design = torch.cat([num_pow, -target[:, None] * den_pow], 1)
    start = torch.linalg.lstsq(design, target[:, None]).solution[:, 0]
    a = start[: numerator_degree + 1].clone().requires_grad_()
    b = start[numerator_degree + 1 :].clone().requires_grad_()

    def approx():
        return (num_pow @ a) / (1 + (den_pow @ b).abs())

    opt = torch.optim.LBFGS(
        [a, b],
        lr=1,
        max_iter=2000,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = (approx() - target).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        max_err = (approx() - target).abs().max().item()
    return a.detach(), b.detach(), max_err
