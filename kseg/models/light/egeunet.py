"""EGE-UNet: Ruan, Xie, Gao, Liu and Fu, "EGE-UNet: an Efficient Group Enhanced UNet for skin
lesion segmentation", MICCAI 2023 (arXiv:2307.08473).

Widths ``c = base_filters * (1, 2, 3, 4, 6, 8)``; the paper's are ``base_filters=8``:
``c = (8, 16, 24, 32, 48, 64)``, 0.053 M parameters and 0.072 G (thop MACs) at 256x256x3.
Every stage but the last is ``block -> GroupNorm(4) -> [2x down / up] -> GELU``::

    encoder                                               stride   width  output
    enc1..enc3: Conv3x3 -> GN -> MaxPool 2 -> GELU          2..8   c1..c3  P1..P3
    enc4, enc5: GHPA    -> GN -> MaxPool 2 -> GELU         16, 32  c4, c5  P4, extra["stage5"]
    enc6:       GHPA -> GELU (no norm, no pooling)             32      c6  P5

    decoder (level k: stride 2**k)
    dec5:       GHPA(P5) -> GN -> GELU                         32      c5
                side5_logits = Conv1x1(.) -> 1 channel; b5 = GAB(P5, stage5, side5_logits)
                x = x + b5
    dec4, dec3: GHPA -> GN -> bilinear 2x up -> GELU       16, 8   c4, c3
    dec2, dec1: Conv3x3 -> GN -> bilinear 2x up -> GELU     4, 2   c2, c1
                each then side{k}_logits = Conv1x1(x); b_k = GAB(b_{k+1}, P_k, side{k}_logits);
                x = x + b_k
    dec0_up:    bilinear 2x up to stride 1 (kseg's shared 1x1 logit head follows)

GHPA (Group multi-axis Hadamard Product Attention), on ``C`` channels to ``F``: LayerNorm, then
four groups of ``C/4`` channels:

    xy: x1 * Pw(GELU(DW3x3(resize(M_xy, (H, W)))))       M_xy: (8, 8, C/4)
    zx: x2 * Pw(GELU(DW3x1(resize(M_zx, (H, 1)))))       M_zx: (8, 1, C/4), broadcast along W
    zy: x3 * Pw(GELU(DW1x3(resize(M_zy, (1, W)))))       M_zy: (1, 8, C/4), broadcast along H
    dw: DW3x3(GELU(Pw(x4)))

concatenated, LayerNorm, DW3x3 -> GELU -> Conv1x1 to ``F``. ``DW`` is depthwise, ``Pw`` a 1x1
convolution. The learnable maps M have the FIXED sizes above (8 = the authors' ``x = y = 8``,
initialised to ones) and are resized bilinearly to the feature map at run time
(:class:`InterpolatedParameter`), so any input size divisible by 32 works. A map, once resized,
depends on no input: it is a learned, input-independent gate per channel and position.

GAB (Group Aggregation Bridge) of a deeper map ``h``, a skip ``l`` (``D`` channels) and a side
mask ``m`` (1 channel, logits): ``h`` is projected by a 1x1 conv to ``D`` channels and resized to
``l``'s size; both are split into four groups; group ``i`` is ``concat(h_i, l_i, m)`` (``D/2 + 1``
channels) -> LayerNorm -> DW3x3 of dilation ``d_i`` in (1, 2, 5, 7); the four are concatenated
(``2D + 4`` channels) -> LayerNorm -> Conv1x1 to ``D``.

Norms: GroupNorm(4 groups, eps 1e-5), LayerNorm over channels (eps 1e-6), as the authors' code;
GELU is the exact (erf) one. LayerNorm and GELU are kseg layers (:class:`ChannelLayerNormalization`,
:class:`ExactGELU`): Keras' functions, written with ops that every ONNX exporter converts.
Convolutions start from the authors' He-normal fan-out initialisation with zero biases; the
parameter maps from ones.

``ModelOptions.base_filters`` must be a multiple of 4 (GroupNorm's 4 groups and the 4 channel
groups of GHPA and GAB); ``depth`` is ignored (the network has its fixed five down-samplings,
total stride 32); ``bn_momentum`` and ``batch_norm`` are unused (no BatchNorm).

Departures from the paper and the authors' code (``JCruan519/EGE-UNet``):

- Deep supervision is a training option (``--deep-supervision``,
  :mod:`kseg.models.deep_supervision`): the side heads ``side{k}_logits`` (k = 5..1, at stride
  2**k) feed the GABs as in the paper, and with it each also gets the run's loss, up-sampled to
  the input, weighted 0.1 at stride 32 up to 0.5 at stride 2 as in the authors' training (which
  uses BCE + Dice). Without it the loss reaches the side heads only through the bridges.
- Bilinear resizing (the parameter maps, the decoder's and GAB's 2x up-sampling, the last 2x) uses
  Keras' half-pixel centres (``align_corners=False``); the authors' code uses
  ``align_corners=True``. Equal where sizes match (the 8x8 maps at stride 32 of a 256 px input).
- The final 1x1 logit head (kseg's shared, float32, Glorot-initialised) runs after the last 2x
  up-sampling, at stride 1, not before it at stride 2: the same function, as bilinear
  interpolation commutes with a 1x1 convolution (its weights sum to 1, so the bias commutes too);
  it costs 3 x 8 x H x W/4 MACs more (0.39 M at 256 px).
- GHPA's one-dimensional branches (the authors' ``Conv1d`` on a (C/4, H) or (C/4, W) map) are
  the same convolutions written as 2-D ones on a (H, 1) or (1, W) map.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from kseg.models._common import bilinear_upsampling
from kseg.models.base import Decoder, Encoder, Features, ModelOptions
from kseg.models.light.layers import ChannelLayerNormalization, ExactGELU

#: The paper's base width: c = 8 * (1, 2, 3, 4, 6, 8).
PAPER_BASE_FILTERS = 8
WIDTH_MULTIPLIERS = (1, 2, 3, 4, 6, 8)
#: The fixed side of GHPA's learnable maps (the authors' ``x = y = 8``).
MAP_SIZE = 8
#: GAB's dilations, one per channel group.
GAB_DILATIONS = (1, 2, 5, 7)
GROUPS = 4
LAYER_NORM_EPSILON = 1e-6
GROUP_NORM_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="kseg")
class InterpolatedParameter(layers.Layer):
    """A learnable map of fixed size, bilinearly resized to the spatial size of its input.

    The weight ``M`` has shape ``(map_height, map_width, C)`` with ``C`` the input's channels. For
    an input of shape ``(B, H, W, C)`` the output is ``resize(M, (H', W'))[None]`` of shape
    ``(1, H', W', C)``, with ``H' = H`` if ``"h" in axes`` else 1 and ``W' = W`` if ``"w" in axes``
    else 1: bilinear with half-pixel centres, no antialiasing (``keras.ops.image.resize``), so a
    map resized to its own size is itself. The input's values are not read, only its shape: the
    output broadcasts against the input along the batch (and along an axis not in ``axes``).

    Args:
        map_size: (map_height, map_width), the weight's fixed spatial size; a side that does not
            follow the input (not in ``axes``) must be 1.
        axes: which input sides the map follows: "hw", "h" or "w".
        initializer: the weight's initializer (ones in EGE-UNet).

    Example:
    >>> tuple(InterpolatedParameter((8, 1), axes="h")(keras.ops.zeros((2, 16, 5, 3))).shape)
    (1, 16, 1, 3)
    """

    def __init__(self, map_size=(MAP_SIZE, MAP_SIZE), axes: str = "hw", initializer="ones", **kwargs):
        super().__init__(**kwargs)
        if axes not in ("hw", "h", "w"):
            raise ValueError(f"axes must be 'hw', 'h' or 'w'. Received: axes={axes!r}")
        map_size = tuple(int(side) for side in map_size)
        if len(map_size) != 2 or min(map_size) < 1:
            raise ValueError(f"map_size must be two positive sides. Received: map_size={map_size}")
        for side, axis in zip(map_size, "hw"):
            if axis not in axes and side != 1:
                raise ValueError(
                    f"A side the map does not follow must be 1. Received: map_size={map_size}, axes={axes!r}"
                )
        self.map_size = map_size
        self.axes = axes
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name} expects a static channel count. Received: input shape {input_shape}")
        self.map = self.add_weight(shape=(*self.map_size, channels), initializer=self.initializer, name="map")

    def _target_size(self, shape) -> tuple:
        height = shape[1] if "h" in self.axes else 1
        width = shape[2] if "w" in self.axes else 1
        return height, width

    def call(self, inputs):
        size = self._target_size(inputs.shape)
        if None in size:  # a dynamic side: read it at run time
            dynamic = ops.shape(inputs)
            size = self._target_size(dynamic)
        parameter = ops.expand_dims(ops.cast(self.map, self.compute_dtype), 0)
        if tuple(size) == self.map_size:
            return parameter
        return ops.image.resize(parameter, size, interpolation="bilinear", antialias=False)

    def compute_output_shape(self, input_shape):
        return (1, *self._target_size(input_shape), input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "map_size": list(self.map_size),
            "axes": self.axes,
            "initializer": keras.initializers.serialize(self.initializer),
        }


@keras.saving.register_keras_serializable(package="kseg")
class ChannelGroups(layers.Layer):
    """Splits the last axis into ``groups`` equal, consecutive parts (``torch.chunk``):
    part ``i`` is ``x[..., i * C / groups : (i + 1) * C / groups]``.

    Args:
        groups: how many parts; must divide the channel count.

    Example:
    >>> [tuple(part.shape) for part in ChannelGroups(2)(keras.ops.zeros((1, 2, 2, 6)))]
    [(1, 2, 2, 3), (1, 2, 2, 3)]
    """

    def __init__(self, groups: int = GROUPS, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(f"{self.name}: {channels} channels do not split into {self.groups} equal groups.")

    def call(self, inputs):
        return ops.split(inputs, self.groups, axis=-1)

    def compute_output_shape(self, input_shape):
        return [(*input_shape[:-1], input_shape[-1] // self.groups)] * self.groups

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="kseg")
class BroadcastMultiply(layers.Layer):
    """``x * gate`` for ``[x, gate]``, the gate broadcast against ``x`` (numpy's rules): the output
    has ``x``'s shape, its batch included. ``keras.layers.Multiply`` would give a (1, ...) gate's
    batch of 1 to the product's static shape, and so to the whole model's output.

    Example:
    >>> tuple(BroadcastMultiply()([keras.ops.ones((2, 4, 4, 3)), keras.ops.ones((1, 4, 1, 3))]).shape)
    (2, 4, 4, 3)
    """

    def build(self, input_shape):
        x_shape, gate_shape = input_shape
        if len(gate_shape) != len(x_shape) or any(
            g not in (1, x) and None not in (g, x) for g, x in zip(gate_shape, x_shape)
        ):
            raise ValueError(f"{self.name}: a gate of shape {gate_shape} does not broadcast to {x_shape}.")

    def call(self, inputs):
        x, gate = inputs
        return ops.multiply(x, gate)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


def widths(base_filters: int) -> tuple[int, ...]:
    """The six stages' widths, ``base_filters * (1, 2, 3, 4, 6, 8)``; raises unless
    ``base_filters`` is a positive multiple of 4."""
    if base_filters < GROUPS or base_filters % GROUPS:
        raise ValueError(
            f"EGE-UNet splits every width into {GROUPS} groups: base_filters must be a positive multiple of "
            f"{GROUPS} (the paper's is {PAPER_BASE_FILTERS}). Received: base_filters={base_filters}"
        )
    return tuple(base_filters * m for m in WIDTH_MULTIPLIERS)


def _he_fan_out(scale: float = 2.0) -> keras.initializers.Initializer:
    """The authors' initialisation, N(0, scale / fan_out), fan_out = kernel area x outputs / groups
    (a new instance per layer: an unseeded initializer object repeats its values)."""
    return keras.initializers.VarianceScaling(scale, mode="fan_out", distribution="untruncated_normal")


def _conv(filters: int, kernel_size, name: str, **kwargs) -> layers.Conv2D:
    return layers.Conv2D(filters, kernel_size, padding="same", kernel_initializer=_he_fan_out(), name=name, **kwargs)


def _depthwise(kernel_size, name: str, dilation_rate: int = 1, scale: float = 2.0) -> layers.DepthwiseConv2D:
    return layers.DepthwiseConv2D(
        kernel_size,
        padding="same",
        dilation_rate=dilation_rate,
        depthwise_initializer=_he_fan_out(scale),
        name=name,
    )


def _layer_norm(name: str) -> ChannelLayerNormalization:
    return ChannelLayerNormalization(epsilon=LAYER_NORM_EPSILON, name=name)


def _group_norm(name: str) -> layers.GroupNormalization:
    return layers.GroupNormalization(groups=GROUPS, epsilon=GROUP_NORM_EPSILON, name=name)


def _gelu(name: str) -> ExactGELU:
    return ExactGELU(name=name)


def _hadamard_branch(x, axes: str, name: str):
    """``x * Pw(GELU(DW(resize(M))))`` for the map ``M`` following ``axes`` of ``x``."""
    channels = x.shape[-1]
    map_size = {"hw": (MAP_SIZE, MAP_SIZE), "h": (MAP_SIZE, 1), "w": (1, MAP_SIZE)}[axes]
    kernel = {"hw": (3, 3), "h": (3, 1), "w": (1, 3)}[axes]
    # The authors' Conv1d starts from N(0, 2 / (3 C)): its fan-out is not divided by the groups.
    scale = 2.0 if axes == "hw" else 2.0 / channels
    gate = InterpolatedParameter(map_size, axes=axes, name=f"{name}_map")(x)
    gate = _depthwise(kernel, f"{name}_dw", scale=scale)(gate)
    gate = _gelu(f"{name}_gelu")(gate)
    gate = _conv(channels, 1, f"{name}_pw")(gate)
    return BroadcastMultiply(name=f"{name}_mul")([x, gate])


def ghpa(x, filters: int, name: str):
    """Group multi-axis Hadamard Product Attention from ``x`` (C channels, C % 4 == 0) to
    ``filters`` channels, at ``x``'s resolution (the module docstring gives the formula)."""
    channels = x.shape[-1]
    x = _layer_norm(f"{name}_norm_in")(x)
    x_xy, x_zx, x_zy, x_dw = ChannelGroups(GROUPS, name=f"{name}_split")(x)
    x_xy = _hadamard_branch(x_xy, "hw", f"{name}_xy")
    x_zx = _hadamard_branch(x_zx, "h", f"{name}_zx")
    x_zy = _hadamard_branch(x_zy, "w", f"{name}_zy")
    x_dw = _conv(channels // GROUPS, 1, f"{name}_dw_pw")(x_dw)
    x_dw = _gelu(f"{name}_dw_gelu")(x_dw)
    x_dw = _depthwise(3, f"{name}_dw_dw")(x_dw)
    x = layers.Concatenate(name=f"{name}_concat")([x_xy, x_zx, x_zy, x_dw])
    x = _layer_norm(f"{name}_norm_out")(x)
    x = _depthwise(3, f"{name}_out_dw")(x)
    x = _gelu(f"{name}_out_gelu")(x)
    return _conv(filters, 1, f"{name}_out_pw")(x)


def gab(high, low, mask, name: str):
    """Group Aggregation Bridge of the deeper map ``high``, the skip ``low`` (D channels,
    D % 4 == 0) and the side logits ``mask``, at ``low``'s resolution, to D channels."""
    channels = low.shape[-1]
    high = _conv(channels, 1, f"{name}_project")(high)
    factor = low.shape[1] // high.shape[1]
    if factor != 1:
        high = bilinear_upsampling(factor, f"{name}_up")(high)
    high_groups = ChannelGroups(GROUPS, name=f"{name}_split_high")(high)
    low_groups = ChannelGroups(GROUPS, name=f"{name}_split_low")(low)
    fused = []
    for i, (high_i, low_i, dilation) in enumerate(zip(high_groups, low_groups, GAB_DILATIONS)):
        group = layers.Concatenate(name=f"{name}_group{i}_concat")([high_i, low_i, mask])
        group = _layer_norm(f"{name}_group{i}_norm")(group)
        fused.append(_depthwise(3, f"{name}_group{i}_dw", dilation_rate=dilation)(group))
    x = layers.Concatenate(name=f"{name}_concat")(fused)
    x = _layer_norm(f"{name}_norm")(x)
    return _conv(channels, 1, f"{name}_pw")(x)


def _encoder(image, options: ModelOptions) -> Features:
    width = widths(options.base_filters)
    x, pyramid, extra = image, {}, {}
    for stage in range(1, 7):
        name = f"enc{stage}"
        if stage <= 3:
            x = _conv(width[stage - 1], 3, f"{name}_conv")(x)
        else:
            x = ghpa(x, width[stage - 1], name)
        if stage < 6:
            x = _group_norm(f"{name}_norm")(x)
            x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
        x = _gelu(f"{name}_gelu")(x)
        if stage < 5:
            pyramid[f"P{stage}"] = x
        elif stage == 5:
            extra["stage5"] = x  # stride 32, as the deepest: the pyramid holds that one (P5)
    pyramid["P5"] = x
    return Features(pyramid, extra=extra)


def _decoder(features: Features, options: ModelOptions):
    width = widths(options.base_filters)
    deepest = features.level(5)
    x = ghpa(deepest, width[4], "dec5")
    x = _group_norm("dec5_norm")(x)
    x = _gelu("dec5_gelu")(x)
    side = _conv(1, 1, "side5_logits")(x)
    bridge = gab(deepest, features.extra["stage5"], side, "gab5")
    x = layers.Add(name="dec5_add")([x, bridge])
    for level in (4, 3, 2, 1):
        name = f"dec{level}"
        if level >= 3:
            x = ghpa(x, width[level - 1], name)
        else:
            x = _conv(width[level - 1], 3, f"{name}_conv")(x)
        x = _group_norm(f"{name}_norm")(x)
        x = bilinear_upsampling(2, f"{name}_up")(x)
        x = _gelu(f"{name}_gelu")(x)
        side = _conv(1, 1, f"side{level}_logits")(x)
        bridge = gab(bridge, features.level(level), side, f"gab{level}")
        x = layers.Add(name=f"{name}_add")([x, bridge])
    return bilinear_upsampling(2, "dec0_up")(x)


def _stride(options: ModelOptions) -> int:
    return 32


ENCODERS = [Encoder("egeunet", _encoder, _stride, "kseg")]
DECODERS = [
    Decoder(
        "egeunet",
        _decoder,
        "egeunet",
        "EGE-UNet (MICCAI 2023): GHPA stages, group aggregation bridges fed by side masks",
        encoders=("egeunet",),
        side_outputs=lambda model: {f"side{k}": model.get_layer(f"side{k}_logits").output for k in range(5, 0, -1)},
        # The authors' weights, stride 32 to stride 2; the final output weighs 1.
        side_weights=(0.1, 0.2, 0.3, 0.4, 0.5),
    )
]

__all__ = [
    "ENCODERS",
    "DECODERS",
    "InterpolatedParameter",
    "ChannelGroups",
    "BroadcastMultiply",
    "ChannelLayerNormalization",
    "ExactGELU",
    "ghpa",
    "gab",
    "widths",
]
