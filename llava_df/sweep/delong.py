"""DeLong's covariance of correlated ROC AUCs on the same images (DeLong, DeLong & Clarke-Pearson 1988).

How to call::

    aucs, cov = delong(y, scores)            # scores [k, N] of k classifiers on the same N images
    var = contrast @ cov @ contrast          # e.g. contrast = [1, -1]: Var(AUC_1 - AUC_2)
    z, p = delong_test(y, a, b)              # the paired two-sided test of AUC(a) = AUC(b)

The paper's estimator: with m positives X and n negatives Y, psi(x, y) = 1 if x > y, 1/2 if
x = y, else 0. Each classifier r has structural components V10_r(X_i) = mean_j psi(X_ri, Y_rj)
(one per positive) and V01_r(Y_j) = mean_i psi(X_ri, Y_rj) (one per negative); AUC_r is their
mean, and Cov(AUC_r, AUC_s) = S10_rs / m + S01_rs / n with S10, S01 the sample covariance
matrices (ddof 1) of the components over positives and negatives. The components are computed
from mid-ranks (Sun & Xu 2014) in O(k N log N); tests/test_delong.py checks them against the
O(k m n) pairwise definition.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats


def _check(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if scores.shape[1] != len(y):
        raise ValueError(
            f"scores have {scores.shape[1]} images, labels {len(y)}; pass scores of the labelled images."
        )
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake).")
    if (y == 1).sum() < 2 or (y == 0).sum() < 2:
        raise ValueError(
            f"DeLong needs at least 2 images of each class, got {(y == 1).sum()} fake and {(y == 0).sum()} real."
        )
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or inf; drop those images from every classifier first.")
    return y, scores


def structural_components(y, scores) -> tuple[np.ndarray, np.ndarray]:
    """(V10 [k, m] over positives, V01 [k, n] over negatives) from mid-ranks."""
    y, scores = _check(y, scores)
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    within_pos = scipy_stats.rankdata(pos, axis=1)
    within_neg = scipy_stats.rankdata(neg, axis=1)
    joint = scipy_stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (joint[:, :m] - within_pos) / n  # negatives below each positive (ties count one half)
    v01 = 1.0 - (joint[:, m:] - within_neg) / m  # positives above each negative
    return v10, v01


def delong(y, scores) -> tuple[np.ndarray, np.ndarray]:
    """(AUCs [k], covariance [k, k]) of k classifiers scored on the same images."""
    v10, v01 = structural_components(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    aucs = v10.mean(axis=1)
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_test(y, a, b) -> tuple[float, float]:
    """(z, two-sided p) of DeLong's paired test that AUC(a) = AUC(b) on the same images."""
    aucs, cov = delong(y, np.vstack([a, b]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if var <= 0:
        return (0.0, 1.0) if aucs[0] == aucs[1] else (math.copysign(math.inf, aucs[0] - aucs[1]), 0.0)
    z = float((aucs[0] - aucs[1]) / math.sqrt(var))
    return z, float(2 * scipy_stats.norm.sf(abs(z)))
