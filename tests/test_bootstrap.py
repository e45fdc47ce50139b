"""kseg.bootstrap against a plain per-replicate numpy loop (the same generator and seed draw the
same images, so the results agree to rounding), hand-computed cases and large-sample theory."""

import numpy as np
import pandas as pd
import pytest

from kseg.bootstrap import BOOTSTRAP_RESAMPLES, bootstrap_ci, bootstrap_means, percentile_interval

pytestmark = pytest.mark.backend_independent


def _reference_means(values, strata, n_resamples, seed):
    """The stratified bootstrap by its definition: per stratum (sorted), B resamples of its
    images one replicate at a time; a replicate's mean is over every image drawn."""
    values = np.asarray(values, dtype=float)
    strata = np.zeros(len(values)) if strata is None else np.asarray(strata)
    rng, sums = np.random.default_rng(seed), np.zeros((n_resamples, *values.shape[1:]))
    for stratum in sorted(set(strata.tolist())):
        members = values[strata == stratum]
        for b in range(n_resamples):
            sums[b] += sum(members[i] for i in rng.integers(0, len(members), size=len(members)))
    return sums / len(values)


@pytest.mark.parametrize(
    "n, n_strata, n_resamples, seed", [(40, 1, 500, 9), (90, 3, 300, 0), (25, 5, 200, 4), (1, 1, 50, 2)]
)
def test_the_replicates_match_a_loop_per_replicate(n, n_strata, n_resamples, seed):
    rng = np.random.default_rng(n)
    values, strata = rng.random(n), rng.integers(0, n_strata, n)
    expected = _reference_means(values, strata, n_resamples, seed)
    np.testing.assert_allclose(bootstrap_means(values, strata, n_resamples, seed), expected, rtol=1e-12)
    lo, hi = np.percentile(expected, [5, 95])
    assert bootstrap_ci(values, strata, n_resamples, confidence=0.9, seed=seed) == (
        pytest.approx(lo, rel=1e-12),
        pytest.approx(hi, rel=1e-12),
    )


def test_rows_of_numbers_resample_as_whole_images():
    rows = np.random.default_rng(5).random((12, 4, 3))  # e.g. an image's reliability bins
    np.testing.assert_allclose(bootstrap_means(rows, n_resamples=40), _reference_means(rows, None, 40, 0), rtol=1e-12)


def test_blocks_of_a_large_set_draw_what_one_block_would():
    # 2**22 // 5000 = 838 replicates a block: five blocks, the same stream as one (B, N) draw.
    values = np.random.default_rng(6).random(5000)
    one_draw = values[np.random.default_rng(0).integers(0, 5000, size=(BOOTSTRAP_RESAMPLES, 5000))].mean(axis=1)
    np.testing.assert_allclose(bootstrap_means(values), one_draw, rtol=1e-12)


def test_the_interval_contains_the_mean_and_is_seeded():
    values = np.random.default_rng(2).beta(5, 2, 60)
    lo, hi = bootstrap_ci(values)
    assert lo < values.mean() < hi
    assert (lo, hi) == bootstrap_ci(values, seed=0)
    assert (lo, hi) != bootstrap_ci(values, seed=1)
    assert bootstrap_ci([0.7, 0.7, 0.7]) == (pytest.approx(0.7), pytest.approx(0.7))


def test_the_interval_resamples_within_strata():
    # Two strata of constant values: every within-stratum resample has the same mean.
    values = np.r_[np.full(10, 0.2), np.full(30, 0.8)]
    labels = pd.Series(["a"] * 10 + ["b"] * 30)  # any labels, e.g. the leaderboard's split column
    assert bootstrap_ci(values, labels) == pytest.approx((0.65, 0.65))
    lo, hi = bootstrap_ci(values)  # one stratum: the mix varies
    assert lo < 0.65 < hi


def test_the_interval_narrows_with_more_images_and_less_confidence():
    rng = np.random.default_rng(4)
    few, many = rng.random(20), rng.random(2000)
    width = lambda interval: interval[1] - interval[0]  # noqa: E731
    assert width(bootstrap_ci(many, n_resamples=500)) < width(bootstrap_ci(few, n_resamples=500)) / 4
    assert width(bootstrap_ci(many, confidence=0.5)) < width(bootstrap_ci(many, confidence=0.99))
    # The normal-theory interval for the mean, mean +- 1.96 * sd / sqrt(n): width within 10%, centre close.
    half = 1.96 * many.std(ddof=1) / np.sqrt(len(many))
    lo, hi = bootstrap_ci(many)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert (lo + hi) / 2 == pytest.approx(many.mean(), abs=half / 5)


def test_percentile_interval_by_hand():
    assert percentile_interval(np.arange(5.0), confidence=0.5) == (1.0, 3.0)
    assert percentile_interval(np.arange(101.0), confidence=0.9) == (pytest.approx(5.0), pytest.approx(95.0))
    assert percentile_interval([3.0, 1.0, 2.0], confidence=0.5) == (1.5, 2.5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: bootstrap_ci([]), "empty"),
        (lambda: bootstrap_ci([0.5, np.nan]), "NaN"),
        (lambda: bootstrap_ci([0.5, 0.6], confidence=1.0), "confidence"),
        (lambda: bootstrap_ci([0.5, 0.6], n_resamples=0), "n_resamples"),
        (lambda: bootstrap_ci([0.5, 0.6], strata=[0, 1, 1]), "strata"),
    ],
)
def test_bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_the_pooled_ece_interval_matches_a_loop_over_resamples():
    from kseg import calibration
    from kseg.evaluation import Evaluation

    rng = np.random.default_rng(7)
    probs, labels = rng.random((9, 8, 8)), (rng.random((9, 8, 8)) < 0.4).astype(float)
    bins = np.stack([np.stack(calibration.reliability(p, y), axis=-1) for p, y in zip(probs, labels)])
    scores = Evaluation(0, 0, 0, 0, 0, {}, pd.DataFrame(), reliability_bins=bins)
    draw, pooled = np.random.default_rng(3), []
    for _ in range(BOOTSTRAP_RESAMPLES):  # each replicate: 9 images drawn, their bins pooled
        pooled.append(calibration.ece_from_bins(*bins[draw.integers(0, 9, 9)].sum(axis=0).T))
    expected = np.percentile(pooled, [2.5, 97.5])
    np.testing.assert_allclose(scores.interval("ece", seed=3), expected, rtol=1e-9)
