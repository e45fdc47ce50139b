"""kseg.boundary against brute-force pairwise distances in numpy, hand-computed cases and the
empty-mask rules the module states."""

import math

import numpy as np
import pytest

from kseg import boundary

pytestmark = pytest.mark.backend_independent  # numpy and OpenCV only


def _brute_force_border(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it (outside the frame counts as outside)."""
    padded = np.pad(mask.astype(bool), 1)
    inside = padded[1:-1, 1:-1]
    neighbours_in = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return inside & ~neighbours_in


def _brute_force_scores(truth: np.ndarray, predicted: np.ndarray, tolerance: float) -> dict[str, float]:
    a, b = np.argwhere(_brute_force_border(truth)), np.argwhere(_brute_force_border(predicted))
    pairwise = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    a_to_b, b_to_a = pairwise.min(axis=1), pairwise.min(axis=0)
    both = np.concatenate([a_to_b, b_to_a])
    return {
        "hd": max(a_to_b.max(), b_to_a.max()),
        "hd95": max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)),
        "assd": both.mean(),
        "nsd": (both <= tolerance).mean(),
    }


def _random_blobs(rng, shape=(24, 20)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for _ in range(rng.integers(1, 4)):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        h, w = rng.integers(2, 10, size=2)
        mask[y : y + h, x : x + w] = True
    return mask | (rng.random(shape) < 0.03)  # some specks, some touching the frame


@pytest.mark.parametrize("seed", range(8))
def test_random_masks_match_brute_force_pairwise_distances(seed):
    rng = np.random.default_rng(seed)
    truth, predicted = _random_blobs(rng), _random_blobs(rng)
    np.testing.assert_array_equal(boundary.border(truth), _brute_force_border(truth))
    got = boundary.boundary_scores(truth, predicted, tolerance=1.5)
    expected = _brute_force_scores(truth, predicted, 1.5)
    for name in boundary.LOWER_IS_BETTER:
        assert got[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-5), name


def test_two_single_pixels_a_known_distance_apart():
    truth, predicted = np.zeros((10, 10)), np.zeros((10, 10))
    truth[1, 1], predicted[4, 5] = 1, 1  # 3 down, 4 across: 5 pixels apart
    scores = boundary.boundary_scores(truth, predicted, tolerance=2)
    assert scores == pytest.approx({"hd": 5.0, "hd95": 5.0, "assd": 5.0, "nsd": 0.0})
    assert boundary.boundary_scores(truth, predicted, tolerance=5)["nsd"] == 1.0
    # in millimetres: 0.1 mm pixels
    assert boundary.boundary_scores(truth, predicted, tolerance=0.5, spacing=0.1) == pytest.approx(
        {"hd": 0.5, "hd95": 0.5, "assd": 0.5, "nsd": 1.0}
    )


def test_a_square_against_the_same_square_shifted():
    """A 4x4 square (rows and columns 3-6) and the same square 2 pixels to the right. Truth's
    12-pixel ring to predicted's ring: the top and bottom rows at 2, 1, 0, 0 (columns 3-6), the
    left side's 2 pixels at 2, the right side's 2 at 1; predicted's ring back, by symmetry, the same.
    So HD = HD95 = 2, ASSD = 24 / 24 = 1 and NSD at 1 pixel = 16 / 24."""
    truth = np.zeros((12, 12))
    truth[3:7, 3:7] = 1
    predicted = np.roll(truth, 2, axis=1)
    scores = boundary.boundary_scores(truth, predicted, tolerance=1)
    assert scores == pytest.approx({"hd": 2.0, "hd95": 2.0, "assd": 1.0, "nsd": 16 / 24})


def test_identical_masks_score_perfectly():
    truth = np.zeros((8, 8))
    truth[2:6, 1:7] = 1
    assert boundary.boundary_scores(truth, truth) == {"hd": 0.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0}


def test_both_empty_is_perfect_one_empty_is_the_diagonal():
    empty, lesion = np.zeros((30, 40)), np.zeros((30, 40))
    lesion[5:9, 5:9] = 1
    assert boundary.boundary_scores(empty, empty) == {"hd": 0.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    diagonal = math.hypot(30, 40)  # 50
    for truth, predicted in ((empty, lesion), (lesion, empty)):  # a lesion missed; one invented
        scores = boundary.boundary_scores(truth, predicted)
        assert scores == {"hd": diagonal, "hd95": diagonal, "assd": diagonal, "nsd": 0.0}
    assert boundary.boundary_scores(empty, lesion, spacing=0.02)["hd"] == pytest.approx(1.0)


def test_per_image_scores_are_one_row_per_image_and_finite():
    rng = np.random.default_rng(0)
    masks = np.stack([_random_blobs(rng) for _ in range(4)] + [np.zeros((24, 20), bool)])[..., None]
    predicted = np.stack([_random_blobs(rng) for _ in range(3)] + [np.zeros((24, 20), bool)] * 2)[..., None]
    table = boundary.per_image_boundary_scores(masks, predicted)
    assert list(table.columns) == ["hd", "hd95", "assd", "nsd"] and len(table) == 5
    assert np.isfinite(table.to_numpy()).all()
    assert table.iloc[4].tolist() == [0.0, 0.0, 0.0, 1.0]  # both empty


def test_a_stack_is_refused_where_one_mask_is_expected():
    with pytest.raises(ValueError, match=r"one mask of shape \(H, W\)"):
        boundary.boundary_scores(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
