"""BatchNorm in kseg: :class:`FastBatchNormalization` (Keras's layer in fewer passes), the names
``conv_block`` takes (:data:`BATCH_NORMALIZATIONS`), and precise statistics: every BatchNorm
layer's moving mean and variance recomputed from the training images once training is done
(Wu and Johnson, "Rethinking 'Batch' in BatchNorm", 2021).

A moving average with momentum ``m`` keeps ``m**k`` of its initial value after ``k`` steps: 0.9
(kseg's) after the 6 steps of the smoke preset keeps 53% of the initial mean 0 and variance 1,
so a briefly trained model predicts in inference mode with statistics far from those it trained
with, and a run that learned something scores IoU 0 (issue 40: the quickstart notebook and the
smoke grid). ``recalibrate`` replaces them with the mean over the images' batches of each batch's
statistics, the weights of the last step left as they are:

    moving_mean = mean_b mean(x_b),   moving_variance = mean_b var(x_b)

(each layer seeing the inputs the recalibrated layers before it give, batch by batch).

>>> import keras, numpy as np
>>> model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.BatchNormalization()])
>>> recalibrate(model, np.ones((8, 4, 4, 2), "float32") * 3.0, batch_size=4)
1
>>> keras.ops.convert_to_numpy(model.layers[0].moving_mean).tolist()
[3.0, 3.0]
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops


def _on_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


def _rows(x):
    """``prod(x.shape[:-1])``: the elements per channel (a tensor where the batch is dynamic)."""
    return ops.shape(ops.reshape(x, (-1, x.shape[-1])))[0]


def _channel_sums(x):
    """Sum of ``x`` over every axis but the last: a (C,) vector in ``x``'s dtype.

    On TensorFlow products with rows of ones, in two levels: ``x`` as (R, W, C) (W its
    second-last axis, the image width) summed over W by a batched (1, W) x (W, C) product, then
    the R partial sums by a (1, R) x (R, C) one. oneDNN's matrix products read ``x`` once at
    memory speed, where Eigen's ``reduce_sum`` over the leading axes took 3-4 times as long on
    this CPU. Two levels because a matrix product accumulates along its inner dimension in
    sequence: over 2.6e5 pixels of a mostly-zero ReLU output one level was 1e-3 off (Eigen's
    ``reduce_sum`` 5e-4), two levels 1.4e-5. Elsewhere ``ops.sum``.
    """
    if not _on_tensorflow():
        return ops.sum(x, axis=tuple(range(len(x.shape) - 1)))
    channels, width = x.shape[-1], x.shape[-2] if len(x.shape) > 2 else None
    if width is not None and width > 1:
        ones = ops.ones((1, 1, width), dtype=x.dtype)
        x = ops.matmul(ones, ops.reshape(x, (-1, width, channels)))  # (R, 1, C)
    matrix = ops.reshape(x, (-1, channels))
    ones = ops.ones((1, ops.shape(matrix)[0]), dtype=x.dtype)
    return ops.reshape(ops.matmul(ones, matrix), (-1,))


def _channel_affine(x, scale=None, offset=None):
    """``x * scale + offset`` with (C,) vectors along the last axis, in ``x``'s dtype.

    ``scale=None`` means 1 and ``offset=None`` 0. On TensorFlow the product is a 1x1 depthwise
    convolution and the sum is added after it, a pair oneDNN's graph rewrite fuses into one
    kernel with a bias; a broadcast multiply and add are two Eigen passes, 5-7 times slower on
    this CPU. A negated offset is best passed as ``v * -1.0``: TensorFlow's arithmetic rewrite
    turns ``y + (-v)`` into ``y - v``, which the fusion does not match. Elsewhere plain
    broadcasting (XLA fuses it; PyTorch's kernels vectorise it).
    """
    if offset is not None:
        offset = ops.cast(offset, x.dtype)
    if not _on_tensorflow():
        y = x if scale is None else x * ops.cast(scale, x.dtype)
        return y if offset is None else y + offset
    shape = ops.shape(x)
    channels = x.shape[-1]
    if scale is None:
        scale = ops.ones((channels,), dtype=x.dtype)
    image = x if len(x.shape) == 4 else ops.reshape(x, (1, -1, 1, channels))
    kernel = ops.reshape(ops.cast(scale, x.dtype), (1, 1, channels, 1))
    y = ops.depthwise_conv(image, kernel, strides=1, padding="valid", data_format="channels_last")
    if offset is not None:
        y = y + offset
    return y if len(x.shape) == 4 else ops.reshape(y, shape)


def _rough_mean(x, per_image: int = 256):
    """Per-channel mean of a strided sample of about ``per_image`` pixels of each image: a shift
    within a fraction of a standard deviation of the batch mean, for a few per cent of a pass.

    Moments taken about it, ``mean(s**2) - mean(s)**2`` with ``s = x - shift``, lose nothing to
    cancellation. About the batch's first pixel instead, the variance of a ReLU output that is
    mostly zeros, with a first pixel of 5, came out 2e-3 off from TensorFlow's float32 sums over
    2.6e5 pixels (each good to ~6e-6 relative).
    """
    pixels = 1
    for side in x.shape[1:-1]:
        pixels = None if side is None or pixels is None else pixels * side
    stride = max(1, pixels // per_image) if pixels else 1
    return ops.mean(ops.reshape(x, (-1, x.shape[-1]))[::stride], axis=0)


def _scale_and_shift(x, mean, a, offset):
    """``(x - mean) * a + offset`` for float32 (C,) vectors, computed in ``x``'s dtype.

    float32: ``x * a + (offset - mean * a)``, Keras' own fold. Lower precision: the mean is
    rounded to ``x``'s dtype and subtracted first, ``(x - m) * a + (offset - (mean - m) * a)``,
    one pass more; ``x - m`` rounds relative to the centred value, so the error stays a few ulps
    of the output. The one-pass fold would round ``x * a`` and ``mean * a``, each ``|mean| /
    std`` times larger than a normalised value, and keep that error in their difference (0.5
    for a bfloat16 channel of mean 10 and spread 0.5).
    """
    if keras.backend.standardize_dtype(x.dtype) in ("float32", "float64"):
        return _channel_affine(x, a, offset - mean * a)
    minus_rounded_mean = ops.cast(mean * -1.0, x.dtype)
    centred = _channel_affine(x, None, minus_rounded_mean)
    return _channel_affine(centred, a, offset - (mean + ops.cast(minus_rounded_mean, "float32")) * a)


def _no_gradients(*tensors):
    """The gradients a custom gradient returns for inputs that get none: None, or zeros under
    JAX, which wants one per input (XLA drops them)."""
    if keras.backend.backend() == "jax":
        return tuple(ops.zeros_like(t) for t in tensors)
    return (None,) * len(tensors)


@ops.custom_gradient
def _normalize_training(x, scale, offset, shifted, shifted_mean, inv_std):
    """BatchNorm's training-mode output ``gamma * (x - mean) * inv_std + beta`` and its whole
    backward, written out.

    ``shifted = float32(x) - shift`` for a per-channel constant ``shift``, ``shifted_mean`` its
    mean over all axes but the last (so ``x - mean = shifted - shifted_mean``) and ``inv_std =
    rsqrt(var + epsilon)`` are statistics of ``x`` the caller computed without gradient; the
    gradient returned for ``x`` is the total derivative, through the batch mean and variance too,

        dx = a * (dy - sum(dy) / M - xhat * sum(dy * xhat) / M),   xhat = (x - mean) * inv_std,

    with ``a = gamma * inv_std``, evaluated as ``dy * a + shifted * k + c`` with (C,) vectors
    ``k`` and ``c``: two float32 reductions and one multiply-add per element. Computing them from
    the shifted input keeps ``sum(dy * (x - mean))`` free of the cancellation that ``sum(dy * x)
    - mean * sum(dy)`` would suffer for a large mean. The statistics get no gradient.
    """
    a = scale * inv_std
    y = ops.cast(_channel_affine(shifted, a, offset - shifted_mean * a), x.dtype)

    def grad(*args, upstream=None):
        if upstream is None:  # TensorFlow and JAX pass it positionally, torch by keyword
            (upstream,) = args
        dy = ops.cast(upstream, "float32")
        count = ops.cast(_rows(dy), "float32")
        d_offset = _channel_sums(dy)
        d_scale = (_channel_sums(dy * shifted) - shifted_mean * d_offset) * inv_std
        minus_k = a * inv_std * d_scale / count
        c = minus_k * shifted_mean - a * d_offset / count
        # dy * a + c - shifted * (-k): a subtraction, so that TensorFlow's graph rewrite keeps
        # the first multiply-add one fused kernel instead of regrouping the sum of three terms.
        dx = _channel_affine(dy, a, c) - _channel_affine(shifted, minus_k)
        dx = ops.cast(dx, x.dtype)
        return (dx, d_scale, d_offset, *_no_gradients(shifted, shifted_mean, inv_std))

    return y, grad


@ops.custom_gradient
def _normalize_inference(x, scale, offset, mean, inv_std):
    """``(x - mean) * a + offset`` with ``a = scale * inv_std``, for the moving statistics
    ``mean`` and ``inv_std`` (which get no gradient), in ``x``'s dtype (``_scale_and_shift``).

    Written-out gradient so that gamma's and beta's are float32 sums, as in Keras' layer, where
    autodiff through the bfloat16 multiply-add would sum bfloat16 products (JAX does, losing
    several per cent on a channel whose mean is far from the moving mean).
    """
    a = scale * inv_std
    y = _scale_and_shift(x, mean, a, offset)

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        dy = ops.cast(upstream, "float32")
        d_offset = _channel_sums(dy)
        centred = _channel_affine(ops.cast(x, "float32"), None, mean * -1.0)
        d_scale = _channel_sums(dy * centred) * inv_std
        dx = ops.cast(_channel_affine(dy, a), x.dtype)
        return (dx, d_scale, d_offset, *_no_gradients(mean, inv_std))

    return y, grad


@keras.saving.register_keras_serializable(package="kseg")
class FastBatchNormalization(layers.Layer):
    """``keras.layers.BatchNormalization`` for channels-last inputs, in fewer passes and casts.

    Computes what Keras' layer computes, with the same weights (``gamma``, ``beta``,
    ``moving_mean``, ``moving_variance``: same names, shapes, order and float32 dtype, so weights
    and configs move between the two):

    - training (``training=True`` and ``trainable``): ``y = gamma * (x - mean) / sqrt(var + eps)
      + beta`` with the batch's ``mean`` and biased ``var`` over every axis but the last, and
      ``moving = moving * momentum + batch * (1 - momentum)`` for both moving statistics;
    - otherwise the same with ``moving_mean`` and ``moving_variance``.

    Keras' layer casts the input to float32, takes the moments in two passes, normalises in
    float32 and casts back, and its backward is autodiff through every one of those ops. Here:

    - the moments are ``mean(s)`` and ``mean(s**2) - mean(s)**2`` (clamped at 0) of the float32
      ``s = x - shift``, ``shift`` being the mean of a strided sample of ~256 pixels per image:
      both sums read the same tensor (one fused reduction under XLA), and the shift, exact for
      any value, keeps the difference of squares free of the cancellation that plain
      ``E[x^2] - E[x]^2`` suffers where a channel's mean is large against its spread;
    - scale and shift fold into one multiply-add per element, ``a = gamma * rsqrt(var + eps)``
      and ``b = beta - mean * a`` being computed on the (C,) vectors;
    - the backward is written out (``keras.ops.custom_gradient``): in training two float32
      reductions and one multiply-add per element; gamma's and beta's gradients are float32 sums
      in inference too;
    - in inference the multiply-add runs in the compute dtype (bfloat16 under ``mixed_bfloat16``)
      on the input, after subtracting the mean rounded to that dtype, with no float32 copy;
    - on TensorFlow the per-channel multiply-adds are 1x1 depthwise convolutions with a bias and
      the per-channel sums matrix products with a row of ones, which oneDNN runs several times
      faster than Eigen's broadcasting and reductions (the results are the same).

    In float32 the output agrees with Keras' to float32 rounding; under ``mixed_bfloat16`` to a
    bfloat16 rounding or two (Keras rounds once, at the end).

    Only ``axis=-1`` (channels last) and no ``mask``, ``renorm`` or ``synchronized``: those
    arguments are accepted, so that a Keras ``BatchNormalization`` config loads, but must keep
    their defaults. The others are Keras' and mean the same, defaults included.

    Example:
    >>> bn = FastBatchNormalization(momentum=0.9, epsilon=1e-5)
    >>> y = bn(keras.random.normal((4, 8, 8, 3), mean=2.0), training=True)
    >>> [w.path.split("/")[-1] for w in bn.weights]
    ['gamma', 'beta', 'moving_mean', 'moving_variance']
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        renorm=False,
        renorm_clipping=None,
        renorm_momentum=0.99,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(axis) != -1:
            raise ValueError(f"FastBatchNormalization supports only axis=-1. Received: axis={axis}")
        if renorm or synchronized:
            raise ValueError(
                "FastBatchNormalization supports neither renorm nor synchronized; use keras.layers.BatchNormalization."
            )
        self.axis = -1
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.moving_mean_initializer = keras.initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = keras.initializers.get(moving_variance_initializer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.beta_constraint = keras.constraints.get(beta_constraint)
        self.gamma_constraint = keras.constraints.get(gamma_constraint)
        self.renorm_clipping = renorm_clipping
        self.renorm_momentum = renorm_momentum
        self.gamma = None
        self.beta = None
        self.moving_mean = None
        self.moving_variance = None

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name} expects a static channel count. Received: input shape {input_shape}")
        shape = (channels,)
        if self.scale:
            self.gamma = self.add_weight(
                shape=shape,
                name="gamma",
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
                trainable=True,
                autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                shape=shape,
                name="beta",
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
                trainable=True,
                autocast=False,
            )
        self.moving_mean = self.add_weight(
            shape=shape,
            name="moving_mean",
            initializer=self.moving_mean_initializer,
            trainable=False,
            autocast=False,
        )
        self.moving_variance = self.add_weight(
            shape=shape,
            name="moving_variance",
            initializer=self.moving_variance_initializer,
            trainable=False,
            autocast=False,
        )
        self.input_spec = layers.InputSpec(ndim=len(input_shape), axes={-1: channels})

    def compute_output_shape(self, input_shape):
        return input_shape

    def _scale_and_offset(self):
        """gamma and beta as float32 tensors (ones and zeros where disabled)."""
        channels = self.moving_mean.shape[0]
        scale = self.gamma if self.scale else ops.ones((channels,))
        offset = self.beta if self.center else ops.zeros((channels,))
        return ops.cast(scale, "float32"), ops.cast(offset, "float32")

    def call(self, inputs, training=None):
        scale, offset = self._scale_and_offset()
        if training and self.trainable:
            x = ops.stop_gradient(ops.cast(inputs, "float32"))
            shift = _rough_mean(x)
            shifted = _channel_affine(x, None, shift * -1.0)
            count = ops.cast(_rows(x), "float32")
            shifted_mean = _channel_sums(shifted) / count
            variance = ops.maximum(_channel_sums(ops.square(shifted)) / count - ops.square(shifted_mean), 0.0)
            inv_std = ops.rsqrt(variance + self.epsilon)
            outputs = _normalize_training(inputs, scale, offset, shifted, shifted_mean, inv_std)
            mean = shifted_mean + shift
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving.assign(ops.cast(moving, "float32") * self.momentum + batch * (1.0 - self.momentum))
        else:
            moving_mean = ops.cast(self.moving_mean, "float32")
            inv_std = ops.rsqrt(ops.cast(self.moving_variance, "float32") + self.epsilon)
            outputs = _normalize_inference(inputs, scale, offset, moving_mean, inv_std)
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": keras.initializers.serialize(self.beta_initializer),
            "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": keras.initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": keras.initializers.serialize(self.moving_variance_initializer),
            "beta_regularizer": keras.regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": keras.regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": keras.constraints.serialize(self.beta_constraint),
            "gamma_constraint": keras.constraints.serialize(self.gamma_constraint),
            "synchronized": False,
            "renorm": False,
            "renorm_clipping": self.renorm_clipping,
            "renorm_momentum": self.renorm_momentum,
        }


