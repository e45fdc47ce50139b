"""Stateful metrics for binary segmentation: per-image IoU and Dice, dataset IoU.

Predictions are binarised as ``probability >= threshold``; with ``from_logits=True``
(the default) this is done exactly as ``logit >= log(threshold / (1 - threshold))``,
which avoids sigmoid saturating to 1.0 for large logits. Masks are binarised at 0.5,
so 0/1 masks (and masks blurred by resizing) both work. All state is float32 and
updates use no Python control flow on tensor values, so the metrics run inside
jitted train/eval steps on every backend and under mixed precision.

Example:

```python
import kseg
model.compile(
    optimizer="adam",
    loss=kseg.losses.get("bce+dice"),
    metrics=[kseg.metrics.IoU(), kseg.metrics.Dice(), kseg.metrics.DatasetIoU()],
)
```
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = ["IoU", "Dice", "DatasetIoU", "get", "available"]

# "DiceMetric": kseg.losses registers a Dice too, and the registry key must differ.
_register = keras.saving.register_keras_serializable


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"`threshold` must be in [0, 1]. Received: threshold={threshold}")
    return threshold


def _logit(threshold: float) -> float:
    """log(t / (1 - t)) with the limits -inf / +inf at 0 / 1."""
    if threshold <= 0.0:
        return -math.inf
    if threshold >= 1.0:
        return math.inf
    return math.log(threshold) - math.log1p(-threshold)


def _binarise(y_true: Any, y_pred: Any, threshold: float, from_logits: bool) -> tuple[Any, Any]:
    """Returns float32 0/1 (mask, prediction) of the same rank. Of a prediction with more channels
    than the mask (a deeply supervised model's final logits then its side outputs), the first."""
    if y_pred.shape[-1] not in (None, 1) and (y_true.shape[-1] == 1 or len(y_true.shape) < len(y_pred.shape)):
        y_pred = y_pred[..., :1]
    y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, "float32")
    if len(y_true.shape) == len(y_pred.shape) - 1 and y_pred.shape[-1] == 1:
        y_true = ops.expand_dims(y_true, -1)
    cut = _logit(threshold) if from_logits else threshold
    pred = ops.cast(ops.greater_equal(y_pred, cut), "float32")
    true = ops.cast(ops.greater_equal(y_true, 0.5), "float32")
    return true, pred


def _per_image_sum(x: Any) -> Any:
    axes = tuple(range(1, len(x.shape)))
    return ops.sum(x, axis=axes) if axes else x


def _per_image_weights(sample_weight: Any, scores: Any) -> Any:
    """Broadcasts an optional per-image ``sample_weight`` to the (B,) scores."""
    if sample_weight is None:
        return ops.ones_like(scores)
    sample_weight = ops.cast(sample_weight, "float32")
    # Accept (B,), (B, 1), ... : one weight per image.
    if len(sample_weight.shape):
        sample_weight = ops.reshape(sample_weight, (-1,))
    return ops.broadcast_to(sample_weight, ops.shape(scores))


class _PerImageMean(keras.metrics.Metric):
    """Mean of a per-image score over all images seen since the last reset.

    ``update_state`` takes an optional ``sample_weight`` with one weight per image,
    shape ``(B,)``. Subclasses implement ``_score(intersection, sum_true, sum_pred)``
    -> (B,).
    """

    def __init__(
        self,
        threshold: float = 0.5,
        from_logits: bool = True,
        name: str | None = None,
        dtype: Any = None,
    ):
        super().__init__(name=name, dtype=dtype)
        self.threshold = _check_threshold(threshold)
        self.from_logits = bool(from_logits)
        # float32 state whatever the policy: bfloat16 cannot count past 256.
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="count")

    def _score(self, intersection: Any, sum_true: Any, sum_pred: Any) -> Any:
        raise NotImplementedError

    def per_image(self, y_true: Any, y_pred: Any) -> Any:
        """The score of each image of a batch, shape (B,); the state is left alone."""
        true, pred = _binarise(y_true, y_pred, self.threshold, self.from_logits)
        return self._score(_per_image_sum(true * pred), _per_image_sum(true), _per_image_sum(pred))

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        scores = self.per_image(y_true, y_pred)
        weights = _per_image_weights(sample_weight, scores)
        self.total.assign(self.total + ops.sum(scores * weights))
        self.count.assign(self.count + ops.sum(weights))

    def result(self) -> Any:
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self) -> None:
        self.total.assign(ops.zeros((), "float32"))
        self.count.assign(ops.zeros((), "float32"))

    def get_config(self) -> dict:
        config = super().get_config()  # name, dtype
        config.update({"threshold": self.threshold, "from_logits": self.from_logits})
        return config


