"""kseg.calibration against hand-computed ECEs, a loop-per-bin numpy reference and the
temperature that generated the labels."""

import numpy as np
import pytest

from kseg import calibration

pytestmark = pytest.mark.backend_independent  # numpy only


def _reference_ece(probs, labels, bins):
    """The textbook loop: each bin's |accuracy - confidence| weighted by its share of pixels."""
    probs, labels = np.ravel(probs), np.ravel(labels)
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = (probs >= low) & ((probs < high) if b < bins - 1 else (probs <= high))
        if inside.any():
            total += inside.mean() * abs(labels[inside].mean() - probs[inside].mean())
    return total


def test_hand_computed_cases():
    labels = np.array([0, 0, 1, 1.0])
    assert calibration.ece(np.array([0.0, 0.0, 1.0, 1.0]), labels) == 0.0  # confident and right
    assert calibration.ece(np.array([0.1, 0.1, 0.9, 0.9]), labels, bins=10) == pytest.approx(0.1)
    # Everything at 0.5 in one bin, half of it lesion: calibrated.
    assert calibration.ece(np.full(4, 0.5), labels, bins=10) == pytest.approx(0.0)
    # 0.8 everywhere on 1 lesion pixel out of 4: |0.25 - 0.8|.
    assert calibration.ece(np.full(4, 0.8), np.array([1, 0, 0, 0.0])) == pytest.approx(0.55)


@pytest.mark.parametrize("bins", [1, 10, 15])
def test_random_probabilities_match_the_loop_reference(bins):
    rng = np.random.default_rng(bins)
    probs = rng.random(5000)
    probs[:10] = 1.0  # the top edge joins the last bin
    labels = (rng.random(5000) < probs**2).astype(float)
    assert calibration.ece(probs, labels, bins) == pytest.approx(_reference_ece(probs, labels, bins), abs=1e-12)


def test_pooled_bins_add_up_over_images():
    rng = np.random.default_rng(1)
    probs, labels = rng.random((3, 8, 8)), (rng.random((3, 8, 8)) < 0.4).astype(float)
    per_image_bins = [np.stack(calibration.reliability(p, y), axis=-1) for p, y in zip(probs, labels)]
    assert calibration.ece_from_bins(*sum(per_image_bins).T) == pytest.approx(calibration.ece(probs, labels))
    assert calibration.per_image_ece(probs, labels) == pytest.approx(
        [calibration.ece(p, y) for p, y in zip(probs, labels)]
    )


def test_the_fitted_temperature_recovers_the_one_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, 200_000)
    labels = (rng.random(logits.size) < calibration.probabilities(logits, 2.5)).astype(float)
    temperature = calibration.fit_temperature(logits, labels)
    assert temperature == pytest.approx(2.5, rel=0.03)
    before = calibration.ece(calibration.probabilities(logits), labels)
    after = calibration.ece(calibration.probabilities(logits, temperature), labels)
    assert after < before / 5


def test_the_fitted_temperature_minimises_the_cross_entropy():
    rng = np.random.default_rng(3)
    logits = rng.normal(1, 3, 10_000)
    labels = (rng.random(logits.size) < 0.5).astype(float)

    def nll(t):
        p = np.clip(calibration.probabilities(logits, t), 1e-12, 1 - 1e-12)
        return -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))

    best = calibration.fit_temperature(logits, labels)
    grid = np.exp(np.linspace(np.log(0.1), np.log(100), 400))
    assert nll(best) <= min(nll(t) for t in grid) + 1e-9


def test_temperature_never_moves_a_mask_and_degenerate_inputs_keep_one():
    logits = np.array([-3.0, -0.1, 0.0, 0.2, 5.0])
    for t in (0.3, 1.0, 7.0):
        assert ((calibration.probabilities(logits, t) >= 0.5) == (logits >= 0)).all()
    assert calibration.fit_temperature(np.zeros(4), np.array([0, 1, 0, 1.0])) == 1.0


def test_the_reliability_diagram_is_written(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.random(1000)
    path = calibration.plot_reliability(*calibration.reliability(probs, rng.random(1000) < probs), tmp_path / "r.png")
    assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"


def test_bins_must_be_positive():
    with pytest.raises(ValueError, match="bins=0"):
        calibration.ece(np.zeros(3), np.zeros(3), bins=0)
