"""Test-set scores of a trained model at a fixed evaluation size, whatever size it ran at.

Logits are resized (bilinear) from the model's size up to the evaluation size before
thresholding, so a model trained at 128x128 is scored against the same 256x256 masks as one
trained at 256x256, and numbers stay comparable with the original notebook's.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pandas as pd

from kseg import metrics
from kseg.data import SegmentationDataset


@dataclasses.dataclass
class Evaluation:
    """Mean per-image IoU and Dice, dataset-level IoU, IoU per diagnosis, and one row per image."""

    iou: float
    dice: float
    dataset_iou: float
    iou_by_diagnosis: dict[str, float]
    per_image: pd.DataFrame  # id, diagnosis, iou, dice

    def as_row(self, prefix: str = "test_") -> dict[str, float]:
        row = {f"{prefix}iou": self.iou, f"{prefix}dice": self.dice, f"{prefix}dataset_iou": self.dataset_iou}
        row.update({f"{prefix}iou_{k}": v for k, v in self.iou_by_diagnosis.items()})
        return row


def predict_logits(model: keras.Model, images: np.ndarray, output_size: tuple[int, int], batch_size: int = 8) -> np.ndarray:
    """The model's logits for ``images`` (already at the model's input size), resized to
    ``output_size`` (height, width)."""
    logits = model.predict(images, batch_size=batch_size, verbose=0)
    if logits.shape[1:3] != tuple(output_size):
        logits = keras.ops.convert_to_numpy(
            keras.ops.image.resize(logits, output_size, interpolation="bilinear")
        )
    return np.asarray(logits, dtype="float32")


def _score_per_image(masks: np.ndarray, logits: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-image IoU and Dice through the same metric classes used during training."""
    return tuple(
        keras.ops.convert_to_numpy(metric.per_image(masks, logits)).astype("float32")
        for metric in (metrics.IoU(threshold), metrics.Dice(threshold))
    )


def evaluate(
    model: keras.Model,
    inputs: SegmentationDataset,
    targets: SegmentationDataset,
    threshold: float = 0.5,
    batch_size: int = 8,
) -> Evaluation:
    """Scores ``model`` on ``inputs`` (images at the model's size) against ``targets`` (the same
    cases, masks at the evaluation size).

    Args:
        model: a kseg model that outputs logits.
        inputs: test images at the model's input size.
        targets: the same cases in the same order at the evaluation size.
        threshold: probability threshold of the binarisation (0.5 as in the original notebook).
        batch_size: prediction batch size.
    """
    if list(inputs.ids) != list(targets.ids):
        raise ValueError("inputs and targets must hold the same cases in the same order")
    masks = np.asarray(targets.masks)
    logits = predict_logits(model, np.asarray(inputs.images), masks.shape[1:3], batch_size)
    iou, dice = _score_per_image(masks, logits, threshold)
    dataset_iou = metrics.DatasetIoU(threshold)
    dataset_iou.update_state(masks, logits)

    diagnosis = list(targets.diagnosis) if targets.diagnosis is not None else [None] * len(masks)
    per_image = pd.DataFrame({"id": list(targets.ids), "diagnosis": diagnosis, "iou": iou, "dice": dice})
    by_diagnosis = per_image.dropna(subset=["diagnosis"]).groupby("diagnosis")["iou"].mean()
    return Evaluation(
        iou=float(iou.mean()),
        dice=float(dice.mean()),
        dataset_iou=float(dataset_iou.result()),
        iou_by_diagnosis={str(k): float(v) for k, v in by_diagnosis.items()},
        per_image=per_image,
    )