def _ratio_or_one(numerator: Any, denominator: Any) -> Any:
    """numerator / denominator, and 1 where the denominator is 0 (both empty)."""
    safe = ops.maximum(denominator, 1.0)  # no 0/0 even in the unused branch
    return ops.where(denominator > 0, numerator / safe, 1.0)


@_register(package="kseg", name="IoU")
class IoU(_PerImageMean):
    """Mean per-image intersection over union of the binarised prediction.

    For each image, with ``P`` the predicted and ``T`` the true foreground:

        iou = |P & T| / |P | T|,   and 1 when both are empty,

    averaged over every image seen since the last ``reset_state``.

    Args:
        threshold: Probability at or above which a pixel is foreground.
        from_logits: Whether ``y_pred`` holds logits (default) or probabilities.
        name: Name of the metric.
        dtype: Dtype of the metric's result (state is float32).

    Example:

    >>> m = IoU()
    >>> m.update_state(np.array([[1., 1.], [0., 0.]]).reshape(1, 2, 2, 1),
    ...                np.array([[5., -5.], [5., -5.]]).reshape(1, 2, 2, 1))
    >>> float(m.result())  # |P & T| = 1, |P | T| = 3
    0.333...
    """

    def __init__(
        self,
        threshold: float = 0.5,
        from_logits: bool = True,
        name: str = "iou",
        dtype: Any = None,
    ):
        super().__init__(threshold=threshold, from_logits=from_logits, name=name, dtype=dtype)

    def _score(self, intersection: Any, sum_true: Any, sum_pred: Any) -> Any:
        return _ratio_or_one(intersection, sum_true + sum_pred - intersection)


@_register(package="kseg", name="DiceMetric")
class Dice(_PerImageMean):
    """Mean per-image Dice (F1) of the binarised prediction.

    For each image: ``dice = 2 |P & T| / (|P| + |T|)``, and 1 when both are empty,
    averaged over every image seen since the last ``reset_state``.

    Args:
        threshold: Probability at or above which a pixel is foreground.
        from_logits: Whether ``y_pred`` holds logits (default) or probabilities.
        name: Name of the metric.
        dtype: Dtype of the metric's result (state is float32).

    Example:

    >>> m = Dice()
    >>> m.update_state(np.array([[1., 1.], [0., 0.]]).reshape(1, 2, 2, 1),
    ...                np.array([[5., -5.], [5., -5.]]).reshape(1, 2, 2, 1))
    >>> float(m.result())  # 2 * 1 / (2 + 2)
    0.5
    """

    def __init__(
        self,
        threshold: float = 0.5,
        from_logits: bool = True,
        name: str = "dice",
        dtype: Any = None,
    ):
        super().__init__(threshold=threshold, from_logits=from_logits, name=name, dtype=dtype)

    def _score(self, intersection: Any, sum_true: Any, sum_pred: Any) -> Any:
        return _ratio_or_one(2.0 * intersection, sum_true + sum_pred)


@_register(package="kseg", name="DatasetIoU")
class DatasetIoU(keras.metrics.Metric):
    """IoU of one confusion count over all pixels of all images seen.

        dataset_iou = TP / (TP + FP + FN) = sum |P & T| / sum |P | T|

    with the sums over every pixel since the last ``reset_state``; 1 when the
    union is empty. Large objects weigh more than in the per-image :class:`IoU`.
    Counts are float32: exact up to 2**24 pixels, relative error ~1e-7 beyond.

    Args:
        threshold: Probability at or above which a pixel is foreground.
        from_logits: Whether ``y_pred`` holds logits (default) or probabilities.
        name: Name of the metric.
        dtype: Dtype of the metric's result (state is float32).

    Example:

    >>> m = DatasetIoU()
    >>> m.update_state(np.ones((2, 2, 2, 1)), np.full((2, 2, 2, 1), 3.0))
    >>> float(m.result())
    1.0
    """

    def __init__(
        self,
        threshold: float = 0.5,
        from_logits: bool = True,
        name: str = "dataset_iou",
        dtype: Any = None,
    ):
        super().__init__(name=name, dtype=dtype)
        self.threshold = _check_threshold(threshold)
        self.from_logits = bool(from_logits)
        self.intersection = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="intersection")
        self.union = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="union")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        true, pred = _binarise(y_true, y_pred, self.threshold, self.from_logits)
        intersection = _per_image_sum(true * pred)
        union = _per_image_sum(true) + _per_image_sum(pred) - intersection
        # Per-image weights scale that image's pixel counts.
        weights = _per_image_weights(sample_weight, intersection)
        self.intersection.assign(self.intersection + ops.sum(intersection * weights))
        self.union.assign(self.union + ops.sum(union * weights))

    def result(self) -> Any:
        return _ratio_or_one(self.intersection, self.union)

    def reset_state(self) -> None:
        self.intersection.assign(ops.zeros((), "float32"))
        self.union.assign(ops.zeros((), "float32"))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"threshold": self.threshold, "from_logits": self.from_logits})
        return config


