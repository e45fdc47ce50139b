"""Layers the Keras core lacks: max pooling that remembers where each maximum came from, the
unpooling that puts values back there (SegNet), the conv block every kseg model is made of, and
the symmetries of the square an ensemble's test-time views are made of (:class:`Dihedral`).

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
from kseg.batch_norm import BATCH_NORMALIZATIONS, FastBatchNormalization


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


@keras.saving.register_keras_serializable(package="kseg")
class Dihedral(keras.layers.Layer):
    """One symmetry of the square on NHWC images: mirror left-right (``mirror``), then rotate by
    ``quarter_turns`` x 90 degrees (as ``numpy.rot90`` over the spatial axes); ``inverse``
    applies the inverse map. No weights.

    >>> Dihedral(1, True)(images).shape == images.shape  # square images
    True
    """

    def __init__(self, quarter_turns: int = 0, mirror: bool = False, inverse: bool = False, **kwargs):
        super().__init__(**kwargs)
        if quarter_turns not in range(4):
            raise ValueError(f"quarter_turns expects 0, 1, 2 or 3. Received: {quarter_turns}")
        self.quarter_turns, self.mirror, self.inverse = quarter_turns, bool(mirror), bool(inverse)

    def call(self, x):
        if self.inverse:
            x = ops.rot90(x, -self.quarter_turns, axes=(1, 2)) if self.quarter_turns else x
            return ops.flip(x, axis=2) if self.mirror else x
        x = ops.flip(x, axis=2) if self.mirror else x
        return ops.rot90(x, self.quarter_turns, axes=(1, 2)) if self.quarter_turns else x

    def compute_output_shape(self, input_shape):
        if self.quarter_turns % 2:
            return (input_shape[0], input_shape[2], input_shape[1], input_shape[3])
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "quarter_turns": self.quarter_turns,
            "mirror": self.mirror,
            "inverse": self.inverse,
        }


__all__ = [
    "Dihedral",
    "MaxPoolingWithArgmax2D",
    "MaxUnpooling2D",
    "conv_block",
    "ShadesOfGray",
    "EncoderPreprocessing",
    "PREPROCESSING_MODES",
    "FastBatchNormalization",  # kseg.batch_norm's, here too for the names kseg 0.3 imported
    "BATCH_NORMALIZATIONS",
]
