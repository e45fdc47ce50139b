"""Scores of a trained model at a fixed evaluation size, whatever size it ran at.

Logits are resized (bilinear, :func:`kseg.refine.resize_logits`, the one resizer that
evaluation and prediction share) from the model's size to the evaluation size before thresholding, so a model
trained at 128x128 is scored against the same 256x256 masks as one trained at 256x256, and
numbers stay comparable with the original notebook's. A run's chosen refinement (test-time
flips and rotations, post-processing, temperature: :mod:`kseg.refine`) is applied on the way.

Beside the overlap scores: the border's distances per image (HD, HD95, ASSD, NSD:
:mod:`kseg.boundary`) and the calibration of the probabilities (ECE: :mod:`kseg.calibration`).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pandas as pd

from kseg import bootstrap, boundary, calibration, metrics, refine
from kseg.data import SegmentationDataset
from kseg.refine import binarise, resize_logits

#: Per-image columns where lower is better (the rest: higher).
LOWER_IS_BETTER = ("hd", "hd95", "assd", "ece")


@dataclasses.dataclass
class Evaluation:
    """Mean per-image IoU and Dice, dataset-level IoU, the ISIC challenge score (per-image IoU
    below 0.65 counted as 0), the fraction of failures (IoU < 0.5), the mean per-image border
    distances (HD, HD95, ASSD, in pixels at the evaluation size unless a spacing was given) and
    NSD, the ECE of the probabilities over every pixel (NaN when scored from masks alone), IoU
    per diagnosis, and one row per image."""

    iou: float
    dice: float
    dataset_iou: float
    isic_score: float
    failure_fraction: float
    iou_by_diagnosis: dict[str, float]
    per_image: pd.DataFrame  # id, diagnosis, source, iou, dice, hd, hd95, assd, nsd, ece
    iou_by_source: dict[str, float] = dataclasses.field(default_factory=dict)  # joined datasets only
    hd: float = float("nan")
    hd95: float = float("nan")
    assd: float = float("nan")
    nsd: float = float("nan")
    ece: float = float("nan")
    # (N, bins, 3): each image's reliability bins (count, sum of p, sum of y), for the pooled
    # ECE's interval and the reliability diagram; None when scored from masks alone.
    reliability_bins: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def as_row(self, prefix: str = "test_") -> dict[str, float]:
        row = {
            f"{prefix}iou": self.iou,
            f"{prefix}dice": self.dice,
            f"{prefix}dataset_iou": self.dataset_iou,
            f"{prefix}isic_score": self.isic_score,
            f"{prefix}failure_fraction": self.failure_fraction,
            f"{prefix}hd95": self.hd95,
            f"{prefix}hd": self.hd,
            f"{prefix}assd": self.assd,
            f"{prefix}nsd": self.nsd,
            f"{prefix}ece": self.ece,
        }
        row.update({f"{prefix}iou_{k}": v for k, v in self.iou_by_diagnosis.items()})
        row.update({f"{prefix}iou_source_{k}": v for k, v in self.iou_by_source.items()})
        return row

    def iou_interval(self, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
        """Percentile-bootstrap interval of the mean per-image IoU."""
        return self.interval("iou", confidence, seed)

    def interval(self, score: str, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
        """Percentile-bootstrap interval over the images of ``score``: the mean of a per-image
        column, or for ``"ece"`` the pixel-pooled ECE of each resample of images."""
        if score != "ece":
            return bootstrap.bootstrap_ci(self.per_image[score], confidence=confidence, seed=seed)
        if self.reliability_bins is None:
            return float("nan"), float("nan")
        # A resample's pooled bins are N times its mean bins: the ECE, a ratio, is the same.
        pooled = bootstrap.bootstrap_means(self.reliability_bins, seed=seed)  # (B, bins, 3)
        values = np.abs(pooled[..., 2] - pooled[..., 1]).sum(axis=1) / pooled[..., 0].sum(axis=1)
        return bootstrap.percentile_interval(values, confidence)

    def pooled_reliability(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The reliability bins of every pixel together (``calibration.plot_reliability``'s input)."""
        return None if self.reliability_bins is None else tuple(self.reliability_bins.sum(axis=0).T)


def predict_logits(
    model: keras.Model, images: np.ndarray, output_size: tuple[int, int], batch_size: int = 8, tta: str = "none"
) -> np.ndarray:
    """The model's logits for ``images`` (already at the model's input size), averaged over the
    ``tta`` views (:data:`kseg.refine.TTA_MODES`), resized to ``output_size`` (height, width)."""
    logits = refine.tta_predict_logits(model, np.asarray(images), tta, batch_size=batch_size)
    return resize_logits(logits, output_size)