_BY_NAME = {"iou": IoU, "dice": Dice, "dataset_iou": DatasetIoU}


def available() -> tuple[str, ...]:
    """Names accepted by :func:`get`."""
    return tuple(_BY_NAME)


def get(identifier: Any) -> keras.metrics.Metric:
    """Returns a new metric from its name, a config dict, or an instance as is.

    Args:
        identifier: ``"iou"``, ``"dice"`` or ``"dataset_iou"``, a serialized
            config dict, or a ``keras.metrics.Metric`` instance.

    Raises:
        ValueError: for an unknown name (the message lists the known names).

    Example:

    >>> get("dataset_iou").name
    'dataset_iou'
    """
    if isinstance(identifier, keras.metrics.Metric):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, str) and identifier.strip().lower() in _BY_NAME:
        return _BY_NAME[identifier.strip().lower()]()
    raise ValueError(f"Unknown kseg metric {identifier!r}. Known names: {', '.join(available())}.")


# ---- summaries of per-image scores on an external set (numpy) ---------------------------------
# These take the per-image numbers a model produced (e.g. ``IoU().per_image(y, logits)`` gathered
# over a test set, or a column of an evaluation table), not tensors: plain numpy, any backend.


__all__ += ["isic_thresholded_iou", "failure_fraction"]


def _per_image_scores(values: Any, name: str) -> np.ndarray:
    """``values`` as a non-empty, finite, 1-D float64 array."""
    scores = np.asarray(values, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise ValueError(f"`{name}` is empty: need at least one per-image score.")
    if not np.isfinite(scores).all():
        raise ValueError(f"`{name}` holds NaN or inf values.")
    return scores


def isic_thresholded_iou(per_image_iou: Any, threshold: float = 0.65) -> float:
    """The ISIC 2018 Task 1 score: mean per-image IoU, each IoU below ``threshold`` counted as 0.

        score = (1 / N) * sum_i  iou_i * [iou_i >= threshold]

    An IoU exactly at the threshold counts in full. The challenge uses ``threshold = 0.65``, so
    a model is punished for each failed image rather than rewarded for near misses.

    Args:
        per_image_iou: the N per-image IoUs, any array-like (flattened).
        threshold: IoUs below it score 0.

    Returns:
        The score as a Python float, in [0, 1] for IoUs in [0, 1].

    Example:

    >>> isic_thresholded_iou([0.9, 0.6, 0.65, 0.2])  # (0.9 + 0 + 0.65 + 0) / 4
    0.3875
    """
    scores = _per_image_scores(per_image_iou, "per_image_iou")
    return float(np.mean(np.where(scores >= threshold, scores, 0.0)))


def failure_fraction(per_image_iou: Any, below: float = 0.5) -> float:
    """Fraction of images whose IoU is below ``below``: ``(1 / N) * #{i : iou_i < below}``.

    Args:
        per_image_iou: the N per-image IoUs, any array-like (flattened).
        below: an IoU strictly below it is a failure (an IoU equal to it is not).

    Returns:
        The fraction as a Python float in [0, 1].

    Example:

    >>> failure_fraction([0.9, 0.5, 0.45, 0.0])  # 0.45 and 0.0 fail
    0.5
    """
    scores = _per_image_scores(per_image_iou, "per_image_iou")
    return float(np.mean(scores < below))
