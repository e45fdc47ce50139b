"""Test-time refinement of a trained model's masks, chosen on the validation set.

Two cheap refinements, in the spirit of nnU-Net:

* **Test-time augmentation (TTA)** over the dihedral group: each image is predicted under
  several flips / 90-degree rotations, every prediction is mapped back, and the *logits* are
  averaged. ``"flip"`` uses 4 views (identity, horizontal, vertical, both), ``"d4"`` all 8
  symmetries of the square.
* **Post-processing** of the binary mask: keep only the largest 8-connected component
  (a lesion is one region), and/or fill holes (background not connected to the border).
* **Temperature scaling** of the probabilities (:mod:`kseg.calibration`): one scalar fitted on
  the validation pixels of the chosen TTA's logits; it calibrates and never changes a mask.

Neither is free to assume: a refinement is kept only if it raises the validation score
(``choose_refinement``), and the choice travels inside the ``.keras`` file as an extra zip
member that ``keras.saving.load_model`` ignores (``save_with_refinement`` /
``load_refinement``).

Example:

```python
refinement, scores = kseg.refine.choose_refinement(model, val_images, val_masks)
kseg.refine.save_with_refinement(model, "model.keras", refinement)

model = kseg.refine.load_model_with_refinement("model.keras")
logits, masks = kseg.refine.apply_refinement(model, test_images, kseg.refine.attached(model))
```
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from pathlib import Path
from typing import Callable

import cv2
import keras
import numpy as np

from kseg import calibration, metrics
from kseg._refinement import POSTPROCESS_MODES, TTA_MODES, Refinement, attach, attached, check_mode
from kseg.models.segmentation_model import as_segmentation_model

__all__ = [
    "TTA_MODES",
    "VIEWS",
    "POSTPROCESS_MODES",
    "REFINEMENT_MEMBER",
    "Refinement",
    "tta_predict_logits",
    "keep_largest_component",
    "fill_holes",
    "postprocess",
    "binarise",
    "mean_iou",
    "resize_logits",
    "choose_refinement",
    "apply_refinement",
    "attach",
    "attached",
    "save_with_refinement",
    "load_refinement",
    "load_model_with_refinement",
]

#: Name of the zip member of a ``.keras`` file that holds the refinement.
REFINEMENT_MEMBER = "kseg_refinement.json"

ArrayFn = Callable[[np.ndarray], np.ndarray]


# --- Test-time augmentation -------------------------------------------------------------------


def _dihedral(quarter_turns: int, mirror: bool) -> tuple[ArrayFn, ArrayFn]:
    """(forward, inverse) on NHWC arrays: mirror left-right, then rotate by 90 degrees k times."""

    def forward(x: np.ndarray) -> np.ndarray:
        x = np.flip(x, axis=2) if mirror else x
        return np.rot90(x, quarter_turns, axes=(1, 2))

    def inverse(y: np.ndarray) -> np.ndarray:
        y = np.rot90(y, -quarter_turns, axes=(1, 2))
        return np.flip(y, axis=2) if mirror else y

    return forward, inverse


# The views of each TTA mode as (quarter turns, mirror), identity first: "flip" is identity,
# left-right, up-down (a mirror and a half turn) and both (a half turn); "d4" the 8 symmetries of
# the square. kseg.ensemble builds the same views as layers.
VIEWS = {
    "none": [(0, False)],
    "flip": [(0, False), (0, True), (2, True), (2, False)],
    "d4": [(k, mirror) for mirror in (False, True) for k in range(4)],
}


def _views(mode: str) -> list[tuple[ArrayFn, ArrayFn]]:
    """The (forward, inverse) transforms of a TTA mode (:data:`VIEWS`), identity first."""
    check_mode(mode, TTA_MODES, "TTA")
    return [_dihedral(k, mirror) for k, mirror in VIEWS[mode]]


def tta_predict_logits(model: keras.Model, images: np.ndarray, mode: str = "none", batch_size: int = 8) -> np.ndarray:
    """The model's logits averaged over the views of a TTA mode.

    For views ``(T_i, T_i^-1)``, ``i = 1..V``:

        logits = (1 / V) * sum_i T_i^-1(model(T_i(images)))

    Logits, not probabilities, are averaged: thresholding the mean logit at 0 is a vote weighted
    by confidence, and the result stays a logit for the rest of kseg.

    Args:
        model: anything with Keras's ``predict(x, batch_size=..., verbose=0)`` that maps an NHWC
            batch to NHW1 logits of the same height and width.
        images: (N, H, W, C) images at the model's input size; square for ``"d4"``.
        mode: one of ``TTA_MODES``.
        batch_size: prediction batch size.

    Returns:
        float32 numpy array (N, H, W, 1).

    Example:

    >>> logits = tta_predict_logits(model, val_images, mode="flip")  # 4 forward passes
    """
    views = _views(mode)
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"Expected an NHWC batch of images. Received: shape {images.shape}")
    if mode == "d4" and images.shape[1] != images.shape[2]:
        raise ValueError(
            f"TTA mode 'd4' rotates by 90 degrees and expects square images. Received: shape {images.shape}"
        )
    total = None
    for forward, inverse in views:
        # Contiguous copy: torch cannot wrap numpy's negative-stride views.
        logits = model.predict(np.ascontiguousarray(forward(images)), batch_size=batch_size, verbose=0)
        logits = inverse(np.asarray(keras.ops.convert_to_numpy(logits), dtype="float64"))
        total = logits if total is None else total + logits
    return (total / len(views)).astype("float32")


# --- Post-processing ------------------------------------------------------------------------


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """Keeps only the largest 8-connected foreground region of a 2-D mask.

    Foreground is any non-zero value; the result is 0/1 with ``mask``'s dtype. An empty mask
    stays empty; of equal-sized largest regions, the first found by OpenCV is kept.

    Example:

    >>> keep_largest_component(np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1]], np.uint8))
    array([[0, 0, 0],
           [0, 0, 1],
           [0, 0, 1]], dtype=uint8)
    """
    mask = np.asarray(mask)
    count, labels, stats, _ = cv2.connectedComponentsWithStats((mask != 0).astype(np.uint8), connectivity=8)
    if count <= 1:  # label 0 is the background
        return (mask != 0).astype(mask.dtype)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == largest).astype(mask.dtype)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fills the background regions of a 2-D mask that do not reach the image border.

    Background connectivity is 4 (the dual of the 8-connected foreground, as in
    ``scipy.ndimage.binary_fill_holes``), so a ring closed only diagonally still has a hole.
    Foreground is any non-zero value; the result is 0/1 with ``mask``'s dtype.

    Example:

    >>> ring = np.pad(np.pad(np.zeros((1, 1), np.uint8), 1, constant_values=1), 1)
    >>> int(fill_holes(ring).sum())  # the 3x3 ring plus its 1-pixel hole
    9
    """
    mask = np.asarray(mask)
    # One pixel of background all around, so the whole outside is a single region to flood.
    outside = np.pad((mask != 0).astype(np.uint8), 1)
    cv2.floodFill(outside, None, (0, 0), 1, flags=4)
    holes = outside[1:-1, 1:-1] == 0
    return ((mask != 0) | holes).astype(mask.dtype)


