"""Losses for binary segmentation: BCE, Dice, Focal, Tversky, focal Tversky, Lovász hinge and
weighted combinations.

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

from kseg._errors import invalid_value

__all__ = [
    "BCE",
    "Dice",
    "Focal",
    "Tversky",
    "FocalTversky",
    "LovaszHinge",
    "Combo",
    "DeepSupervision",
    "REGISTRY",
    "COMBINATIONS",
    "get",
    "available",
]

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

    def get_config(self) -> dict:
        # Not Loss.get_config: the float32 dtype is fixed here, not an argument.
        return {"from_logits": self.from_logits, "reduction": self.reduction, "name": self.name}


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
        return {**super().get_config(), "smooth": self.smooth}


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
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha}


@_register(package="kseg", name="TverskyLoss")
class Tversky(_SegLoss):
    """Tversky loss (Salehi et al., 2017), computed per image and then reduced over the batch.

    With ``p = sigmoid(y_pred)`` (or ``p = y_pred`` when ``from_logits=False``) and the
    soft counts of one image ``TP = sum(y * p)``, ``FP = sum((1 - y) * p)`` and
    ``FN = sum(y * (1 - p))``:

        tversky = 1 - (TP + smooth) / (TP + alpha * FP + beta * FN + smooth)

    ``alpha`` weighs false positives and ``beta`` false negatives (Abraham & Khan, 2019,
    name them the other way round); ``beta > alpha`` favours recall. With
    ``alpha = beta = 0.5`` this is the Dice loss with twice the smoothing,
    ``Dice(smooth=2 * smooth)``, and exactly ``Dice(smooth=0)`` for ``smooth=0``. With
    ``smooth=0`` the denominator is floored at ``epsilon`` so it stays finite.

    Args:
        alpha: Weight of the false positives, ``>= 0``.
        beta: Weight of the false negatives, ``>= 0``.
        smooth: Additive smoothing of numerator and denominator, ``>= 0``.
        from_logits: Whether ``y_pred`` holds logits (default) or probabilities.
        reduction: Keras reduction over the per-image values.
        name: Name of the loss.

    Example:

    >>> y = np.array([1, 0, 0, 0], "float32").reshape(1, 2, 2, 1)
    >>> round(float(Tversky()(y, np.zeros_like(y))), 6)  # p = .5: 1 - (.5+1)/(.5+.5*1.5+.5*.5+1)
    0.4
    """

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.5,
        smooth: float = 1.0,
        from_logits: bool = True,
        reduction: str | None = "sum_over_batch_size",
        name: str = "tversky",
    ):
        super().__init__(from_logits=from_logits, name=name, reduction=reduction)
        for arg, value in (("alpha", alpha), ("beta", beta), ("smooth", smooth)):
            if not value >= 0:  # also rejects NaN
                raise invalid_value(arg, ">= 0", value)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.smooth = float(smooth)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = _prepare(y_true, y_pred)
        p = ops.sigmoid(y_pred) if self.from_logits else y_pred
        tp = _per_image_sum(y_true * p)
        fp = _per_image_sum((1.0 - y_true) * p)
        fn = _per_image_sum(y_true * (1.0 - p))
        denominator = tp + self.alpha * fp + self.beta * fn + self.smooth
        denominator = ops.maximum(denominator, keras.config.epsilon())
        return 1.0 - (tp + self.smooth) / denominator

    def get_config(self) -> dict:
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta, "smooth": self.smooth}


@_register(package="kseg", name="FocalTverskyLoss")
class FocalTversky(Tversky):
    """Focal Tversky loss (Abraham & Khan, 2019): the per-image Tversky loss to a power.

        focal_tversky = tversky ** gamma

    with ``tversky`` as in :class:`Tversky`. The paper writes the exponent as ``1/gamma``
    with ``gamma = 4/3``, hence the default ``gamma=0.75``: below 1 it raises small losses,
    so well-segmented images keep pulling. The power is taken only where the Tversky loss
    is positive (it is 0 elsewhere), so a perfect prediction has a zero, not NaN, gradient
    although ``t ** 0.75`` has an infinite slope at 0.

    Args:
        alpha: Weight of the false positives, ``>= 0``.
        beta: Weight of the false negatives, ``>= 0``.
        gamma: Exponent, ``> 0``; ``gamma=1`` is :class:`Tversky`.
        smooth: Additive smoothing of numerator and denominator, ``>= 0``.
        from_logits: Whether ``y_pred`` holds logits (default) or probabilities.
        reduction: Keras reduction over the per-image values.
        name: Name of the loss.

    Example:

    >>> y = np.array([1, 0, 0, 0], "float32").reshape(1, 2, 2, 1)
    >>> float(FocalTversky()(y, np.zeros_like(y)))  # 0.4 ** 0.75
    0.5029...
    """

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.5,
        gamma: float = 0.75,
        smooth: float = 1.0,
        from_logits: bool = True,
        reduction: str | None = "sum_over_batch_size",
        name: str = "focal_tversky",
    ):
        super().__init__(alpha=alpha, beta=beta, smooth=smooth, from_logits=from_logits, reduction=reduction, name=name)
        if not gamma > 0:
            raise invalid_value("gamma", "> 0", gamma)
        self.gamma = float(gamma)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        t = super().call(y_true, y_pred)
        # Double where: the unused branch gets a safe base, so no inf * 0 in the gradient.
        positive = t > 0.0
        safe = ops.where(positive, t, ops.ones_like(t))
        return ops.where(positive, ops.power(safe, self.gamma), ops.zeros_like(t))

    def get_config(self) -> dict:
        return {**super().get_config(), "gamma": self.gamma}


@_register(package="kseg", name="LovaszHingeLoss")
class LovaszHinge(_SegLoss):
    """Lovász hinge loss (Berman et al., 2018), a convex surrogate of the Jaccard loss.

    For one image with logits ``x`` and mask ``y``, flattened over its pixels, the hinge
    errors ``e = 1 - x * (2y - 1)`` are sorted in decreasing order (``e_s``, with the mask
    reordered alike as ``y_s``). With ``g = sum(y)``,

        jaccard_i = 1 - (g - cumsum(y_s)_i) / (g + cumsum(1 - y_s)_i)
        grad = (jaccard_1, jaccard_2 - jaccard_1, ..., jaccard_N - jaccard_{N-1})
        lovasz = sum_i relu(e_s)_i * grad_i

    the Lovász extension of the Jaccard loss evaluated at the positive errors. The
    denominator is >= 1, so an empty mask is fine (then only the largest error counts).
    The loss is piecewise linear in the logits. Masks must be 0/1.

    Args:
        per_image: Whether each image gets its own Lovász loss (default) or the whole batch
            is taken as one image (Berman's ``per_image=False``); then every image gets
            that batch value, so the default reduction returns it.
        from_logits: Whether ``y_pred`` holds logits (default) or probabilities
            (clipped to ``[epsilon, 1 - epsilon]`` and turned into logits).
        reduction: Keras reduction over the per-image values.
        name: Name of the loss.

    Example:

    >>> y = np.array([1, 0], "float32").reshape(1, 1, 2, 1)
    >>> x = np.array([2, 1], "float32").reshape(1, 1, 2, 1)  # errors -1 and 2
    >>> float(LovaszHinge()(y, x))  # sorted: (2, y=0), (-1, y=1); grad (0.5, 0.5)
    1.0
    """

    def __init__(
        self,
        per_image: bool = True,
        from_logits: bool = True,
        reduction: str | None = "sum_over_batch_size",
        name: str = "lovasz",
    ):
        super().__init__(from_logits=from_logits, name=name, reduction=reduction)
        self.per_image = bool(per_image)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = _prepare(y_true, y_pred)
        x = y_pred if self.from_logits else _probabilities_to_logits(y_pred)
        batch = ops.shape(x)[0]
        x = ops.reshape(x, (batch, -1))
        y = ops.reshape(y_true, (batch, -1))
        errors = 1.0 - x * (2.0 * y - 1.0)
        if not self.per_image:
            errors, y = ops.reshape(errors, (1, -1)), ops.reshape(y, (1, -1))
        order = ops.argsort(-errors, axis=-1)
        errors_sorted = ops.take_along_axis(errors, order, axis=-1)
        y_sorted = ops.take_along_axis(y, order, axis=-1)
        # grad depends on the mask only (the order is integer), so no gradient flows through it.
        gts = ops.sum(y_sorted, axis=-1, keepdims=True)
        intersection = gts - ops.cumsum(y_sorted, axis=-1)
        union = gts + ops.cumsum(1.0 - y_sorted, axis=-1)
        jaccard = 1.0 - intersection / union
        grad = ops.concatenate([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=-1)
        loss = ops.sum(ops.relu(errors_sorted) * ops.stop_gradient(grad), axis=-1)
        if not self.per_image:
            loss = ops.zeros_like(x[:, 0]) + loss
        return loss

    def get_config(self) -> dict:
        return {**super().get_config(), "per_image": self.per_image}


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


@_register(package="kseg", name="DeepSupervisionLoss")
class DeepSupervision(keras.losses.Loss):
    """A loss on the final logits and on each side output of a deeply supervised model
    (:func:`kseg.models.deep_supervision.training_model`), whose output stacks them on the last
    axis, the final logits first:

        L = loss(y, z_0) + sum_{i >= 1} weights[i - 1] * loss(y, z_i)

    with ``z_i = y_pred[..., i]`` and the same base ``loss`` (its per-image values) for each.

    Args:
        loss: the base loss: a ``Loss``, a name accepted by :func:`get` or a serialized config.
        weights: one weight per side output, in the order of the stacked channels (the
            decoder declares them: ``kseg.models.base.Decoder.side_weights``).
        reduction: Keras reduction over the per-image values.
        name: the loss's name; default ``ds_`` + the base loss's.

    Example:

    >>> loss = DeepSupervision("bce", weights=[0.5, 0.5])   # y_pred: (B, H, W, 3)
    """

    def __init__(
        self,
        loss: Any,
        weights: Sequence[float],
        reduction: str | None = "sum_over_batch_size",
        name: str | None = None,
    ):
        self.loss = get(loss)
        self.weights = [float(w) for w in weights]
        if not self.weights:
            raise ValueError("DeepSupervision expects one weight per side output. Received: weights=[]")
        super().__init__(name=name or f"ds_{self.loss.name}", reduction=reduction, dtype="float32")

    def call(self, y_true: Any, y_pred: Any) -> Any:
        if y_pred.shape[-1] != len(self.weights) + 1:
            raise ValueError(
                f"DeepSupervision expects the final logits and {len(self.weights)} side outputs on the last axis. "
                f"Received: y_pred of shape {y_pred.shape}"
            )
        total = 0.0
        for channel, weight in enumerate([1.0, *self.weights]):
            total = total + weight * ops.cast(self.loss.call(y_true, y_pred[..., channel : channel + 1]), "float32")
        return total

    def get_config(self) -> dict:
        return {
            "loss": keras.saving.serialize_keras_object(self.loss),
            "weights": list(self.weights),
            "reduction": self.reduction,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict) -> "DeepSupervision":
        config = dict(config)
        if isinstance(config["loss"], dict):
            config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        return cls(**config)


# The single losses by name: a new loss is its class plus one line here; ``get`` and
# ``available`` (so --losses, and the tests that train a step on each loss) take it from here.
REGISTRY: dict[str, type[keras.losses.Loss]] = {
    "bce": BCE,
    "dice": Dice,
    "focal": Focal,
    "tversky": Tversky,
    "focal_tversky": FocalTversky,
    "lovasz": LovaszHinge,
}
# The combinations ``available`` lists besides them (any "+"-join works).
COMBINATIONS = ("bce+dice", "bce+focal", "dice+focal")


def available() -> tuple[str, ...]:
    """Names accepted by :func:`get`: every single loss of :data:`REGISTRY`, then
    :data:`COMBINATIONS` (any ``+``-join of the single names works)."""
    return (*REGISTRY, *COMBINATIONS)


def get(identifier: Any) -> keras.losses.Loss:
    """Returns a loss from a name, a ``"+"``-joined name, a config or an instance.

    Args:
        identifier: ``"bce"``, ``"dice"``, ``"focal"``, ``"tversky"``,
            ``"focal_tversky"``, ``"lovasz"``, a combination such as
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
        unknown = [part for part in parts if part not in REGISTRY]
        if unknown:
            where = f" in {identifier!r}" if len(parts) > 1 else ""
            raise ValueError(
                f"Unknown kseg loss {', '.join(map(repr, unknown))}{where}. Expected one of: "
                f"{', '.join(available())} (or any '+'-join of "
                f"{', '.join(REGISTRY)}). Received: {identifier!r}"
            )
        if len(parts) == 1:
            return REGISTRY[parts[0]]()
        return Combo([REGISTRY[part]() for part in parts])
    raise ValueError(
        f"Cannot interpret {identifier!r} as a kseg loss: expected a name, a "
        f"config dict or a keras.losses.Loss. Known names: {', '.join(available())}."
    )
