"""DeLong's AUC covariance: the mid-rank estimator equals the paper's pairwise definition, and the test holds its level."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from llava_df.sweep.delong import delong, delong_test


def slow_delong(y, scores):
    """The 1988 paper's definition, pair by pair: psi, structural components, S10 / m + S01 / n."""
    y = np.asarray(y)
    scores = np.atleast_2d(scores)
    k = scores.shape[0]
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    m, n = len(pos), len(neg)
    v10, v01 = np.zeros((k, m)), np.zeros((k, n))
    for r in range(k):
        for i, pi in enumerate(pos):
            for j, nj in enumerate(neg):
                x, z = scores[r, pi], scores[r, nj]
                psi = 1.0 if x > z else 0.5 if x == z else 0.0
                v10[r, i] += psi / n
                v01[r, j] += psi / m
    aucs = v10.mean(axis=1)
    s10 = np.array(
        [[np.sum((v10[r] - aucs[r]) * (v10[s] - aucs[s])) / (m - 1) for s in range(k)] for r in range(k)]
    )
    s01 = np.array(
        [[np.sum((v01[r] - aucs[r]) * (v01[s] - aucs[s])) / (n - 1) for s in range(k)] for r in range(k)]
    )
    return aucs, s10 / m + s01 / n


@pytest.mark.parametrize("ties", [False, True])
def test_midrank_estimator_equals_the_pairwise_definition(ties):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 60)
    scores = rng.normal(size=(3, 60)) + y * np.array([[0.5], [1.0], [0.0]])
    if ties:
        scores = np.round(scores, 1)  # many ties: each counts one half
    fast, slow = delong(y, scores), slow_delong(y, scores)
    np.testing.assert_allclose(fast[0], slow[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast[1], slow[1], rtol=0, atol=1e-12)
    for r in range(3):
        assert fast[0][r] == pytest.approx(roc_auc_score(y, scores[r]), abs=1e-12)


def test_the_paired_test_holds_its_level_under_the_null_and_finds_a_real_difference():
    rng = np.random.default_rng(0)
    rejections = 0
    for _ in range(300):
        y = np.repeat([0, 1], 100)
        shared = rng.normal(size=200) + 0.8 * y  # correlated classifiers, same true AUC
        a, b = shared + rng.normal(size=200), shared + rng.normal(size=200)
        rejections += delong_test(y, a, b)[1] < 0.05
    assert 0.02 <= rejections / 300 <= 0.09  # nominal 5%; 300 draws: +-2.5% is ~2 SE
    y = np.repeat([0, 1], 200)
    better, worse = rng.normal(size=400) + 1.5 * y, rng.normal(size=400) + 0.5 * y
    z, p = delong_test(y, better, worse)
    assert z > 0 and p < 1e-6


def test_identical_classifiers_have_no_difference_and_bad_input_is_named():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    assert delong_test(y, s, s) == (0.0, 1.0)
    with pytest.raises(ValueError, match="at least 2 images of each class"):
        delong(np.array([0, 1, 1]), np.array([[0.1, 0.2, 0.3]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        delong(y, np.array([[0.1, math.nan, 0.3, 0.4, 0.5, 0.6]]))
