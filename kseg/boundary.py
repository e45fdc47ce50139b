"""How far a predicted lesion border lies from the true one: Hausdorff distance (HD), its 95th
percentile (HD95), the average symmetric surface distance (ASSD) and the normalised surface
distance (NSD) at a tolerance, per image.

A mask's border is its pixels with a 4-neighbour outside it (the image's frame counts as outside):
``border(A) = A and not erode(A, 3x3 cross)``. With ``d(a, B)`` the Euclidean distance from a
border pixel ``a`` of A to the nearest border pixel of B (one exact distance transform per mask,
never the pairwise distances), and ``A``, ``B`` the truth's and the prediction's borders:

    HD    = max( max_a d(a, B),  max_b d(b, A) )
    HD95  = max( P95_a d(a, B),  P95_b d(b, A) )        (MONAI's convention)
    ASSD  = ( sum_a d(a, B) + sum_b d(b, A) ) / (|A| + |B|)
    NSD_t = ( #{a : d(a, B) <= t} + #{b : d(b, A) <= t} ) / (|A| + |B|)   (Nikolov et al., 2021)

Distances are in pixels of the masks given (kseg scores at the evaluation size, 256 x 256), or in
millimetres when ``spacing`` (mm per pixel, square pixels) is given.

Empty masks, so that every score is finite and a mean or a bootstrap interval needs no rule of
its own:

- both empty: a perfect answer, HD = HD95 = ASSD = 0 and NSD = 1;
- one empty (a missed lesion, or a lesion invented on clear skin): the worst answer the frame
  allows, HD = HD95 = ASSD = the image's diagonal, and NSD = 0.

Lower is better for HD, HD95 and ASSD; higher for NSD.

>>> import numpy as np
>>> truth = np.zeros((9, 9)); truth[2:5, 2:5] = 1
>>> predicted = np.roll(truth, 3, axis=1)             # the same square, 3 pixels to the right
>>> scores = boundary_scores(truth, predicted, tolerance=2)
>>> float(scores["hd"]), float(scores["hd95"])
(3.0, 3.0)
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd

#: The scores ``boundary_scores`` returns, and whether lower is better.
LOWER_IS_BETTER = {"hd": True, "hd95": True, "assd": True, "nsd": False}
#: NSD's default tolerance in pixels at the evaluation size.
DEFAULT_TOLERANCE = 2.0

_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def border(mask: np.ndarray) -> np.ndarray:
    """The border pixels of a 2-D 0/1 mask as booleans: those with a 4-neighbour outside it."""
    mask = np.asarray(mask).astype(np.uint8)
    inner = cv2.erode(mask, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (mask > 0) & (inner == 0)


def distance_to(border_pixels: np.ndarray) -> np.ndarray:
    """Every pixel's exact Euclidean distance (in pixels) to the nearest ``True`` of ``border_pixels``."""
    return cv2.distanceTransform((~border_pixels).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def surface_distances(truth: np.ndarray, predicted: np.ndarray, spacing: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(d(a, predicted's border) for a on truth's border, d(b, truth's border) for b on
    predicted's border)``, in the units of ``spacing``; both empty where either border is."""
    truth_border, predicted_border = border(_plane(truth)), border(_plane(predicted))
    if not truth_border.any() or not predicted_border.any():
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return (
        distance_to(predicted_border)[truth_border] * spacing,
        distance_to(truth_border)[predicted_border] * spacing,
    )


def boundary_scores(
    truth: np.ndarray, predicted: np.ndarray, tolerance: float = DEFAULT_TOLERANCE, spacing: float | None = None
) -> dict[str, float]:
    """HD, HD95, ASSD and NSD at ``tolerance`` of one image (see the module's formulas).

    Args:
        truth, predicted: 0/1 masks of one image, (H, W) or (H, W, 1).
        tolerance: NSD's tolerance, in the units of the distances (pixels, or mm with ``spacing``).
        spacing: millimetres per pixel; ``None`` scores in pixels.
    """
    truth, predicted = _plane(truth), _plane(predicted)
    unit = 1.0 if spacing is None else float(spacing)
    truth_empty, predicted_empty = not truth.any(), not predicted.any()
    if truth_empty and predicted_empty:
        return {"hd": 0.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    if truth_empty or predicted_empty:
        worst = math.hypot(*truth.shape) * unit
        return {"hd": worst, "hd95": worst, "assd": worst, "nsd": 0.0}
    to_predicted, to_truth = surface_distances(truth, predicted, unit)
    both = np.concatenate([to_predicted, to_truth])
    return {
        "hd": float(max(to_predicted.max(), to_truth.max())),
        "hd95": float(max(np.percentile(to_predicted, 95), np.percentile(to_truth, 95))),
        "assd": float(both.mean()),
        "nsd": float((both <= tolerance).mean()),
    }


def per_image_boundary_scores(
    masks: np.ndarray, predicted: np.ndarray, tolerance: float = DEFAULT_TOLERANCE, spacing: float | None = None
) -> pd.DataFrame:
    """``boundary_scores`` of every image of (N, H, W[, 1]) ``masks`` and ``predicted``: one row each,
    columns hd, hd95, assd, nsd."""
    rows = [boundary_scores(t, p, tolerance, spacing) for t, p in zip(np.asarray(masks), np.asarray(predicted))]
    return pd.DataFrame(rows, columns=list(LOWER_IS_BETTER), dtype="float64")


def _plane(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"Expected one mask of shape (H, W) or (H, W, 1). Received: shape {mask.shape}")
    return mask > 0.5


__all__ = [
    "LOWER_IS_BETTER",
    "DEFAULT_TOLERANCE",
    "border",
    "distance_to",
    "surface_distances",
    "boundary_scores",
    "per_image_boundary_scores",
]