# conv_block's ``batch_norm`` names (also RunConfig's and the CLI's choices).
BATCH_NORMALIZATIONS: dict[str, type[layers.Layer]] = {
    "keras": layers.BatchNormalization,
    "fast": FastBatchNormalization,
}


_BATCH_NORMS = (keras.layers.BatchNormalization, FastBatchNormalization)


def batch_norm_layers(model: keras.Model) -> list:
    """The BatchNorm layers of ``model`` (Keras's and kseg's), nested models' included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += batch_norm_layers(layer)
        elif isinstance(layer, _BATCH_NORMS):
            found.append(layer)
    return found


def recalibrate(model: keras.Model, images: np.ndarray, batch_size: int = 8) -> int:
    """Sets every BatchNorm layer's moving statistics of ``model`` to the mean of its batch
    statistics over ``images`` (the module's formula) and returns how many layers it set. Only
    the moving statistics change; the layers' momentum is restored."""
    norms = batch_norm_layers(model)
    if not norms or not len(images):
        return len(norms)
    momenta = [layer.momentum for layer in norms]
    try:
        for k, start in enumerate(range(0, len(images), batch_size)):
            for layer in norms:  # moving = moving * k / (k + 1) + batch / (k + 1): the running mean
                layer.momentum = k / (k + 1)
            model(np.asarray(images[start : start + batch_size]), training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return len(norms)


__all__ = ["FastBatchNormalization", "BATCH_NORMALIZATIONS", "batch_norm_layers", "recalibrate"]
