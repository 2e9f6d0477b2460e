"""The confirmatory comparison's statistics: one projector against the reference under one strategy.

How to call::

    c = compare_to_reference(y, a, b, margin=0.02)      # a, b: [seeds, N] test scores, row s = seed s of each
    c = compare_to_reference(y, a, b, margin=0.015)     # a, b: [strategies, seeds, N]: the mean over strategies
    family = adjust_family([c1, c2, ...], alpha=0.05)   # Holm (and BH beside it) over the whole family, verdicts
    mdd = minimum_detectable_difference(se_image, sd_seed, seeds=6)      # at alpha 0.05, power 0.8
    k = seeds_needed(se_image, sd_seed, target=0.02)                     # the smallest seed count reaching it

The estimate is D = mean over seeds of AUC(a_s) - AUC(b_s) on the same test images. Its error has
two parts (protocols/confirmatory_v1.md):

- the images: every seed scores the same test images, so this part does not shrink with seeds.
  DeLong's covariance of the 2k AUCs on those images gives Var_img(D) = c' S c with contrast
  c = (1/k, ..., 1/k, -1/k, ..., -1/k) (llava_df.sweep.delong);
- the seeds: the per-seed differences d_s vary with the training seed; that part is s_d^2 / k
  with s_d their standard deviation (k - 1 degrees of freedom).

SE^2 = Var_img(D) + s_d^2 / k, with Welch-Satterthwaite degrees of freedom
df = SE^4 / ((s_d^2 / k)^2 / (k - 1)) (the image part's df is taken as infinite: hundreds of
images), and t = D / SE is referred to Student's t(df). This double-counts a little of the image
noise (s_d also holds the seed-specific part of it), so it errs on the conservative side.

Equivalence (TOST, Schuirmann 1987): two one-sided t tests against -margin and +margin with the
same SE and df; p_TOST = the larger one-sided p, equivalent when the (1 - 2 alpha) interval lies
within +-margin. Multiplicity: Holm over the whole family (statsmodels' multipletests), separately
for the difference tests and for the equivalence tests; Benjamini-Hochberg reported beside it.
Verdict per comparison, in this order: "better" / "worse" (Holm-adjusted difference p < alpha),
"equivalent" (Holm-adjusted TOST p < alpha), else "not resolved at this power".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from llava_df.sweep.delong import delong

# protocols/confirmatory_v1.yaml's values, used where no protocol file is at hand (an installed wheel);
# tests/test_confirm.py checks that they agree with the file.
MARGIN = 0.02  # AUC; the protocol's equivalence margin and its target minimum detectable difference
ALPHA = 0.05
POWER = 0.8


@dataclass(frozen=True)
class Analysis:
    """The settings a family of comparisons is judged by: from a protocol file, or the defaults above."""

    margin: float = MARGIN
    alpha: float = ALPHA
    power: float = POWER
    target_mdd: float = MARGIN
    benchmark_seed: int | None = None  # the confirmatory test set's --synthetic_seed (None: not stated)
    source: str = "the built-in defaults (protocols/confirmatory_v1.yaml's values)"
    primary: str = "per_strategy"  # or strategy_mean: the protocol's family is the mean over strategies

    @classmethod
    def from_protocol(cls, protocol: dict, source: str) -> Analysis:
        return cls(margin=protocol["margin"], alpha=protocol["alpha"], power=protocol["power"],
                   target_mdd=protocol["target_mdd"], benchmark_seed=protocol.get("benchmark_seed"), source=source,
                   primary=protocol.get("primary", "per_strategy"))  # fmt: skip


@dataclass(frozen=True)
class Comparison:
    name: str  # e.g. "kan_h64_g3_k2 vs mlp2x_gelu | lora"
    seeds: int
    difference: float  # D: mean over seeds of AUC(candidate) - AUC(reference)
    per_seed: tuple[float, ...]
    se_image: float  # sqrt(Var_img(D)), DeLong
    sd_seed: float  # s_d, the SD of the per-seed differences
    se: float
    df: float
    p: float  # two-sided, H0: no difference
    ci95: tuple[float, float]
    ci90: tuple[float, float]  # the TOST interval at alpha 0.05
    p_tost: float  # H0: |difference| >= margin
    margin: float
    cohens_dz: float  # D / s_d: the effect in seed-SD units (nan with one seed)
    p_holm: float = math.nan
    p_bh: float = math.nan
    p_tost_holm: float = math.nan
    verdict: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _satterthwaite(var_image: float, var_seed_mean: float, seeds: int) -> float:
    if seeds < 2 or var_seed_mean <= 0:
        return math.inf
    return (var_image + var_seed_mean) ** 2 / (var_seed_mean**2 / (seeds - 1))


def compare_to_reference(y, candidate, reference, *, name: str = "", margin: float = MARGIN) -> Comparison:
    """The paired comparison of ``candidate`` [seeds, N] against ``reference`` [seeds, N] on labels ``y`` [N].

    With [strategies, seeds, N] on each side (seed s of every strategy starts from the same stage-1 file), the
    estimand is the difference averaged over strategies: the per-seed differences are each seed's mean over
    strategies, and the image part is DeLong's c' S c over all 2 x strategies x seeds AUCs (c: +-1 / (strategies
    x seeds)), so the correlation of the strategies' errors on the shared images is counted, not assumed away."""
    a, b = np.asarray(candidate, dtype=float), np.asarray(reference, dtype=float)
    if a.ndim == 1:
        a, b = a[None], np.atleast_2d(b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name}: the two sides need the same seeds and images, got {a.shape} and {b.shape}."
        )
    if a.ndim == 2:
        a, b = a[None], b[None]
    units, k = a.shape[:2]
    if k < 2:
        raise ValueError(f"{name}: {k} seed; the seed part of the error needs at least 2 seeds per side.")
    n = units * k
    aucs, cov = delong(y, np.vstack([a.reshape(n, -1), b.reshape(n, -1)]))
    contrast = np.concatenate([np.full(n, 1 / n), np.full(n, -1 / n)])
    var_image = float(max(contrast @ cov @ contrast, 0.0))
    per_seed = (aucs[:n] - aucs[n:]).reshape(units, k).mean(axis=0)
    return comparison_from_parts(per_seed, var_image, name=name, margin=margin)


