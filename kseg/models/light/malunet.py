"""MALUNet (Ruan, Xiang, Xie, Liu and Fu, "MALUNet: A Multi-Attention and Light-weight UNet for
Skin Lesion Segmentation", IEEE BIBM 2022): a six-stage U-shape of widths
``(c_1, ..., c_6) = base_filters * (1, 2, 3, 4, 6, 8)`` whose three deeper stages are attention modules, and a
bridge of spatial then channel attention over the five skip connections.

    encoder (stride of each output)
      enc1..enc3: Conv3x3(c_k) -> GN -> MaxPool 2 -> GELU                  t1, t2, t3  (2, 4, 8)
      enc4, enc5: IEA(c_{k-1}) -> DGA(c_k) -> GN -> MaxPool 2 -> GELU      t4, t5      (16, 32)
      enc6:       IEA(c_5) -> DGA(c_6) -> GELU                             (32)
    bridge (SC_Att): s_i = SAB_i * t_i;  u_i = s_i + t_i;  b_i = CAB_i * u_i + s_i     i = 1..5
    decoder
      dec5:       DGA(c_5) -> IEA(c_5) -> GN -> GELU            + b5        (32)
      dec4, dec3: DGA(c_k) -> IEA(c_k) -> GN -> Up 2 -> GELU    + b4, b3    (16, 8)
      dec2, dec1: Conv3x3(c_k) -> GN -> Up 2 -> GELU            + b2, b1    (4, 2)
      Up 2 to stride 1; kseg's shared 1x1 logit head follows

    DGA(x -> c_out), Dilated Gated Attention: the channels in four quarters, each a depthwise
        3x3 convolution of dilation 7, 5, 2, 1; concatenated -> GN -> Conv1x1 -> GELU; then the
        gated attention unit GAU(y) = GELU(DW3(sigmoid(DW3(y)) * GELU(DW5(y)))) + Conv1x1(y),
        where DW_k is a depthwise k x k convolution -> GN -> Conv1x1 (the last one to c_out).
    IEA(x), Inverted External Attention: y = Conv1x1(x); memory units M_k (C -> 4C) and
        M_v (4C -> C) without bias, the attention map normalised twice (``DoubleNormalization``);
        out = GELU(GN(Conv1x1(M_v(DoubleNorm(M_k(y))))) + x), the last convolution without bias.
    SAB, Spatial Attention Bridge: sigmoid(Conv7x7 dilation 3 ([mean_c t, max_c t])), one
        convolution (2 -> 1 channels) shared by the five levels.
    CAB, Channel Attention Bridge: the five levels' global average pools concatenated (sum(c_1..5)
        values), a 1D convolution of kernel 3 without bias along them, then for each level a
        Dense(c_i) -> sigmoid.

GN is GroupNormalization of 4 groups, GELU the exact one (erf), Up bilinear. At the paper's
settings, ``base_filters=8`` (``PAPER_BASE``), the widths are [8, 16, 24, 32, 48, 64]:
177,943 parameters (the authors' PyTorch model's count) and 0.0831 G multiply-accumulates per
256 x 256 image as ``kseg.models.cost`` counts them (the paper: 0.177 M and 0.083 "GFLOPs",
thop's MACs). The widths divide into four groups, so ``base_filters`` must be a multiple of 4
(kseg's default 64 gives widths 64..512: pass ``base_filters=8`` for the paper's network);
``depth`` is ignored (the network has its fixed five down-samplings, total stride 32).

The pyramid is P1..P5 with t1..t4 and enc6's output as P5; t5, at stride 32 too, is
``Features.extra["enc5"]``. The bridge runs in the decoder, which takes the encoder's raw maps.

Checked against the authors' code (github.com/JCruan519/MALUNet, ``models/malunet.py``, split_att
'fc', bridge on), from which kseg departs in:

- the output: logits, not the sigmoid of them (kseg's losses take logits);
- the final 1x1 convolution runs after the last 2x up-sampling, not before: the same function for
  a linear map and bilinear weights that sum to 1, at 4x its multiply-accumulates (0.5 M instead of
  0.13 M at 256 px);
- bilinear up-sampling with half-pixel centres (Keras's ``UpSampling2D``, what ONNX Resize and
  every kseg decoder use), where the authors' code aligns corners (``align_corners=True``);
- IEA's M_v starts as the transpose of M_k, as in the code, but is a weight of its own: the code
  points both at one tensor's storage, so its optimiser moves them together;
- GELU is ``0.5 x (1 + erf(x / sqrt 2))`` in a layer of its own
  (:class:`kseg.models.light.layers.ExactGELU`), the same function as torch's and Keras's exact
  GELU, because tf2onnx cannot convert the Erfc of TensorFlow's.

Initialisation follows the code: convolutions (IEA's memory units and CAB's 1D convolution, Conv1d
there, too) normal(0, sqrt(2 / fan_out)) with zero bias; CAB's Dense layers truncated
normal(0.02) with zero bias (Keras truncates at 2 standard deviations; timm's bounds of +-2 leave
it untruncated in effect); GroupNorm ones and zeros.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from kseg.models._common import bilinear_upsampling
from kseg.models.base import Decoder, Encoder, Features, ModelOptions
from kseg.models.light.layers import ExactGELU

PAPER_BASE = 8
WIDTH_MULTIPLIERS = (1, 2, 3, 4, 6, 8)
DILATIONS = (7, 5, 2, 1)  # DGA's four quarters
GROUPS = 4  # GroupNorm's groups, and DGA's quarters
MEMORY_EXPANSION = 4  # IEA's memory units: 4x the channels ("inverted")
EPSILON = 1e-5  # GroupNorm's, torch's default

# torch's normal(0, sqrt(2 / fan_out)); Keras's fan_out of a (depthwise) kernel is torch's over groups.
_CONV_INIT = {"kernel_initializer": keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")}


def _depthwise_init() -> dict:
    return {"depthwise_initializer": _CONV_INIT["kernel_initializer"]}


@keras.saving.register_keras_serializable(package="kseg")
class ChannelSplit(layers.Layer):
    """Splits the last axis into ``num_splits`` equal, consecutive parts (torch.chunk on channels).

    ``outputs[i] = x[..., i * C / n : (i + 1) * C / n]`` for ``C`` channels and ``n = num_splits``.

    Args:
        num_splits: how many parts; must divide the channels.

    Example:
    >>> [tuple(p.shape) for p in ChannelSplit(2)(keras.ops.ones((1, 2, 2, 6)))]
    [(1, 2, 2, 3), (1, 2, 2, 3)]
    """

    def __init__(self, num_splits: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.num_splits = int(num_splits)

    def build(self, input_shape):
        if input_shape[-1] is None or input_shape[-1] % self.num_splits:
            raise ValueError(
                f"{self.name}: the channels must divide into {self.num_splits} parts. "
                f"Received: input shape {input_shape}"
            )

    def call(self, inputs):
        return ops.split(inputs, self.num_splits, axis=-1)

    def compute_output_shape(self, input_shape):
        return [(*input_shape[:-1], input_shape[-1] // self.num_splits)] * self.num_splits

    def compute_output_spec(self, inputs):
        shape = self.compute_output_shape(inputs.shape)[0]
        return [keras.KerasTensor(shape, dtype=self.compute_dtype) for _ in range(self.num_splits)]

    def get_config(self):
        return {**super().get_config(), "num_splits": self.num_splits}


@keras.saving.register_keras_serializable(package="kseg")
class DoubleNormalization(layers.Layer):
    """External attention's double normalisation (Guo et al., 2021) of an attention map
    ``a`` of shape (B, H, W, K), K memory units:

        s[b, n, k] = exp(a[b, n, k]) / sum_n' exp(a[b, n', k])      (softmax over the H W positions)
        y[b, n, k] = s[b, n, k] / (epsilon + sum_k' s[b, n, k'])     (L1 over the memory units)

    Computed in float32 whatever the policy, the output cast to the compute dtype. No weights.

    Args:
        epsilon: added to the L1 denominator (1e-9, as in the reference code).

    Example:
    >>> y = keras.ops.convert_to_numpy(DoubleNormalization()(keras.ops.zeros((1, 2, 2, 3))))
    >>> float(y.sum(axis=-1).max())  # doctest: +ELLIPSIS
    0.99...
    """

    def __init__(self, epsilon: float = 1e-9, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        _, height, width, units = inputs.shape
        x = ops.reshape(ops.cast(inputs, "float32"), (-1, height * width, units))
        # The softmax written out: over a single position (a 32 px input at stride 32) it is 1, which
        # ops.softmax warns of, and a shortcut to ones would leave M_k without a gradient (zero here).
        x = ops.exp(x - ops.stop_gradient(ops.max(x, axis=1, keepdims=True)))
        x = x / ops.sum(x, axis=1, keepdims=True)
        x = x / (self.epsilon + ops.sum(x, axis=-1, keepdims=True))
        return ops.cast(ops.reshape(x, (-1, height, width, units)), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="kseg")
class ChannelMeanMax(layers.Layer):
    """The mean and the maximum over the channels, stacked: (B, H, W, C) -> (B, H, W, 2) with
    ``y[..., 0] = mean_c x[..., c]`` and ``y[..., 1] = max_c x[..., c]`` (SAB's input). No weights.

    Example:
    >>> ChannelMeanMax()(keras.ops.ones((1, 4, 4, 5))).shape
    (1, 4, 4, 2)
    """

    def call(self, inputs):
        return ops.concatenate(
            [ops.mean(inputs, axis=-1, keepdims=True), ops.max(inputs, axis=-1, keepdims=True)], axis=-1
        )

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2)


def widths(base_filters: int) -> list[int]:
    """The six stages' widths, ``base_filters * (1, 2, 3, 4, 6, 8)``; [8, 16, 24, 32, 48, 64] at the
    paper's ``base_filters=8``."""
    if base_filters < GROUPS or base_filters % GROUPS:
        raise ValueError(
            f"MALUNet's widths split into {GROUPS} groups: base_filters must be a multiple of {GROUPS} "
            f"(the paper's is {PAPER_BASE}). Received: base_filters={base_filters}"
        )
    return [base_filters * m for m in WIDTH_MULTIPLIERS]


def _group_norm(x, name: str):
    return layers.GroupNormalization(GROUPS, epsilon=EPSILON, name=name)(x)


def _gelu(x, name: str):
    return ExactGELU(name=name)(x)


def _conv3x3_stage(x, filters: int, name: str):
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv", **_CONV_INIT)(x)
    return _group_norm(x, f"{name}_gn")


def _depthwise_separable(x, filters: int, kernel_size: int, name: str):
    """Depthwise k x k convolution -> GN -> Conv1x1(filters): GAU's DW_k."""
    x = layers.DepthwiseConv2D(kernel_size, padding="same", name=f"{name}_dw", **_depthwise_init())(x)
    x = _group_norm(x, f"{name}_gn")
    return layers.Conv2D(filters, 1, name=f"{name}_pw", **_CONV_INIT)(x)


def gated_attention_unit(x, filters: int, name: str):
    """GAU(x) = GELU(DW3(sigmoid(DW3(x)) * GELU(DW5(x)))) + Conv1x1(x), to ``filters`` channels."""
    channels = x.shape[-1]
    gate = layers.Activation("sigmoid", name=f"{name}_gate_sigmoid")(
        _depthwise_separable(x, channels, 3, f"{name}_gate")
    )
    value = _gelu(_depthwise_separable(x, channels, 5, f"{name}_value"), f"{name}_value_gelu")
    y = layers.Multiply(name=f"{name}_gated")([gate, value])
    y = _gelu(_depthwise_separable(y, filters, 3, f"{name}_out"), f"{name}_out_gelu")
    shortcut = layers.Conv2D(filters, 1, name=f"{name}_shortcut", **_CONV_INIT)(x)
    return layers.Add(name=f"{name}_add")([y, shortcut])


def dilated_gated_attention(x, filters: int, name: str):
    """DGA: each channel quarter through a depthwise 3x3 of dilation 7, 5, 2, 1; concatenated -> GN
    -> Conv1x1 -> GELU; then the GAU to ``filters`` channels."""
    channels = x.shape[-1]
    quarters = ChannelSplit(GROUPS, name=f"{name}_split")(x)
    quarters = [
        layers.DepthwiseConv2D(3, dilation_rate=d, padding="same", name=f"{name}_dw_d{d}", **_depthwise_init())(q)
        for q, d in zip(quarters, DILATIONS)
    ]
    y = layers.Concatenate(name=f"{name}_concat")(quarters)
    y = layers.Conv2D(channels, 1, name=f"{name}_conv", **_CONV_INIT)(_group_norm(y, f"{name}_gn"))
    y = _gelu(y, f"{name}_gelu")
    return gated_attention_unit(y, filters, f"{name}_gau")


def inverted_external_attention(x, name: str):
    """IEA: GELU(GN(Conv1x1(M_v(DoubleNorm(M_k(Conv1x1(x)))))) + x), memory units of 4C."""
    channels = x.shape[-1]
    y = layers.Conv2D(channels, 1, name=f"{name}_conv_in", **_CONV_INIT)(x)
    memory_key = layers.Dense(MEMORY_EXPANSION * channels, use_bias=False, name=f"{name}_memory_key", **_CONV_INIT)
    memory_value = layers.Dense(channels, use_bias=False, name=f"{name}_memory_value")
    y = memory_value(DoubleNormalization(name=f"{name}_double_norm")(memory_key(y)))
    # The code's M_v starts as M_k transposed (it shares M_k's storage there; here it is its own weight).
    memory_value.kernel.assign(ops.transpose(memory_key.kernel))
    y = layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_conv_out", **_CONV_INIT)(y)
    y = layers.Add(name=f"{name}_add")([_group_norm(y, f"{name}_gn"), x])
    return _gelu(y, f"{name}_gelu")


def spatial_attention_bridge(maps: list, name: str) -> list:
    """SAB: for each map sigmoid(Conv7x7, dilation 3, ([mean_c, max_c])), one convolution shared."""
    conv = layers.Conv2D(1, 7, dilation_rate=3, padding="same", activation="sigmoid", name=f"{name}_conv", **_CONV_INIT)
    return [conv(ChannelMeanMax(name=f"{name}_pool{i}")(t)) for i, t in enumerate(maps, start=1)]


def channel_attention_bridge(maps: list, name: str) -> list:
    """CAB: the maps' global average pools concatenated, a 1D convolution (kernel 3, no bias) along
    them, then for each map Dense(its channels) -> sigmoid, as a (B, 1, 1, C_i) map."""
    pooled = [layers.GlobalAveragePooling2D(name=f"{name}_pool{i}")(t) for i, t in enumerate(maps, start=1)]
    total = sum(t.shape[-1] for t in maps)
    y = layers.Reshape((total, 1), name=f"{name}_to_sequence")(layers.Concatenate(name=f"{name}_concat")(pooled))
    y = layers.Conv1D(1, 3, padding="same", use_bias=False, name=f"{name}_conv1d", **_CONV_INIT)(y)
    y = layers.Reshape((total,), name=f"{name}_to_vector")(y)
    attention = []
    for i, t in enumerate(maps, start=1):
        channels = t.shape[-1]
        a = layers.Dense(
            channels,
            activation="sigmoid",
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name=f"{name}_fc{i}",
        )(y)
        attention.append(layers.Reshape((1, 1, channels), name=f"{name}_att{i}")(a))
    return attention


def sc_attention_bridge(maps: list, name: str = "bridge") -> list:
    """The bridge: s_i = SAB_i * t_i, u_i = s_i + t_i, out_i = CAB_i(u) * u_i + s_i."""
    spatial = spatial_attention_bridge(maps, f"{name}_sab")
    s = [layers.Multiply(name=f"{name}_sab_mul{i}")([a, t]) for i, (a, t) in enumerate(zip(spatial, maps), start=1)]
    u = [layers.Add(name=f"{name}_sab_add{i}")([si, t]) for i, (si, t) in enumerate(zip(s, maps), start=1)]
    channel = channel_attention_bridge(u, f"{name}_cab")
    out = []
    for i, (a, ui, si) in enumerate(zip(channel, u, s), start=1):
        y = layers.Multiply(name=f"{name}_cab_mul{i}")([a, ui])
        out.append(layers.Add(name=f"{name}_out{i}")([y, si]))
    return out


def _encoder(image, options: ModelOptions) -> Features:
    c = widths(options.base_filters)
    x, skips = image, []
    for stage in range(1, 6):
        name = f"enc{stage}"
        if stage <= 3:
            x = _conv3x3_stage(x, c[stage - 1], name)
        else:
            x = inverted_external_attention(x, f"{name}_iea")
            x = _group_norm(dilated_gated_attention(x, c[stage - 1], f"{name}_dga"), f"{name}_gn")
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
        x = _gelu(x, f"{name}_gelu")
        skips.append(x)
    y = inverted_external_attention(x, "enc6_iea")
    y = _gelu(dilated_gated_attention(y, c[5], "enc6_dga"), "enc6_gelu")
    pyramid = {f"P{k}": t for k, t in enumerate(skips[:4], start=1)}
    pyramid["P5"] = y
    return Features(pyramid, extra={"enc5": x})


def _decoder(features: Features, options: ModelOptions):
    c = widths(options.base_filters)
    skips = [features.level(k) for k in range(1, 5)] + [features.extra["enc5"]]
    bridged = sc_attention_bridge(skips)
    x = features.level(5)
    for level in range(5, 0, -1):  # level k: output at stride 2**k, width c[k - 1]
        name = f"dec{level}"
        if level >= 3:
            x = dilated_gated_attention(x, c[level - 1], f"{name}_dga")
            x = _group_norm(inverted_external_attention(x, f"{name}_iea"), f"{name}_gn")
        else:
            x = _conv3x3_stage(x, c[level - 1], name)
        if level < 5:
            x = bilinear_upsampling(2, f"{name}_up")(x)
        x = _gelu(x, f"{name}_gelu")
        x = layers.Add(name=f"{name}_skip")([x, bridged[level - 1]])
    return bilinear_upsampling(2, "dec0_up")(x)


ENCODERS = [Encoder("malunet", _encoder, lambda options: 32, "kseg")]
DECODERS = [
    Decoder(
        "malunet",
        _decoder,
        "malunet",
        "MALUNet (BIBM 2022): DGA and IEA stages, spatial + channel attention bridge, bilinear up-sampling",
        encoders=("malunet",),
    )
]

__all__ = [
    "PAPER_BASE",
    "ENCODERS",
    "DECODERS",
    "ChannelSplit",
    "DoubleNormalization",
    "ChannelMeanMax",
    "widths",
    "dilated_gated_attention",
    "gated_attention_unit",
    "inverted_external_attention",
    "spatial_attention_bridge",
    "channel_attention_bridge",
    "sc_attention_bridge",
]
