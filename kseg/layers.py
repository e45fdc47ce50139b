"""Layers the Keras core lacks: max pooling that remembers where each maximum came from, the
unpooling that puts values back there (SegNet), and the conv block every kseg model is made of.

Pooling positions are stored per window, not as flat indices: ``positions[b, i, j, c]`` is the
row-major offset (0 .. pool_size**2 - 1) of the maximum inside window ``(i, j)`` of channel ``c``.
That keeps both layers max-pools, a comparison, reshapes and a one-hot in ``keras.ops``, so they
run unchanged on every backend, have static shapes and are differentiable with respect to the
values (the positions are integer and carry no gradient).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from kseg._errors import unknown_name


def _check_divisible(shape: tuple, pool_size: int, layer_name: str) -> None:
    height, width = shape[1], shape[2]
    for side, label in ((height, "height"), (width, "width")):
        if side is None:
            raise ValueError(f"{layer_name} expects a static {label}. Received: input shape {shape}")
        if side % pool_size:
            raise ValueError(f"{layer_name}: input {label} {side} is not divisible by pool_size {pool_size}.")


def _first_max_positions(x, pooled, pool_size: int):
    """Row-major offset of the FIRST element of each window equal to its max, as int32.

    Each element equal to its window's max gets the code ``p*p - k`` for its offset ``k``, every
    other element 0; a max-pool of the codes then picks the first matching offset, so ties go to
    exactly one position, as argmax does. The comparison runs on the free reshape
    ``(B, h, p, w, p, C)`` and the pick on the backend's max-pool kernel: no strided slices and
    no 6-D transpose, which cost TensorFlow 7x more here (docs/benchmarks.md, "Where the time goes").
    A window without a match (NaN input) gets offset 0.
    """
    p = pool_size
    _, height, width, channels = x.shape
    windows = ops.reshape(x, (-1, height // p, p, width // p, p, channels))
    is_max = ops.equal(windows, ops.expand_dims(ops.expand_dims(pooled, 2), 4))
    codes = ops.reshape(ops.arange(p * p, 0, -1, dtype=x.dtype), (1, 1, p, 1, p, 1))
    codes = ops.reshape(ops.where(is_max, codes, ops.zeros((), dtype=x.dtype)), ops.shape(x))
    best = ops.cast(ops.max_pool(codes, p, strides=p, padding="valid"), "int32")
    return (p * p - best) % (p * p)


@keras.saving.register_keras_serializable(package="kseg")
class MaxPoolingWithArgmax2D(layers.Layer):
    """Non-overlapping 2D max pooling that also returns where each maximum was.

    ``pooled[b, i, j, c] = max(window)`` and ``positions[b, i, j, c] = argmax(window)`` with the
    window ``x[b, p*i : p*(i+1), p*j : p*(j+1), c]`` flattened row-major. Among tied values the
    first wins, so exactly one position per window is recorded.

    Args:
        pool_size: side of the square, non-overlapping pooling window (stride = pool_size).

    Example:
    >>> pooled, positions = MaxPoolingWithArgmax2D()(keras.random.normal((1, 4, 4, 3)))
    >>> pooled.shape, positions.shape
    ((1, 2, 2, 3), (1, 2, 2, 3))
    """

    def __init__(self, pool_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)

    def build(self, input_shape):
        _check_divisible(input_shape, self.pool_size, self.name)

    def call(self, inputs):
        # The backend's fused max-pool kernel for the values (and its gradient), then the
        # positions by comparison (no gradient flows through them).
        pooled = ops.max_pool(inputs, self.pool_size, strides=self.pool_size, padding="valid")
        return pooled, _first_max_positions(inputs, pooled, self.pool_size)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        shape = (batch, height // self.pool_size, width // self.pool_size, channels)
        return shape, shape

    def compute_output_spec(self, inputs):
        shape = self.compute_output_shape(inputs.shape)[0]
        return (
            keras.KerasTensor(shape, dtype=self.compute_dtype),
            keras.KerasTensor(shape, dtype="int32"),
        )

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="kseg")
class MaxUnpooling2D(layers.Layer):
    """Puts each value back at the position its maximum came from, zeros elsewhere.

    Takes ``[values, positions]`` as produced by ``MaxPoolingWithArgmax2D`` and returns a tensor
    ``pool_size`` times larger in height and width:
    ``out[b, p*i + r, p*j + s, c] = values[b, i, j, c]`` if ``positions[b, i, j, c] == r*p + s``
    else 0. The same as PyTorch's ``MaxUnpool2d(MaxPool2d(p, return_indices=True)(x))``.

    Args:
        pool_size: the pool size used by the matching pooling layer.

    Example:
    >>> x = keras.random.normal((1, 4, 4, 3))
    >>> pooled, positions = MaxPoolingWithArgmax2D()(x)
    >>> MaxUnpooling2D()([pooled, positions]).shape
    (1, 4, 4, 3)
    """

    def __init__(self, pool_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)

    def call(self, inputs, training=None):
        # Two formulations of the same values (docs/benchmarks.md, benchmarks/probes/unpool_step.py), both
        # comparing each window's position, (B, h, 1, w, 1, C), with the offsets (1, 1, p, 1, p, 1)
        # so that the (B, h, p, w, p, C) result is the output image by a free reshape, with no
        # one-hot and no 6-D transpose. Training repeats the values over their windows, whose
        # gradient is a cheap window sum (forward + backward 0.6-0.8x the broadcast's on
        # TensorFlow); inference and export broadcast them, the cheaper forward at the larger
        # shapes (0.5-0.7x) and an Equal/Where/Reshape in an exported graph.
        values, positions = inputs
        p = self.pool_size
        _, height, width, channels = values.shape
        window = (-1, height, 1, width, 1, channels)
        offsets = ops.reshape(ops.arange(0, p * p, dtype=positions.dtype), (1, 1, p, 1, p, 1))
        is_position = ops.equal(ops.reshape(positions, window), offsets)
        zero = ops.zeros((), dtype=values.dtype)
        if training:
            is_position = ops.reshape(is_position, (-1, height * p, width * p, channels))
            return ops.where(is_position, ops.repeat(ops.repeat(values, p, axis=1), p, axis=2), zero)
        unpooled = ops.where(is_position, ops.reshape(values, window), zero)
        return ops.reshape(unpooled, (-1, height * p, width * p, channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape[0]
        p = self.pool_size
        return (batch, None if height is None else height * p, None if width is None else width * p, channels)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


def conv_block(
    x,
    filters: int,
    name: str,
    bn_momentum: float = 0.9,
    batch_norm: str = "keras",
    kernel_size: int = 3,
    dilation_rate: int = 1,
):
    """Conv (3x3 unless ``kernel_size``; same padding) -> ReLU -> BatchNorm, the block of the
    original notebook; ``dilation_rate`` > 1 makes it atrous (DeepLab's ASPP).

    BatchNorm comes after the ReLU, as the notebook had it. ``bn_momentum`` 0.9 is PyTorch's
    default (its momentum 0.1); Keras' 0.99 lags far behind on a dataset of ~10 steps per epoch.
    epsilon 1e-5 is PyTorch's too, so weights transfer one to one. ``batch_norm`` "keras" is
    ``keras.layers.BatchNormalization``; "fast" is :class:`FastBatchNormalization`, the same
    function and weights in fewer passes.
    """
    if batch_norm not in BATCH_NORMALIZATIONS:
        raise unknown_name("batch_norm", batch_norm, BATCH_NORMALIZATIONS)
    norm = BATCH_NORMALIZATIONS[batch_norm]
    conv_options = {"dilation_rate": dilation_rate} if dilation_rate != 1 else {}
    x = layers.Conv2D(filters, kernel_size, padding="same", name=f"{name}_conv", **conv_options)(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    return norm(momentum=bn_momentum, epsilon=1e-5, name=f"{name}_bn")(x)


@keras.saving.register_keras_serializable(package="kseg")
class ShadesOfGray(layers.Layer):
    """Shades of Gray colour constancy (Finlayson & Trezzi, 2004), per image.

    For each image ``x`` of shape ``(H, W, C)`` (channels last, values in [0, 1]) the illuminant
    is estimated per channel by the Minkowski p-norm mean of the pixels:

        e_c = (mean_{i,j} max(x_{ijc}, 0) ** p) ** (1 / p)

    and every channel is rescaled so that the estimate becomes neutral grey of the same L2 norm:

        y_c = clip(x_c * ||e||_2 / (sqrt(C) * e_c), 0, 1)      (sqrt(3) for RGB)

    Before clipping the corrected image's estimate is ``||e||_2 / sqrt(C)`` in every channel and
    its norm is still ``||e||_2``: the cast is removed, the overall brightness kept. ``p = 1`` is
    Gray World, ``p -> inf`` approaches max-RGB; 6 is the usual choice for dermoscopy (Barata et
    al., 2015). A channel whose estimate is below ``epsilon`` is divided by ``epsilon`` instead,
    so an all-black image stays black. A single-channel image is returned unchanged (clipped).

    The statistics are computed in float32 whatever the dtype policy: the layer's default
    ``dtype`` is ``"float32"`` (not the global policy), so under ``mixed_bfloat16`` the raw image
    is not rounded to bfloat16 before the sixth powers; the next layer casts the result to its
    own compute dtype. An explicit ``dtype`` is honoured, the arithmetic still being float32 and
    only the output cast to the layer's compute dtype. No weights.

    Args:
        power: the Minkowski norm ``p`` (> 0).
        epsilon: lower bound on ``e_c`` in the division.
        name: layer name (default ``"shades_of_gray"``).
        **kwargs: other ``keras.layers.Layer`` arguments (``dtype``, ...).

    Example:
    >>> x = keras.ops.ones((1, 4, 4, 3)) * keras.ops.convert_to_tensor([0.8, 0.4, 0.2])
    >>> y = keras.ops.convert_to_numpy(ShadesOfGray()(x))
    >>> y[0, 0, 0].round(4)  # every channel becomes ||e|| / sqrt(3) = sqrt(0.84 / 3)
    array([0.5292, 0.5292, 0.5292], dtype=float32)
    """

    def __init__(self, power: float = 6, epsilon: float = 1e-6, name: str = "shades_of_gray", **kwargs):
        if kwargs.get("dtype") is None:
            kwargs["dtype"] = "float32"
        super().__init__(name=name, **kwargs)
        if not power > 0:
            raise ValueError(f"`power` must be > 0. Received: power={power}")
        if not epsilon > 0:
            raise ValueError(f"`epsilon` must be > 0. Received: epsilon={epsilon}")
        self.power = float(power)
        self.epsilon = float(epsilon)

    def illuminant(self, inputs):
        """The per-image estimate ``e``, shape (B, C), float32."""
        x = ops.maximum(ops.cast(inputs, "float32"), 0.0)
        return ops.power(ops.mean(ops.power(x, self.power), axis=(1, 2)), 1.0 / self.power)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        estimate = self.illuminant(x)  # (B, C)
        channels = ops.cast(ops.shape(estimate)[-1], "float32")
        norm = ops.sqrt(ops.sum(ops.square(estimate), axis=-1, keepdims=True))
        gains = norm / (ops.sqrt(channels) * ops.maximum(estimate, self.epsilon))
        gains = ops.expand_dims(ops.expand_dims(gains, 1), 1)  # (B, 1, 1, C)
        out = ops.clip(x * gains, 0.0, 1.0)
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "power": self.power, "epsilon": self.epsilon}


# What each keras.applications family expects of an image (Keras's ``imagenet_utils`` modes),
# given kseg's images in [0, 1]: "pixels" for the families that normalise inside themselves.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
PREPROCESSING_MODES = ("pixels", "tf", "torch", "caffe")


@keras.saving.register_keras_serializable(package="kseg")
class EncoderPreprocessing(layers.Layer):
    """Turns kseg's RGB images in [0, 1] into what a pretrained encoder was trained on, inside
    the model, so ``predict``, ``evaluate``, export and the engines need no per-encoder code.

        pixels: y = 255 x                                  (the encoder normalises itself)
        tf:     y = 2 x - 1                                (MobileNetV2)
        torch:  y = (x - mean) / std, ImageNet's RGB mean and std   (DenseNet)
        caffe:  y = 255 x[..., ::-1] - ImageNet's BGR mean          (ResNet50)

    Args:
        mode: one of ``PREPROCESSING_MODES``.

    Example:
    >>> EncoderPreprocessing("tf")(keras.ops.ones((1, 2, 2, 3))).shape
    (1, 2, 2, 3)
    """

    def __init__(self, mode: str = "pixels", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise unknown_name("mode", mode, PREPROCESSING_MODES)
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if self.mode == "pixels":
            y = x * 255.0
        elif self.mode == "tf":
            y = x * 2.0 - 1.0
        elif self.mode == "torch":
            y = (x - ops.array(_IMAGENET_MEAN)) / ops.array(_IMAGENET_STD)
        else:
            y = ops.flip(x, axis=-1) * 255.0 - ops.array(_CAFFE_BGR_MEAN)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


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

__all__ = [
    "MaxPoolingWithArgmax2D",
    "MaxUnpooling2D",
    "conv_block",
    "ShadesOfGray",
    "EncoderPreprocessing",
    "PREPROCESSING_MODES",
    "FastBatchNormalization",
    "BATCH_NORMALIZATIONS",
]
