"""UNeXt (Valanarasu and Patel, "UNeXt: MLP-based Rapid Medical Image Segmentation Network",
MICCAI 2022): a convolutional stage at the fine levels and tokenized shifted MLPs at the coarse ones.

With widths C1..C5 = base_filters * (1, 2, 8, 10, 16) (the paper's network: base_filters=16, so
16, 32, 128, 160, 256)::

    conv stage      enc{k}, k = 1, 2, 3: Conv 3x3 (C_k) -> BN -> 2x2 max-pool -> ReLU    P1, P2, P3
    tokenized MLP   enc{k}, k = 4, 5:    patch embedding (zero-pad 1, Conv 3x3 stride 2, C_k)
                                         -> LayerNorm -> shifted-MLP block -> LayerNorm  P4, P5
    decoder         dec4 (C4), dec3 (C3): Conv 3x3 -> BN -> 2x bilinear -> ReLU -> + P_k
                                          -> shifted-MLP block -> LayerNorm
                    dec2 (C2), dec1 (C1): Conv 3x3 -> BN -> 2x bilinear -> ReLU -> + P_k
                    dec0 (C1):            Conv 3x3 -> 2x bilinear -> ReLU   (stride 1; kseg's 1x1 head follows)

    shifted-MLP block (width C, hidden width C):  x + fc2(shift_w(GELU(dwconv(fc1(shift_h(LN(x)))))))

``shift_h`` / ``shift_w`` (:class:`AxialShift`) split the channels into 5 groups and move group g
by g - 2 pixels along the height / width axis, zeros filling in; fc1 and fc2 are per-pixel Dense
layers (the token MLPs), dwconv a 3x3 depthwise convolution. Every level halves the resolution:
the total stride is 32, whatever ``options.depth`` (ignored: the network has its fixed five levels).
At 256x256 the paper's network has 1.47 M parameters and 0.56 G multiply-accumulates (the paper's
0.57 "GFLOPs", counted by its authors at 256x256, their code's default input size).

Checked against the authors' code (github.com/jeya-maria-jose/UNeXt-pytorch, ``archs.py``,
class ``UNext``). Where kseg departs from the paper or that code:

- Widths: the paper's text gives C1..C5 = 32, 64, 128, 160, 256; the authors' code, whose network
  the published 1.47 M parameters and 0.57 GFLOPs count, has 16, 32, 128, 160, 256. kseg follows the code.
- Shift order: the first shift moves rows (the height axis), the second columns, as the authors' code
  (``torch.roll`` over dims 2 then 3 of NCHW); the paper names them "across width" then "across
  height", which does not say which axis each moves along. Channel groups are ``torch.chunk``'s:
  ceil(C / 5) channels each, the last one smaller (256 -> 52, 52, 52, 52, 48).
- The conv stage runs BN -> max-pool -> ReLU, the authors' order; the paper's conv -> BN -> ReLU then
  pooling is the same function (ReLU and max commute).
- Initialisation: the token-MLP stage follows the authors' code (Dense: truncated normal, std 0.02,
  zero bias; patch-embedding and depthwise convolutions: He normal over fan-out); the other
  convolutions keep Keras's Glorot uniform instead of PyTorch's default.
- Dropout and stochastic depth (rate 0 in the authors' code) are left out.
- kseg's images are in [0, 1]; the authors' pipeline standardises them by ImageNet's mean and std.
- BatchNorm: kseg's ``options.bn_momentum`` (0.9 = PyTorch's default 0.1) and ``options.batch_norm``;
  BatchNorm and LayerNorm epsilon 1e-5, PyTorch's.

Two of the paper's functions are written so that every backend's ONNX exporter converts them (the
same functions): LayerNorm as :class:`ChannelLayerNormalization` (torch.onnx cannot export Keras's
under PyTorch) and the exact GELU as :class:`ExactGELU` (tf2onnx cannot convert TensorFlow's).
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from kseg.layers import BATCH_NORMALIZATIONS
from kseg.models._common import bilinear_upsampling
from kseg.models.base import Decoder, Encoder, Features, ModelOptions
from kseg.models.light.layers import ChannelLayerNormalization, ExactGELU

NAME = "unext"
PAPER_BASE_FILTERS = 16
_WIDTHS = (1, 2, 8, 10, 16)  # C1..C5 in units of base_filters
_SHIFT_SIZE = 5
_EPSILON = 1e-5  # PyTorch's BatchNorm2d and LayerNorm default


@keras.saving.register_keras_serializable(package="kseg")
class AxialShift(layers.Layer):
    """Shifts groups of channels along one spatial axis by different amounts, zeros filling in.

    The C channels are cut into consecutive groups of ``ceil(C / shift_size)`` channels (the last
    one smaller, as ``torch.chunk``) and group g moves by ``s_g = g - shift_size // 2`` pixels. Along
    ``axis=1`` (height)::

        out[b, i, j, c] = x[b, i - s_g, j, c]   if 0 <= i - s_g < H,   else 0     (c in group g)

    and likewise along ``axis=2`` (width). Computed as one zero pad of ``shift_size // 2`` on both
    sides of the axis, one slice per group and a concatenation (UNeXt's pad, roll, crop), which
    every backend and ONNX exporter has.

    Args:
        axis: 1 (height) or 2 (width) of a channels-last (B, H, W, C) input.
        shift_size: the number of groups (odd): shifts -shift_size // 2 .. shift_size // 2.

    Example:
    >>> x = keras.ops.reshape(keras.ops.arange(5.0), (1, 5, 1, 1)) * keras.ops.ones((1, 1, 1, 3))
    >>> keras.ops.convert_to_numpy(AxialShift(axis=1, shift_size=3)(x))[0, :, 0]  # shifts -1, 0, 1
    array([[1., 0., 0.],
           [2., 1., 0.],
           [3., 2., 1.],
           [4., 3., 2.],
           [0., 4., 3.]], dtype=float32)
    """

    def __init__(self, axis: int, shift_size: int = _SHIFT_SIZE, **kwargs):
        super().__init__(**kwargs)
        if axis not in (1, 2):
            raise ValueError(f"`axis` must be 1 (height) or 2 (width). Received: axis={axis!r}")
        if shift_size < 1 or shift_size % 2 == 0:
            raise ValueError(f"`shift_size` must be a positive odd number. Received: shift_size={shift_size!r}")
        self.axis = axis
        self.shift_size = shift_size

    def groups(self, channels: int) -> list[tuple[int, int, int]]:
        """(first channel, end channel, shift) of each group, as ``torch.chunk`` cuts them."""
        size = math.ceil(channels / self.shift_size)
        pad = self.shift_size // 2
        return [(start, min(start + size, channels), g - pad) for g, start in enumerate(range(0, channels, size))]

    def call(self, inputs):
        pad = self.shift_size // 2
        length = inputs.shape[self.axis]
        if length is None:
            length = ops.shape(inputs)[self.axis]
        paddings = [[0, 0]] * 4
        paddings[self.axis] = [pad, pad]
        padded = ops.pad(inputs, paddings)
        shifted = []
        for start, end, shift in self.groups(inputs.shape[-1]):
            # out[i] = padded[i + pad - shift] = x[i - shift]
            index = [slice(None)] * 3 + [slice(start, end)]
            index[self.axis] = slice(pad - shift, pad - shift + length)
            shifted.append(padded[tuple(index)])
        return ops.concatenate(shifted, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "shift_size": self.shift_size}


def _dense_initializer():
    # The authors' token MLPs: trunc_normal_(std=.02), bias 0.
    return keras.initializers.TruncatedNormal(stddev=0.02)


def _fan_out_initializer():
    # The authors' patch-embedding and depthwise convolutions: normal(0, sqrt(2 / fan_out)).
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def shifted_mlp_block(x, name: str, shift_size: int = _SHIFT_SIZE):
    """UNeXt's tokenized shifted-MLP block at the width of ``x`` (hidden width the same):

        y = fc2(shift_w(GELU(dwconv(fc1(shift_h(LayerNorm(x)))))));   out = x + y

    fc1 and fc2 are Dense layers over the channels of each pixel (token), dwconv a 3x3
    depthwise convolution with bias, GELU the exact one, LayerNorm over the channels."""
    channels = x.shape[-1]
    y = ChannelLayerNormalization(epsilon=_EPSILON, name=f"{name}_norm")(x)
    y = AxialShift(1, shift_size, name=f"{name}_shift_h")(y)
    y = layers.Dense(channels, kernel_initializer=_dense_initializer(), name=f"{name}_fc1")(y)
    depthwise = layers.DepthwiseConv2D(
        3, padding="same", depthwise_initializer=_fan_out_initializer(), name=f"{name}_dwconv"
    )
    y = depthwise(y)
    y = ExactGELU(name=f"{name}_gelu")(y)
    y = AxialShift(2, shift_size, name=f"{name}_shift_w")(y)
    y = layers.Dense(channels, kernel_initializer=_dense_initializer(), name=f"{name}_fc2")(y)
    return layers.Add(name=f"{name}_add")([x, y])


def _widths(options: ModelOptions) -> list[int]:
    return [options.base_filters * w for w in _WIDTHS]


def _batch_norm(options: ModelOptions, name: str):
    return BATCH_NORMALIZATIONS[options.batch_norm](momentum=options.bn_momentum, epsilon=_EPSILON, name=name)


def _encoder(image, options: ModelOptions) -> Features:
    widths = _widths(options)
    x, pyramid = image, {}
    for level in (1, 2, 3):
        name = f"unext_enc{level}"
        x = layers.Conv2D(widths[level - 1], 3, padding="same", name=f"{name}_conv")(x)
        x = _batch_norm(options, f"{name}_bn")(x)
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        pyramid[f"P{level}"] = x
    for level in (4, 5):
        name = f"unext_enc{level}"
        # PyTorch's Conv2d(padding=1, stride=2): Keras's "same" would pad (0, 1) and move the grid a pixel.
        x = layers.ZeroPadding2D(1, name=f"{name}_embed_pad")(x)
        x = layers.Conv2D(
            widths[level - 1], 3, strides=2, kernel_initializer=_fan_out_initializer(), name=f"{name}_embed_conv"
        )(x)
        x = ChannelLayerNormalization(epsilon=_EPSILON, name=f"{name}_embed_norm")(x)
        x = shifted_mlp_block(x, f"{name}_block")
        x = ChannelLayerNormalization(epsilon=_EPSILON, name=f"{name}_norm")(x)
        pyramid[f"P{level}"] = x
    return Features(pyramid)


def _decoder(features: Features, options: ModelOptions):
    widths = _widths(options)
    x = features.level(5)
    # (output level, width, whether a shifted-MLP block and a LayerNorm follow the skip)
    for level, filters, tokenized in ((4, widths[3], True), (3, widths[2], True), (2, widths[1], False)):
        x = _up_stage(x, filters, f"unext_dec{level}", options, skip=features.level(level))
        if tokenized:
            x = shifted_mlp_block(x, f"unext_dec{level}_block")
            x = ChannelLayerNormalization(epsilon=_EPSILON, name=f"unext_dec{level}_norm")(x)
    x = _up_stage(x, widths[0], "unext_dec1", options, skip=features.level(1))
    return _up_stage(x, widths[0], "unext_dec0", options, skip=None, batch_norm=False)


def _up_stage(x, filters: int, name: str, options: ModelOptions, skip, batch_norm: bool = True):
    """Conv 3x3 -> [BN] -> 2x bilinear -> ReLU [-> + skip]: the convolution at the coarse
    resolution, as the authors' decoder (a quarter of the multiply-accumulates)."""
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv")(x)
    if batch_norm:
        x = _batch_norm(options, f"{name}_bn")(x)
    x = bilinear_upsampling(2, f"{name}_up")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    if skip is not None:
        x = layers.Add(name=f"{name}_add")([x, skip])
    return x


def _stride(options: ModelOptions) -> int:
    return 32


ENCODERS = [Encoder(NAME, _encoder, _stride, "kseg")]
DECODERS = [
    Decoder(
        NAME,
        _decoder,
        NAME,
        "UNeXt (MICCAI 2022): conv stage, tokenized shifted MLPs at strides 16 and 32, additive skips",
        encoders=(NAME,),
    )
]

__all__ = [
    "AxialShift",
    "ChannelLayerNormalization",
    "ExactGELU",
    "shifted_mlp_block",
    "ENCODERS",
    "DECODERS",
    "PAPER_BASE_FILTERS",
]