def score_masks(
    targets: SegmentationDataset,
    predicted: np.ndarray,
    probabilities: np.ndarray | None = None,
    *,
    tolerance: float = boundary.DEFAULT_TOLERANCE,
    spacing: float | None = None,
    ece_bins: int = calibration.DEFAULT_BINS,
) -> Evaluation:
    """Scores 0/1 ``predicted`` masks (at the targets' size) against ``targets``' masks through
    the metric classes used in training (on probabilities, so 0/1 masks threshold as themselves),
    the border distances of :mod:`kseg.boundary` and, given the lesion ``probabilities`` of every
    pixel, their ECE.

    Args:
        targets: the cases, masks at the evaluation size.
        predicted: (N, H, W, 1) 0/1 masks at the same size.
        probabilities: (N, H, W, 1) lesion probabilities the masks came from (the refinement's
            temperature applied), or None (no ECE).
        tolerance: NSD's tolerance, in pixels (in mm with ``spacing``).
        spacing: millimetres per pixel at the evaluation size; None: distances in pixels.
        ece_bins: the ECE's equal-width bins.
    """
    masks = np.asarray(targets.masks)
    iou, dice = (
        keras.ops.convert_to_numpy(metric.per_image(masks, predicted)).astype("float32")
        for metric in (metrics.IoU(0.5, from_logits=False), metrics.Dice(0.5, from_logits=False))
    )
    dataset_iou = metrics.DatasetIoU(0.5, from_logits=False)
    dataset_iou.update_state(masks, predicted)
    diagnosis = list(targets.diagnosis) if targets.diagnosis is not None else [None] * len(masks)
    source = list(targets.source) if targets.source is not None else [None] * len(masks)
    per_image = pd.DataFrame(
        {"id": list(targets.ids), "diagnosis": diagnosis, "source": source, "iou": iou, "dice": dice}
    )
    borders = boundary.per_image_boundary_scores(masks, predicted, tolerance, spacing)
    per_image = pd.concat([per_image, borders], axis=1)
    bins, pooled_ece = None, float("nan")
    if probabilities is not None:
        bins = np.stack(
            [np.stack(calibration.reliability(p, m, ece_bins), axis=-1) for p, m in zip(probabilities, masks)]
        )
        per_image["ece"] = [calibration.ece_from_bins(*b.T) for b in bins]
        pooled_ece = calibration.ece_from_bins(*bins.sum(axis=0).T)
    else:
        per_image["ece"] = np.nan
    by_diagnosis = per_image.dropna(subset=["diagnosis"]).groupby("diagnosis")["iou"].mean()
    by_source = per_image.dropna(subset=["source"]).groupby("source")["iou"].mean()
    return Evaluation(
        iou=float(iou.mean()),
        dice=float(dice.mean()),
        dataset_iou=float(dataset_iou.result()),
        isic_score=metrics.isic_thresholded_iou(iou),
        failure_fraction=metrics.failure_fraction(iou),
        iou_by_diagnosis={str(k): float(v) for k, v in by_diagnosis.items()},
        per_image=per_image,
        iou_by_source={str(k): float(v) for k, v in by_source.items()},
        **{score: float(borders[score].mean()) for score in boundary.LOWER_IS_BETTER},
        ece=pooled_ece,
        reliability_bins=bins,
    )


def evaluate(
    model: keras.Model,
    inputs: SegmentationDataset | np.ndarray,
    targets: SegmentationDataset | np.ndarray,
    threshold: float = 0.5,
    batch_size: int = 8,
    refinement: refine.Refinement | None = None,
    *,
    tolerance: float = boundary.DEFAULT_TOLERANCE,
    spacing: float | None = None,
    ece_bins: int = calibration.DEFAULT_BINS,
) -> Evaluation:
    """Scores ``model`` on ``inputs`` (images at the model's size) against ``targets`` (the same
    cases, masks at the evaluation size): ``evaluate(model, images, masks)`` with arrays, or
    ``evaluate(model, parts.test, targets.test)`` with datasets (which also give the per-image
    ids and the IoU by diagnosis).

    Args:
        model: a kseg model that outputs logits.
        inputs: test images at the model's input size: an ``(N, H, W, C)`` array in [0, 1] or a
            :class:`~kseg.data.SegmentationDataset`.
        targets: the same cases in the same order at the evaluation size: an ``(N, H', W', 1)``
            array of 0/1 masks or a :class:`~kseg.data.SegmentationDataset`.
        threshold: probability threshold of the binarisation (0.5 as in the original notebook).
        batch_size: prediction batch size.
        refinement: test-time augmentation, post-processing and temperature (default: none).
        tolerance, spacing, ece_bins: as :func:`score_masks`.
    """
    images = inputs.images if isinstance(inputs, SegmentationDataset) else np.asarray(inputs)
    if not isinstance(targets, SegmentationDataset):
        masks = np.asarray(targets, dtype="float32")
        if masks.ndim == 3:  # (N, H, W): one channel
            masks = masks[..., None]
        if masks.ndim != 4 or len(masks) != len(images):
            raise ValueError(
                f"evaluate expects targets as {len(images)} masks (N, H, W, 1), one per input image. "
                f"Received: targets of shape {masks.shape}"
            )
        ids = list(inputs.ids) if isinstance(inputs, SegmentationDataset) else [str(i) for i in range(len(masks))]
        targets = SegmentationDataset(masks, masks, ids, None, "targets")  # the masks stand in for images
    if isinstance(inputs, SegmentationDataset) and list(inputs.ids) != list(targets.ids):
        raise ValueError("inputs and targets must hold the same cases in the same order")
    if len(images) != len(targets.ids):
        raise ValueError(
            f"evaluate expects one target per input image. "
            f"Received: {len(images)} images and {len(targets.ids)} targets"
        )
    refinement = refinement or refine.Refinement()
    logits = predict_logits(model, images, np.asarray(targets.masks).shape[1:3], batch_size, refinement.tta)
    return score_refined(
        targets, logits, refinement, threshold, tolerance=tolerance, spacing=spacing, ece_bins=ece_bins
    )


def score_refined(
    targets: SegmentationDataset,
    logits: np.ndarray,
    refinement: refine.Refinement,
    threshold: float = 0.5,
    **options,
) -> Evaluation:
    """:func:`score_masks` of logits at the targets' size through ``refinement``'s threshold,
    post-processing and temperature (``options``: score_masks' keywords)."""
    probabilities = calibration.probabilities(logits, refinement.temperature)
    return score_masks(targets, binarise(logits, threshold, refinement.postprocess), probabilities, **options)


__all__ = ["LOWER_IS_BETTER", "Evaluation", "predict_logits", "score_masks", "score_refined", "evaluate"]
