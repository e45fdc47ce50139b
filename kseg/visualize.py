"""Pictures of predictions: mask outlines drawn over images, and a grid of them as PNG."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

TRUTH_COLOUR = (0, 255, 0)  # RGB green
PREDICTION_COLOUR = (255, 0, 255)  # RGB magenta


def overlay(
    image: np.ndarray, prediction: np.ndarray, truth: np.ndarray | None = None, thickness: int = 2
) -> np.ndarray:
    """``image`` (H, W, 3) in [0, 1] as uint8 RGB with the outline of the binary ``prediction``
    (H, W[, 1]) in magenta and, if given, the ground ``truth`` in green."""
    canvas = np.ascontiguousarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
    for mask, colour in ((truth, TRUTH_COLOUR), (prediction, PREDICTION_COLOUR)):
        if mask is None:
            continue
        binary = (np.squeeze(np.asarray(mask)) > 0.5).astype(np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, colour, thickness)
    return canvas


def save_prediction_grid(
    images: np.ndarray,
    predictions: np.ndarray,
    truths: np.ndarray | None,
    path: str | Path,
    titles: list[str] | None = None,
    columns: int = 4,
) -> Path:
    """Saves overlays of several cases side by side as one PNG (green: truth, magenta: prediction)."""
    # The Figure API, not pyplot: a notebook's plotting backend stays as the user set it.
    from matplotlib.figure import Figure

    n = len(images)
    rows = -(-n // columns)
    fig = Figure(figsize=(3 * columns, 3 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(overlay(images[i], predictions[i], None if truths is None else truths[i]))
            if titles:
                ax.set_title(titles[i], fontsize=9)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Lays out a ``matplotlib.figure.Figure`` and writes it to ``path`` (its folder made if
    needed). kseg draws with the Figure API, never pyplot, so a notebook's plotting backend stays
    as the user set it."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


__all__ = ["TRUTH_COLOUR", "PREDICTION_COLOUR", "overlay", "save_prediction_grid", "save_figure"]
