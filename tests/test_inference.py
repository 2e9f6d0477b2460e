"""The confirmatory statistics: combined image + seed error, Holm/BH, TOST, the minimum detectable difference."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from llava_df.sweep.delong import delong
from llava_df.sweep.inference import (
    adjust_family,
    compare_to_reference,
    minimum_detectable_difference,
    seeds_needed,
)


def scores(rng, y, seeds, shift, shared):
    return np.stack([shared + shift * y + rng.normal(scale=0.7, size=len(y)) for _ in range(seeds)])


def test_the_combined_error_is_delongs_image_part_plus_the_seed_part():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 150)
    shared = rng.normal(size=300) + y
    a, b = scores(rng, y, 4, 0.2, shared), scores(rng, y, 4, 0.0, shared)
    c = compare_to_reference(y, a, b, name="a vs b")
    aucs, cov = delong(y, np.vstack([a, b]))
    per_seed = aucs[:4] - aucs[4:]
    contrast = np.r_[np.full(4, 0.25), np.full(4, -0.25)]
    assert c.difference == pytest.approx(per_seed.mean())
    assert c.se_image**2 == pytest.approx(contrast @ cov @ contrast)
    assert c.se**2 == pytest.approx(c.se_image**2 + np.var(per_seed, ddof=1) / 4)
    # Welch-Satterthwaite: between the seed part's 3 df and infinity
    assert c.df >= 3
    t = scipy_stats.t(c.df)
    assert c.p == pytest.approx(2 * t.sf(abs(c.difference) / c.se))
    assert c.ci95[0] < c.difference < c.ci95[1] and c.ci90[0] > c.ci95[0]


def test_one_seed_is_refused_with_the_reason():
    y = np.repeat([0, 1], 5)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        rng = np.random.default_rng(0)
        compare_to_reference(y, rng.random((1, 10)), rng.random((1, 10)), name="x")


def test_holm_bh_and_the_three_verdicts():
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 400)
    shared = rng.normal(size=800) + y
    same = compare_to_reference(
        y, scores(rng, y, 6, 0.0, shared), scores(rng, y, 6, 0.0, shared), name="same", margin=0.05
    )
    worse = compare_to_reference(
        y, scores(rng, y, 6, -0.8, shared), scores(rng, y, 6, 0.0, shared), name="worse"
    )
    tiny_n = np.repeat([0, 1], 8)
    vague = compare_to_reference(tiny_n, rng.normal(size=(2, 16)), rng.normal(size=(2, 16)), name="vague")
    family = adjust_family([same, worse, vague])
    verdicts = {c.name: c.verdict for c in family}
    assert verdicts == {"same": "equivalent", "worse": "worse", "vague": "not resolved at this power"}
    raw = sorted(c.p for c in family)
    holm = sorted(c.p_holm for c in family)
    assert holm[0] == pytest.approx(min(1.0, 3 * raw[0]))  # Holm's first step is Bonferroni's
    assert all(c.p_holm >= c.p and c.p_bh >= c.p and c.p_bh <= c.p_holm + 1e-12 for c in family)


def test_mdd_uses_t_quantiles_and_more_seeds_shrink_it_to_the_image_floor():
    se_img, sd = 0.006, 0.02
    mdd3 = minimum_detectable_difference(se_img, sd, 3)
    z_version = (scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)) * math.sqrt(se_img**2 + sd**2 / 3)
    assert mdd3 > z_version  # t quantiles with few df: larger than the normal approximation
    assert minimum_detectable_difference(se_img, sd, 8) < mdd3
    k = seeds_needed(se_img, sd, 0.02)
    assert (
        minimum_detectable_difference(se_img, sd, k)
        <= 0.02
        < minimum_detectable_difference(se_img, sd, k - 1)
    )
    assert (
        seeds_needed(0.02, sd, 0.02) is None
    )  # the image part alone exceeds the target: more seeds cannot help