def comparison_from_parts(
    per_seed, var_image: float, *, name: str = "", margin: float = MARGIN
) -> Comparison:
    """The comparison from its per-seed differences [k] and the image part of Var(D), by the rule above
    (SE^2 = var_image + s_d^2 / k, Welch df, t test, TOST). compare_to_reference gives the image part by
    DeLong; an endpoint without a DeLong covariance (llava_df.sweep.secondary's TPR at FPR) by a bootstrap."""
    per_seed = np.asarray(per_seed, dtype=float)
    k = len(per_seed)
    sd_seed = float(np.std(per_seed, ddof=1))
    var_seed_mean = sd_seed**2 / k
    se = math.sqrt(var_image + var_seed_mean)
    df = _satterthwaite(var_image, var_seed_mean, k)
    d = float(per_seed.mean())
    t = scipy_stats.t(df) if math.isfinite(df) else scipy_stats.norm
    p = float(2 * t.sf(abs(d) / se)) if se > 0 else (1.0 if d == 0 else 0.0)
    q95, q90 = float(t.ppf(0.975)), float(t.ppf(0.95))
    return Comparison(
        name=name, seeds=k, difference=d, per_seed=tuple(float(x) for x in per_seed), se_image=math.sqrt(var_image),
        sd_seed=sd_seed, se=se, df=df, p=p, ci95=(d - q95 * se, d + q95 * se), ci90=(d - q90 * se, d + q90 * se),
        p_tost=tost_p(d, se, df, margin), margin=margin, cohens_dz=d / sd_seed if sd_seed > 0 else math.nan,
    )  # fmt: skip


