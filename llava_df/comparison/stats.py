"""Statistics for the comparison tables: intervals over seeds, paired bootstrap over test images.

- ``mean_ci(values)``: mean and 95% t-interval over seeds (the seed-to-seed spread of training).
- ``paired_auc_difference(a, b)``: the projector-vs-reference AUC difference on the *same* test
  images and seeds, with a 95% interval from a bootstrap that resamples test images (stratified
  by class) and, within each resample, averages the AUC over seeds. Significant when the
  interval excludes 0. The same resample serves both sides, which is what makes it paired.
- ``minimum_detectable_difference(se)``: the smallest true difference a two-sided 5% test
  detects with 80% power, (z_0.975 + z_0.8) x SE = 2.80 x SE.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats
from sklearn.metrics import roc_auc_score

Z_POWER = float(scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8))  # 2.80


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the t-interval); half-width NaN with one value."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), math.nan
    half = scipy_stats.t.ppf((1 + confidence) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


def _auc_rows(y: np.ndarray, scores: np.ndarray, idx: np.ndarray) -> float:
    """Mean AUC over seeds (rows of ``scores``) on the images ``idx``."""
    return float(np.mean([roc_auc_score(y[idx], s[idx]) for s in scores]))


def paired_auc_difference(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Mean-over-seeds AUC(a) - AUC(b) with a stratified, paired bootstrap over images.

    ``y``: [N] labels; ``a``, ``b``: [seeds, N] scores of the same images (seed i of a paired
    with seed i of b is not required: seeds are averaged within each resample).
    """
    y = np.asarray(y)
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    every = np.arange(len(y))
    observed = _auc_rows(y, a, every) - _auc_rows(y, b, every)
    diffs = np.empty(n_boot)
    for k in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        diffs[k] = _auc_rows(y, a, idx) - _auc_rows(y, b, idx)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {
        "difference": float(observed),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "se": float(diffs.std(ddof=1)),
        "significant": bool(lo > 0 or hi < 0),
    }


def minimum_detectable_difference(se: float) -> float:
    return Z_POWER * se


def seeds_for_target(se_image: float, sd_seed: float, target: float) -> int | None:
    """Seeds needed so that Z_POWER * sqrt(se_image^2 + sd_seed^2 / seeds) <= target (None: never).

    ``se_image``: the image-sampling SE of a paired difference (does not shrink with seeds here,
    since every seed scores the same test images); ``sd_seed``: the seed-to-seed SD of a difference.
    """
    budget = (target / Z_POWER) ** 2 - se_image**2
    if budget <= 0:
        return None
    return max(1, math.ceil(sd_seed**2 / budget))
