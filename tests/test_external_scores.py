"""ISIC thresholded IoU, failure fraction and bootstrap interval, checked by hand."""

import numpy as np
import pytest

from kseg.metrics import bootstrap_ci, failure_fraction, isic_thresholded_iou

pytestmark = pytest.mark.backend_independent


def test_isic_score_zeroes_ious_below_threshold():
    assert isic_thresholded_iou([0.9, 0.6, 0.65, 0.2]) == pytest.approx((0.9 + 0 + 0.65 + 0) / 4)
    assert isic_thresholded_iou([0.9, 0.6], threshold=0.5) == pytest.approx(0.75)
    assert isic_thresholded_iou([0.64999, 0.1]) == 0.0
    assert isic_thresholded_iou(np.ones((2, 3))) == 1.0  # flattened
    assert isinstance(isic_thresholded_iou([0.7]), float)


def test_isic_score_against_numpy():
    ious = np.random.default_rng(0).random(101)
    expected = sum(v for v in ious if v >= 0.65) / len(ious)
    assert isic_thresholded_iou(ious) == pytest.approx(expected, rel=1e-12)


def test_failure_fraction_by_hand():
    assert failure_fraction([0.9, 0.5, 0.45, 0.0]) == 0.5  # 0.5 itself is not a failure
    assert failure_fraction([0.9, 0.8]) == 0.0
    assert failure_fraction([0.1, 0.2, 0.3], below=0.25) == pytest.approx(2 / 3)
    ious = np.random.default_rng(1).random(57)
    assert failure_fraction(ious) == pytest.approx(np.count_nonzero(ious < 0.5) / 57)


@pytest.mark.parametrize("fn", [isic_thresholded_iou, failure_fraction, bootstrap_ci])
def test_empty_or_nan_input_is_rejected(fn):
    with pytest.raises(ValueError, match="empty"):
        fn([])
    with pytest.raises(ValueError, match="NaN"):
        fn([0.5, np.nan])


def test_bootstrap_ci_contains_the_mean_and_is_seeded():
    values = np.random.default_rng(2).beta(5, 2, 60)
    lo, hi = bootstrap_ci(values)
    assert lo < values.mean() < hi
    assert (lo, hi) == bootstrap_ci(values, seed=0)
    assert (lo, hi) != bootstrap_ci(values, seed=1)
    assert bootstrap_ci([0.7, 0.7, 0.7]) == (pytest.approx(0.7), pytest.approx(0.7))


def test_bootstrap_ci_matches_a_hand_written_percentile_bootstrap():
    values = np.random.default_rng(3).random(40)
    rng = np.random.default_rng(9)
    means = np.array([values[rng.integers(0, 40, 40)].mean() for _ in range(500)])
    expected = np.percentile(means, [5, 95])
    # Same generator and seed: the same draws row by row, so the same interval.
    np.testing.assert_allclose(bootstrap_ci(values, n_resamples=500, confidence=0.9, seed=9), expected)


def test_bootstrap_ci_narrows_with_more_images_and_less_confidence():
    rng = np.random.default_rng(4)
    few, many = rng.random(20), rng.random(2000)
    width = lambda interval: interval[1] - interval[0]  # noqa: E731
    assert width(bootstrap_ci(many, n_resamples=500)) < width(bootstrap_ci(few, n_resamples=500)) / 4
    assert width(bootstrap_ci(many, confidence=0.5)) < width(bootstrap_ci(many, confidence=0.99))
    # The normal-theory width for the mean, 2 * 1.96 * sd / sqrt(n), within 10%.
    assert width(bootstrap_ci(many)) == pytest.approx(2 * 1.96 * many.std() / np.sqrt(2000), rel=0.1)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(few, confidence=1.0)