def _postprocess_one(mask: np.ndarray, mode: str) -> np.ndarray:
    if mode in ("largest", "largest+fill"):
        mask = keep_largest_component(mask)
    if mode in ("fill", "largest+fill"):
        mask = fill_holes(mask)
    return (mask != 0).astype(mask.dtype)


def postprocess(masks: np.ndarray, mode: str) -> np.ndarray:
    """Post-processes a batch of binary masks, or a single one.

    Modes: ``"none"``; ``"largest"`` (``keep_largest_component``); ``"fill"``
    (``fill_holes``); ``"largest+fill"`` (largest region, then its holes filled).

    Args:
        masks: (N, H, W, 1) batch, or a single (H, W) or (H, W, 1) mask; foreground is any
            non-zero value.
        mode: one of ``POSTPROCESS_MODES``.

    Returns:
        0/1 masks of the same shape and dtype as ``masks``.

    Example:

    >>> binary = (logits >= 0).astype("float32")  # (N, H, W, 1)
    >>> cleaned = postprocess(binary, "largest+fill")
    """
    check_mode(mode, POSTPROCESS_MODES, "post-processing")
    masks = np.asarray(masks)
    if masks.ndim == 2:
        return _postprocess_one(masks, mode)
    if masks.ndim == 3 and masks.shape[-1] == 1:
        return _postprocess_one(masks[..., 0], mode)[..., None]
    if masks.ndim == 4 and masks.shape[-1] == 1:
        processed = np.empty(masks.shape, masks.dtype)
        for index, mask in enumerate(masks):
            processed[index, ..., 0] = _postprocess_one(mask[..., 0], mode)
        return processed
    raise ValueError(f"Expected masks of shape (N, H, W, 1), (H, W, 1) or (H, W). Received: {masks.shape}")


