"""Prediction pictures: outlines over images, and the grid PNG that leaves a notebook's plotting
backend as the user set it."""

import matplotlib
import numpy as np
import pytest

from kseg import visualize

pytestmark = pytest.mark.backend_independent


def _cases(n=5, size=24):
    images = np.full((n, size, size, 3), 0.8, np.float32)
    masks = np.zeros((n, size, size, 1), np.float32)
    masks[:, 6:18, 6:18] = 1
    return images, masks


def test_overlay_draws_both_outlines():
    images, masks = _cases(1)
    shifted = np.roll(masks[0], 3, axis=1)
    picture = visualize.overlay(images[0], shifted, masks[0])
    assert picture.dtype == np.uint8 and picture.shape == (24, 24, 3)
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    assert visualize.TRUTH_COLOUR in colours and visualize.PREDICTION_COLOUR in colours


def test_prediction_grid_leaves_the_matplotlib_backend_alone(pdf_backend, tmp_path):
    images, masks = _cases()
    path = visualize.save_prediction_grid(images, masks, masks, tmp_path / "grid.png", titles=list("abcde"), columns=4)
    assert matplotlib.get_backend() == pdf_backend
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
