"""Descriptive statistics for the comparison tables (the tests against the reference are in inference.py).

- ``mean_ci(values)``: mean and 95% t-interval over seeds (the seed-to-seed spread of training).
- ``hanley_mcneil_se(auc, n_pos, n_neg)``: the standard error of one AUC from its class sizes.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the t-interval); half-width NaN with one value."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), math.nan
    half = scipy_stats.t.ppf((1 + confidence) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of one AUC estimate from its class sizes (Hanley & McNeil, 1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / max(
        n_pos * n_neg, 1
    )
    return math.sqrt(max(var, 0.0))