def tost_p(difference: float, se: float, df: float, margin: float) -> float:
    """TOST's p (the larger one-sided p) of H0: |D| >= ``margin``, with D's SE and df; non-increasing in margin."""
    t = scipy_stats.t(df) if math.isfinite(df) else scipy_stats.norm
    p_low = float(t.sf((difference + margin) / se))  # H0: D <= -margin
    p_high = float(t.cdf((difference - margin) / se))  # H0: D >= +margin
    return max(p_low, p_high)


def adjust_family(comparisons: list[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """Holm over the family (difference tests; equivalence tests separately), BH beside it, and verdicts."""
    if not comparisons:
        return []
    p = [c.p for c in comparisons]
    _, holm, _, _ = multipletests(p, alpha=alpha, method="holm")
    _, bh, _, _ = multipletests(p, alpha=alpha, method="fdr_bh")
    _, tost_holm, _, _ = multipletests([c.p_tost for c in comparisons], alpha=alpha, method="holm")
    out = []
    for c, ph, pb, pt in zip(comparisons, holm, bh, tost_holm, strict=True):
        if ph < alpha:
            verdict = "better" if c.difference > 0 else "worse"
        elif pt < alpha:
            verdict = "equivalent"
        else:
            verdict = "not resolved at this power"
        out.append(replace(c, p_holm=float(ph), p_bh=float(pb), p_tost_holm=float(pt), verdict=verdict))
    return out


def power_summary(family: list[Comparison], analysis: Analysis) -> dict:
    """The family's power at the seeds it ran: pooled image SE and seed SD (root mean squares over the
    comparisons), the minimum detectable difference at alpha and at Holm's first step (alpha / m), and the
    seeds that would bring it to the target (None: more than 64, i.e. more test images are needed)."""
    se_image = math.sqrt(float(np.mean([c.se_image**2 for c in family])))
    sd_seed = math.sqrt(float(np.mean([c.sd_seed**2 for c in family])))
    k, m = min(c.seeds for c in family), len(family)
    a, pw, target = analysis.alpha, analysis.power, analysis.target_mdd
    return {
        "pooled_se_image": se_image, "pooled_sd_seed": sd_seed, "seeds": k, "family_size": m,
        "mdd": minimum_detectable_difference(se_image, sd_seed, k, alpha=a, power=pw),
        "mdd_bonferroni": minimum_detectable_difference(se_image, sd_seed, k, alpha=a / m, power=pw),
        "seeds_for_target": seeds_needed(se_image, sd_seed, target, alpha=a, power=pw),
        "seeds_for_target_bonferroni": seeds_needed(se_image, sd_seed, target, alpha=a / m, power=pw),
    }  # fmt: skip


def minimum_detectable_difference(
    se_image: float, sd_seed: float, seeds: int, *, alpha: float = ALPHA, power: float = POWER
) -> float:
    """The smallest true |D| a two-sided level-``alpha`` test detects with probability ``power``:
    (t_{1-alpha/2, df} + t_{power, df}) x SE, SE and df as in compare_to_reference."""
    var_seed_mean = sd_seed**2 / seeds
    se = math.sqrt(se_image**2 + var_seed_mean)
    df = _satterthwaite(se_image**2, var_seed_mean, seeds)
    t = scipy_stats.t(df) if math.isfinite(df) else scipy_stats.norm
    return float((t.ppf(1 - alpha / 2) + t.ppf(power)) * se)


def seeds_needed(
    se_image: float,
    sd_seed: float,
    target: float,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
    most: int = 64,
) -> int | None:
    """The fewest seeds (>= 2) with minimum_detectable_difference <= ``target``; None when ``most`` do not reach it
    (the image part alone is too large: a bigger test set is needed, not more seeds)."""
    for k in range(2, most + 1):
        if minimum_detectable_difference(se_image, sd_seed, k, alpha=alpha, power=power) <= target:
            return k
    return None
