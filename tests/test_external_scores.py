"""ISIC thresholded IoU and failure fraction, checked by hand (their interval: tests/test_bootstrap.py)."""

import numpy as np
import pytest

from kseg.metrics import failure_fraction, isic_thresholded_iou

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


@pytest.mark.parametrize("fn", [isic_thresholded_iou, failure_fraction])
def test_empty_or_nan_input_is_rejected(fn):
    with pytest.raises(ValueError, match="empty"):
        fn([])
    with pytest.raises(ValueError, match="NaN"):
        fn([0.5, np.nan])