# --- Choosing on validation -----------------------------------------------------------------


def mean_iou(masks: np.ndarray, predictions: np.ndarray) -> float:
    """Mean per-image IoU of 0/1 ``predictions`` against ``masks`` (1 where both are empty),
    computed by ``kseg.metrics.IoU`` as during training and evaluation."""
    iou = metrics.IoU(threshold=0.5, from_logits=False)
    return float(keras.ops.convert_to_numpy(keras.ops.mean(iou.per_image(masks, predictions))))


def resize_logits(logits: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of logits ``(N, H, W, 1)`` or ``(H, W, 1)`` to ``output_size`` =
    (height, width), as float32 numpy. Evaluation, refinement and prediction all resize through
    here, so a model gives the same mask whichever path it is used through."""
    logits = np.asarray(logits, dtype="float32")
    if logits.shape[-3:-1] == tuple(output_size):
        return logits
    resized = keras.ops.image.resize(logits, tuple(output_size), interpolation="bilinear")
    return np.asarray(keras.ops.convert_to_numpy(resized), dtype="float32")


def binarise(logits: np.ndarray, threshold: float = 0.5, postprocess_mode: str = "none") -> np.ndarray:
    """float32 0/1 of ``sigmoid(logits) >= threshold`` (without the sigmoid, exactly as the
    metrics threshold), then :func:`postprocess` with ``postprocess_mode``."""
    cut = metrics._logit(metrics._check_threshold(threshold))
    masks = (np.asarray(logits) >= cut).astype("float32")
    return masks if postprocess_mode == "none" else postprocess(masks, postprocess_mode)


def _in_cost_order(modes: tuple[str, ...] | list[str], all_modes: tuple[str, ...], what: str) -> list[str]:
    """The requested modes plus ``"none"``, without repeats, cheapest first."""
    chosen = {"none"} | {check_mode(mode, all_modes, what) for mode in modes}
    return [mode for mode in all_modes if mode in chosen]


def choose_refinement(
    model: keras.Model,
    images: np.ndarray,
    masks: np.ndarray,
    score_fn: Callable[[np.ndarray, np.ndarray], float] = mean_iou,
    tta_modes: tuple[str, ...] = TTA_MODES,
    postprocess_modes: tuple[str, ...] = POSTPROCESS_MODES,
    threshold: float = 0.5,
    output_size: tuple[int, int] | None = None,
    min_gain: float = 0.0,
    batch_size: int = 8,
    calibrate: bool = True,
) -> tuple[Refinement, dict[str, float]]:
    """Scores every (TTA, post-processing) pair on validation data and returns the best, with
    the temperature that calibrates its probabilities on the same data.

    The logits are predicted once per TTA mode, resized (bilinear) to ``output_size``,
    binarised at ``threshold`` and post-processed by each mode. The plain refinement
    ``("none", "none")`` is always scored and is the reference: another candidate replaces it
    only if

        score(candidate) - score(plain) > min_gain,

    and among equal scores the cheaper one wins (fewer TTA views first, then simpler
    post-processing), so a refinement is never kept for nothing.

    Args:
        model: a model that outputs logits (see ``tta_predict_logits``).
        images: (N, H, W, C) validation images at the model's input size.
        masks: the matching 0/1 masks, (N, H', W', 1) or (N, H', W').
        score_fn: ``score_fn(masks, binary_predictions) -> float``, higher is better;
            predictions are float32 (N, H', W', 1). Default: mean per-image IoU.
        tta_modes: TTA modes to try (from ``TTA_MODES``).
        postprocess_modes: post-processing modes to try (from ``POSTPROCESS_MODES``).
        threshold: probability threshold of the binarisation.
        output_size: (height, width) at which to score; default: that of ``masks``.
        min_gain: the improvement over the plain refinement a candidate must exceed.
        batch_size: prediction batch size.
        calibrate: fit ``best``'s temperature (:func:`kseg.calibration.fit_temperature`) on the
            chosen TTA's validation logits; otherwise it stays 1. It changes no mask.

    Returns:
        ``(best, scores)``, with ``scores`` keyed by ``Refinement.describe()`` of every
        candidate's masks (temperature 1: ``best.masks_only.describe()`` finds ``best``'s),
        e.g. ``{"tta=none,post=none": 0.81, "tta=flip,post=largest": 0.83, ...}``.

    Example:

    >>> refinement, scores = choose_refinement(model, val_images, val_masks)
    >>> refinement.describe()
    'tta=flip,post=largest'
    """
    masks = np.asarray(masks)
    output_size = tuple(output_size) if output_size is not None else tuple(masks.shape[1:3])
    candidates, scores, logits_by_tta = [], {}, {}
    for tta in _in_cost_order(tta_modes, TTA_MODES, "TTA"):
        logits_by_tta[tta] = resize_logits(tta_predict_logits(model, images, tta, batch_size), output_size)
        binary = binarise(logits_by_tta[tta], threshold)
        for post in _in_cost_order(postprocess_modes, POSTPROCESS_MODES, "post-processing"):
            candidate = Refinement(tta, post)
            scores[candidate.describe()] = float(score_fn(masks, postprocess(binary, post)))
            candidates.append(candidate)
    best = max(candidates, key=lambda c: scores[c.describe()])  # max keeps the first (cheapest) of ties
    if scores[best.describe()] - scores[Refinement().describe()] <= min_gain:
        best = Refinement()
    if calibrate:
        best = dataclasses.replace(best, temperature=calibration.fit_temperature(logits_by_tta[best.tta], masks))
    return best, scores


def apply_refinement(
    model: keras.Model,
    images: np.ndarray,
    refinement: Refinement,
    output_size: tuple[int, int] | None = None,
    threshold: float = 0.5,
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicts with a refinement: TTA logits, resized, binarised and post-processed.

    Args:
        model: a model that outputs logits (see ``tta_predict_logits``).
        images: (N, H, W, C) images at the model's input size.
        refinement: e.g. from ``choose_refinement`` or ``attached(model)``.
        output_size: (height, width) of the outputs; default: the model's output size.
        threshold: probability threshold of the binarisation.
        batch_size: prediction batch size.

    Returns:
        ``(logits, masks)``: float32 (N, H', W', 1) averaged logits and float32 0/1 masks.
        Post-processing changes only the masks.
    """
    logits = tta_predict_logits(model, images, refinement.tta, batch_size)
    if output_size is not None:
        logits = resize_logits(logits, tuple(output_size))
    return logits, binarise(logits, threshold, refinement.postprocess)


