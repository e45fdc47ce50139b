"""Losses for binary segmentation: BCE, Dice, Focal and weighted combinations.

Every loss takes ``y_true`` masks of 0/1 values and ``y_pred`` LOGITS (by default)
of the same shape, usually ``(B, H, W, 1)``. ``call`` returns one value per image,
shape ``(B,)``, so Keras' ``reduction`` and ``sample_weight`` behave as they do for
Keras' own losses. All math runs in float32 whatever the dtype policy, and stays
finite (with finite gradients) for logits as large as +-1e4 and for empty or full
masks.

Example:

```python
import kseg
model.compile(optimizer="adam", loss=kseg.losses.get("bce+dice"))
```
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
from keras import ops

__all__ = ["BCE", "Dice", "Focal", "Combo", "get", "available"]

# Registered names carry a "Loss" suffix because kseg.metrics also has a class
# called Dice: the registry is one flat "package>name" dict, and a shared key would
# make a saved Dice loss load back as the Dice metric.
_register = keras.saving.register_keras_serializable


def _prepare(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    """Casts both to float32 and gives ``y_true`` the rank of ``y_pred``."""
    # float32 even under mixed_bfloat16: sums over ~1e5 pixels and log-terms
    # lose far too much precision in bfloat16.
    y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, "float32")
    # Accept (B, H, W) masks for (B, H, W, 1) predictions.
    if len(y_true.shape) == len(y_pred.shape) - 1 and y_pred.shape[-1] == 1:
        y_true = ops.expand_dims(y_true, -1)
    return y_true, y_pred


def _per_image_mean(x: Any) -> Any:
    """Means over every axis but the batch axis: (B, ...) -> (B,)."""
    axes = tuple(range(1, len(x.shape)))
    return ops.mean(x, axis=axes) if axes else x


def _per_image_sum(x: Any) -> Any:
    axes = tuple(range(1, len(x.shape)))
    return ops.sum(x, axis=axes) if axes else x


def _probabilities_to_logits(p: Any) -> Any:
    """Clipped probabilities -> logits, so one stable formula serves both inputs."""
    eps = keras.config.epsilon()
    p = ops.clip(p, eps, 1.0 - eps)
    return ops.log(p) - ops.log1p(-p)


class _SegLoss(keras.losses.Loss):
    """Shared constructor: float32 compute dtype and a validated ``from_logits``."""

    def __init__(self, from_logits: bool, name: str, reduction: str | None):
        # dtype="float32": Loss.__call__ then converts inputs and reduces in
        # float32, independent of the global dtype policy.
        super().__init__(name=name, reduction=reduction, dtype="float32")
        self.from_logits = bool(from_logits)


@_register(package="kseg", name="BCELoss")
class BCE(_SegLoss):
    """Binary cross-entropy, averaged over the pixels of each image.

    With logits ``x`` and mask ``y`` the per-pixel loss uses the overflow-free form

        bce(x, y) = max(x, 0) - x * y + log1p(exp(-|x|))

    which equals ``-y log(sigmoid(x)) - (1 - y) log(1 - sigmoid(x))``. With
    probabilities ``p`` (``from_logits=False``) it is
    ``-y log(p) - (1 - y) log(1 - p)`` with ``p`` clipped to
    ``[epsilon, 1 - epsilon]``. ``call`` returns the mean over each image's pixels.

    Args:
        from_logits: Whether ``y_pred`` holds logits (default) or probabilities.
        reduction: Keras reduction over the per-image values
            (``"sum_over_batch_size"``, ``"sum"``, ``"mean"``, ``"none"``...).
        name: Name of the loss.

    Example:

    >>> loss = BCE()
    >>> float(loss(np.ones((1, 2, 2, 1)), np.zeros((1, 2, 2, 1))))  # log(2)
    0.6931...
    """

    def __init__(
        self,
        from_logits: bool = True,
        reduction: str | None = "sum_over_batch_size",
        name: str = "bce",
    ):
        super().__init__(from_logits=from_logits, name=name, reduction=reduction)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = _prepare(y_true, y_pred)
        if self.from_logits:
            x = y_pred
            pixel = ops.maximum(x, 0.0) - x * y_true + ops.log1p(ops.exp(-ops.abs(x)))
        else:
            eps = keras.config.epsilon()
            p = ops.clip(y_pred, eps, 1.0 - eps)
            pixel = -(y_true * ops.log(p) + (1.0 - y_true) * ops.log1p(-p))
        return _per_image_mean(pixel)

    def get_config(self) -> dict:
        return {
            "from_logits": self.from_logits,
            "reduction": self.reduction,
            "name": self.name,
        }


@_register(package="kseg", name="DiceLoss")
class Dice(_SegLoss):
    """Soft Dice loss, computed per image and then reduced over the batch.

    With ``p = sigmoid(y_pred)`` (or ``p = y_pred`` when ``from_logits=False``)
    and sums over the pixels of one image:

        dice = 1 - (2 * sum(y * p) + smooth) / (sum(y) + sum(p) + smooth)

    ``smooth`` keeps the loss defined (and 0) for an empty mask predicted empty;
    with ``smooth=0`` the denominator is floored at ``epsilon`` so it stays finite.

    Args:
        from_logits: Whether ``y_pred`` holds logits (default) or probabilities.
        smooth: Additive smoothing of numerator and denominator, ``>= 0``.
        reduction: Keras reduction over the per-image values.
        name: Name of the loss.

    Example:

    >>> y = np.array([1, 0, 0, 0], "float32").reshape(1, 2, 2, 1)
    >>> float(Dice()(y, np.zeros_like(y)))  # p = 0.5: 1 - (2*0.5+1)/(1+2+1)
    0.5
    """

    def __init__(
        self,
        from_logits: bool = True,
        smooth: float = 1.0,
        reduction: str | None = "sum_over_batch_size",
        name: str = "dice",
    ):
        super().__init__(from_logits=from_logits, name=name, reduction=reduction)
        if smooth < 0:
            raise ValueError(f"`smooth` must be >= 0. Received: smooth={smooth}")
        self.smooth = float(smooth)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = _prepare(y_true, y_pred)
        p = ops.sigmoid(y_pred) if self.from_logits else y_pred
        intersection = _per_image_sum(y_true * p)
        denominator = _per_image_sum(y_true) + _per_image_sum(p) + self.smooth
        denominator = ops.maximum(denominator, keras.config.epsilon())
        return 1.0 - (2.0 * intersection + self.smooth) / denominator

    def get_config(self) -> dict:
        return {
            "from_logits": self.from_logits,
            "smooth": self.smooth,
            "reduction": self.reduction,
            "name": self.name,
        }


@_register(package="kseg", name="FocalLoss")
class Focal(_SegLoss):
    """Binary focal loss (Lin et al., 2017), averaged over the pixels of each image.

    With ``p_t = p`` where ``y = 1`` and ``p_t = 1 - p`` where ``y = 0``:

        focal = alpha_t * (1 - p_t) ** gamma * bce,    bce = -log(p_t)

    where ``alpha_t = alpha`` for ``y = 1`` and ``1 - alpha`` for ``y = 0``, or 1
    when ``alpha`` is None. Both factors come from log-sigmoids of the signed
    logit ``z = (2y - 1) x``: ``bce = -log_sigmoid(z)`` and
    ``(1 - p_t) ** gamma = exp(gamma * log_sigmoid(-z))``. Unlike ``log(sigmoid)``
    and ``pow`` this neither overflows nor gives NaN gradients at ``|x| = 1e4``,
    for any ``gamma >= 0``. Masks must be 0/1.

    Args:
        gamma: Focusing exponent, ``>= 0``; ``gamma=0`` without alpha is BCE.
        alpha: Optional weight of the positive class in ``[0, 1]``.
        from_logits: Whether ``y_pred`` holds logits (default) or probabilities
            (clipped to ``[epsilon, 1 - epsilon]`` and turned into logits).
        reduction: Keras reduction over the per-image values.
        name: Name of the loss.

    Example:

    >>> loss = Focal(gamma=2.0, alpha=0.25)
    >>> float(loss(np.ones((1, 1, 1, 1)), np.zeros((1, 1, 1, 1))))  # .25*.5**2*log 2
    0.0433...
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | None = None,
        from_logits: bool = True,
        reduction: str | None = "sum_over_batch_size",
        name: str = "focal",
    ):
        super().__init__(from_logits=from_logits, name=name, reduction=reduction)
        if gamma < 0:
            raise ValueError(f"`gamma` must be >= 0. Received: gamma={gamma}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"`alpha` must be in [0, 1] or None. Received: alpha={alpha}")
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else float(alpha)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = _prepare(y_true, y_pred)
        x = y_pred if self.from_logits else _probabilities_to_logits(y_pred)
        z = (2.0 * y_true - 1.0) * x  # logit of p_t
        bce = -ops.log_sigmoid(z)
        pixel = ops.exp(self.gamma * ops.log_sigmoid(-z)) * bce
        if self.alpha is not None:
            pixel = pixel * (self.alpha * y_true + (1.0 - self.alpha) * (1.0 - y_true))
        return _per_image_mean(pixel)

    def get_config(self) -> dict:
        return {
            "gamma": self.gamma,
            "alpha": self.alpha,
            "from_logits": self.from_logits,
            "reduction": self.reduction,
            "name": self.name,
        }


@_register(package="kseg", name="ComboLoss")
class Combo(keras.losses.Loss):
    """Weighted sum of kseg losses: ``sum_i weights[i] * losses[i]``.

    The sum is taken over the per-image values returned by each sub-loss's
    ``call``; this Combo's own ``reduction`` then reduces it (the sub-losses'
    ``reduction`` settings are not used), so ``sample_weight`` applies once.

    Args:
        losses: Sequence of losses: ``Loss`` instances, names accepted by
            :func:`get` (e.g. ``"bce"``) or serialized configs.
        weights: One float per loss; defaults to 1.0 each.
        reduction: Keras reduction over the per-image values.
        name: Name of the loss; defaults to the sub-loss names joined by ``_``.
            It must be a valid TensorFlow name scope (no ``+`` or spaces).

    Example:

    >>> loss = Combo([BCE(), Dice()], weights=[1.0, 0.5])  # name "bce_dice"
    """

    def __init__(
        self,
        losses: Sequence[Any],
        weights: Sequence[float] | None = None,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = None,
    ):
        losses = [get(loss) for loss in losses]
        if not losses:
            raise ValueError("`losses` must contain at least one loss.")
        for loss in losses:
            if not isinstance(loss, keras.losses.Loss):
                raise TypeError(f"Combo needs keras Loss instances. Received: {loss!r}")
        if weights is None:
            weights = [1.0] * len(losses)
        weights = [float(w) for w in weights]
        if len(weights) != len(losses):
            raise ValueError(f"Got {len(weights)} weights for {len(losses)} losses: weights={weights}")
        # "_", not "+": TensorFlow rejects "+" in the name scope Loss.__call__ opens.
        name = name or "_".join(loss.name for loss in losses)
        super().__init__(name=name, reduction=reduction, dtype="float32")
        self.losses = losses
        self.weights = weights

    def call(self, y_true: Any, y_pred: Any) -> Any:
        total = 0.0
        for weight, loss in zip(self.weights, self.losses):
            total = total + weight * ops.cast(loss.call(y_true, y_pred), "float32")
        return total

    def get_config(self) -> dict:
        return {
            "losses": [keras.saving.serialize_keras_object(loss) for loss in self.losses],
            "weights": list(self.weights),
            "reduction": self.reduction,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict) -> "Combo":
        config = dict(config)
        config["losses"] = [
            keras.saving.deserialize_keras_object(loss) if isinstance(loss, dict) else loss for loss in config["losses"]
        ]
        return cls(**config)


_BY_NAME = {"bce": BCE, "dice": Dice, "focal": Focal}
_AVAILABLE = ("bce", "dice", "focal", "bce+dice", "bce+focal", "dice+focal")


def available() -> tuple[str, ...]:
    """Names accepted by :func:`get` (any ``+``-join of the single names works)."""
    return _AVAILABLE


def get(identifier: Any) -> keras.losses.Loss:
    """Returns a loss from a name, a ``"+"``-joined name, a config or an instance.

    Args:
        identifier: ``"bce"``, ``"dice"``, ``"focal"``, a combination such as
            ``"bce+dice"`` (a :class:`Combo` with weights 1), a serialized
            config dict, or a ``keras.losses.Loss`` instance (returned as is).

    Raises:
        ValueError: for an unknown name (the message lists the known names).

    Example:

    >>> get("bce+dice").name
    'bce_dice'
    """
    if isinstance(identifier, keras.losses.Loss):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, str):
        parts = [part.strip().lower() for part in identifier.split("+")]
        unknown = [part for part in parts if part not in _BY_NAME]
        if unknown:
            raise ValueError(
                f"Unknown kseg loss {identifier!r}. Known names: "
                f"{', '.join(available())} (or any '+'-join of "
                f"{', '.join(_BY_NAME)})."
            )
        if len(parts) == 1:
            return _BY_NAME[parts[0]]()
        return Combo([_BY_NAME[part]() for part in parts])
    raise ValueError(
        f"Cannot interpret {identifier!r} as a kseg loss: expected a name, a "
        f"config dict or a keras.losses.Loss. Known names: {', '.join(available())}."
    )
