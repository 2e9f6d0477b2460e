"""Statistics for the comparison tables: intervals over seeds, paired bootstrap over test images.

- ``mean_ci(values)``: mean and 95% t-interval over seeds (the seed-to-seed spread of training).
- ``paired_auc_difference(a, b)``: the projector-vs-reference AUC difference on the *same* test
  images and seeds, with a 95% interval from a bootstrap that resamples seed pairs and test
  images (stratified by class). Significant when the interval excludes 0. The same resample
  serves both sides, which is what makes it paired; resampling seeds too keeps a difference that
  one lucky seed made from reading as significant.
- ``minimum_detectable_difference(se)``: the smallest true difference a two-sided 5% test
  detects with 80% power, (z_0.975 + z_0.8) x SE = 2.80 x SE.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats

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


def auc_rows(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of every row of ``scores`` [R, N] against labels ``y`` [N] (Mann-Whitney, ties averaged).

    The same number as sklearn's roc_auc_score, for all rows at once: the bootstrap below needs
    ~10^5 of them, and sklearn's per-call checks made one aggregation take minutes.
    """
    ranks = scipy_stats.rankdata(scores, axis=1)
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return (ranks[:, pos].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def paired_auc_difference(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Mean over seeds of AUC(a_s) - AUC(b_s), with a bootstrap over seed pairs and test images.

    ``y``: [N] labels; ``a``, ``b``: [seeds, N] scores of the same images, row s of ``a`` paired
    with row s of ``b`` (same training seed: same data order and initialization draws). Each
    replicate resamples the seed pairs and, stratified by class, the images, so the interval holds
    both the training-seed spread and the test-set sampling.
    """
    y = np.asarray(y)
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same shape, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    n_seeds = a.shape[0]
    per_seed = auc_rows(y, a) - auc_rows(y, b)
    diffs = np.empty(n_boot)
    for k in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        seeds = rng.integers(0, n_seeds, n_seeds)
        both = auc_rows(y[idx], np.concatenate([a[seeds][:, idx], b[seeds][:, idx]]))
        diffs[k] = float(np.mean(both[:n_seeds] - both[n_seeds:]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {
        "difference": float(per_seed.mean()),
        "per_seed": [float(d) for d in per_seed],
        "ci_low": float(lo),
        "ci_high": float(hi),
        "se": float(diffs.std(ddof=1)),
        "significant": bool(lo > 0 or hi < 0),
    }


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of one AUC estimate from its class sizes (Hanley & McNeil, 1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / max(
        n_pos * n_neg, 1
    )
    return math.sqrt(max(var, 0.0))


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