# --- Persistence ----------------------------------------------------------------------------


def save_with_refinement(model: keras.Model, path: str | os.PathLike, refinement: Refinement | None = None) -> None:
    """Saves ``model`` as a :class:`kseg.models.SegmentationModel` whose config holds
    ``refinement`` (default: ``attached(model)``); a plain functional model (an ensemble, a model
    of kseg 0.3) is saved as one over its graph.

    Example:

    >>> save_with_refinement(model, "model.keras", Refinement("flip", "largest"))
    >>> load_refinement("model.keras")
    Refinement(tta='flip', postprocess='largest')
    """
    refinement = attached(model) if refinement is None else refinement
    attach(model, refinement)
    as_segmentation_model(model, refinement=refinement).save(path)


def load_refinement(path: str | os.PathLike) -> Refinement:
    """The refinement a ``.keras`` file holds, read without loading the model: in a
    SegmentationModel's config, or in the ``kseg_refinement.json`` member of a kseg 0.3 file;
    ``Refinement()`` if it holds none."""
    with zipfile.ZipFile(Path(path), "r") as archive:
        if REFINEMENT_MEMBER in archive.namelist():  # written by kseg 0.3
            return Refinement.from_dict(json.loads(archive.read(REFINEMENT_MEMBER)))
        config = json.loads(archive.read("config.json")).get("config", {})
    return Refinement.from_dict(config["refinement"]) if config.get("refinement") else Refinement()


def load_model_with_refinement(path: str | os.PathLike, compile: bool = False) -> keras.Model:
    """``keras.saving.load_model(path)`` with the file's refinement attached (see ``attached``).
    kseg's layers and model class are registered (this module imports ``kseg.models``)."""
    if compile:  # a model kseg compiled names its losses and optimizer too (kseg.metrics is imported)
        from kseg import losses, optimizers  # noqa: F401

    model = keras.saving.load_model(path, compile=compile)
    return attach(model, load_refinement(path))
