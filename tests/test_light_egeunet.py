"""EGE-UNet (kseg.models.light.egeunet): its size and cost against the paper's table, its shapes,
and its blocks (GHPA, GAB and the layers they are made of) against numpy written from the
formulas, with the layers' own weights. Building, saving, a training step and the move between
backends are test_model_family's (it picks the network up from the registries)."""

import math

import keras
import numpy as np
import pytest

from kseg import models
from kseg.models import cost
from kseg.models.base import ModelOptions
from kseg.models.light import egeunet
from kseg.models.light.egeunet import (
    BroadcastMultiply,
    ChannelGroups,
    ChannelLayerNormalization,
    ExactGELU,
    InterpolatedParameter,
)
from tests.harness import assert_config_round_trip, assert_layer_round_trip

# The paper's Table (input 256x256x3, c = 8, 16, 24, 32, 48, 64, bridge and GAB on): thop's counts.
PAPER_PARAMETERS = 0.053e6
PAPER_GMACS = 0.072


@pytest.mark.backend_independent  # static shapes
def test_size_and_cost_at_the_paper_s_settings_are_the_paper_s():
    """53,374 parameters (paper 0.053 M) and 72,489,472 MACs (paper 0.072 "GFLOPs", thop's MACs).
    thop counts convolutions only here (GroupNorm, the authors' own LayerNorm, GELU and
    F.interpolate have no thop rule), as kseg.models.cost does; the 0.5 M left over is mostly the
    logit head, which kseg runs at stride 1 (0.52 M) and the authors at stride 2 (0.13 M)."""
    model = models.build("egeunet", (256, 256, 3), base_filters=egeunet.PAPER_BASE_FILTERS)
    parameters = cost.trainable_parameter_count(model)
    gmacs = cost.forward_macs(model) / 1e9
    assert parameters == pytest.approx(PAPER_PARAMETERS, rel=0.1), parameters
    assert gmacs == pytest.approx(PAPER_GMACS, rel=0.1), gmacs
    assert cost.parameter_count(model) == parameters  # no BatchNorm: nothing untrainable


@pytest.mark.backend_independent  # symbolic shapes
@pytest.mark.parametrize("size", [64, 32])
def test_output_side_heads_and_pyramid_have_their_strides(size):
    model = models.build("egeunet", (size, size, 3), base_filters=8)
    assert model.output.shape == (None, size, size, 1)
    for k in range(1, 6):
        side = model.get_layer(f"side{k}_logits").output
        assert tuple(side.shape) == (None, size // 2**k, size // 2**k, 1)
    features = egeunet.ENCODERS[0].build(keras.Input((size, size, 3)), ModelOptions(base_filters=8))
    assert features.levels == [1, 2, 3, 4, 5]
    channels = {k: features.level(k).shape[-1] for k in features.levels}
    assert channels == {1: 8, 2: 16, 3: 24, 4: 32, 5: 64}
    assert features.level(5).shape[1] == size // 32
    # stage 5 shares stride 32 with the deepest stage, so it travels beside the pyramid
    assert tuple(features.extra["stage5"].shape) == (None, size // 32, size // 32, 48)


@pytest.mark.backend_independent
@pytest.mark.parametrize("base_filters", [2, 6])
def test_widths_must_split_into_four_groups(base_filters):
    with pytest.raises(ValueError, match="multiple of 4"):
        models.build("egeunet", (32, 32, 3), base_filters=base_filters)


# ---- numpy references ---------------------------------------------------------------------------


def _resize_np(image, size):
    """Bilinear resize of (H, W, C) with half-pixel centres and no antialiasing, edges clamped."""

    def weights(n_in, n_out):
        matrix = np.zeros((n_out, n_in))
        for i in range(n_out):
            source = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
            low = int(math.floor(source))
            high = min(low + 1, n_in - 1)
            matrix[i, low] += 1 - (source - low)
            matrix[i, high] += source - low
        return matrix

    rows, cols = weights(image.shape[0], size[0]), weights(image.shape[1], size[1])
    return np.einsum("ih,jw,hwc->ijc", rows, cols, image)


def _gelu_np(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _layer_norm_np(x, gamma, beta, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * gamma + beta


def _depthwise_np(x, kernel, bias, dilation=1):
    """'same' depthwise convolution of (..., H, W, C) by a (kh, kw, C, 1) kernel."""
    kh, kw = kernel.shape[:2]
    ph, pw = (kh - 1) * dilation // 2, (kw - 1) * dilation // 2
    height, width = x.shape[-3:-1]
    pad = [(0, 0)] * (x.ndim - 3) + [(ph, ph), (pw, pw), (0, 0)]
    padded = np.pad(x, pad)
    out = np.zeros_like(x) + bias
    for i in range(kh):
        for j in range(kw):
            window = padded[..., i * dilation : i * dilation + height, j * dilation : j * dilation + width, :]
            out = out + window * kernel[i, j, :, 0]
    return out


def _pointwise_np(x, kernel, bias):
    return x @ kernel[0, 0] + bias


def _weights(model, name):
    return model.get_layer(name).get_weights()


def _randomise(model, seed):
    """Every weight random: the parameter maps and norms far from their ones and zeros."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([rng.normal(0.0, 0.7, w.shape).astype("float32") for w in layer.get_weights()])


def _ghpa_np(model, x, name):
    """GHPA from the paper's formula, with ``model``'s weights of the block called ``name``."""
    w = lambda suffix: _weights(model, f"{name}_{suffix}")  # noqa: E731
    height, width = x.shape[1:3]
    x = _layer_norm_np(x, *w("norm_in"))
    x_xy, x_zx, x_zy, x_dw = np.split(x, 4, axis=-1)
    outputs = []
    for part, axis, size in ((x_xy, "xy", (height, width)), (x_zx, "zx", (height, 1)), (x_zy, "zy", (1, width))):
        (parameter,) = w(f"{axis}_map")
        gate = _resize_np(parameter, size)
        gate = _gelu_np(_depthwise_np(gate, *w(f"{axis}_dw")))
        outputs.append(part * _pointwise_np(gate, *w(f"{axis}_pw"))[None])
    outputs.append(_depthwise_np(_gelu_np(_pointwise_np(x_dw, *w("dw_pw"))), *w("dw_dw")))
    x = _layer_norm_np(np.concatenate(outputs, axis=-1), *w("norm_out"))
    return _pointwise_np(_gelu_np(_depthwise_np(x, *w("out_dw"))), *w("out_pw"))


def _gab_np(model, high, low, mask, name):
    w = lambda suffix: _weights(model, f"{name}_{suffix}")  # noqa: E731
    high = _pointwise_np(high, *w("project"))
    high = np.stack([_resize_np(image, low.shape[1:3]) for image in high])
    groups = []
    for i, (high_i, low_i, dilation) in enumerate(zip(np.split(high, 4, -1), np.split(low, 4, -1), (1, 2, 5, 7))):
        group = _layer_norm_np(np.concatenate([high_i, low_i, mask], axis=-1), *w(f"group{i}_norm"))
        groups.append(_depthwise_np(group, *w(f"group{i}_dw"), dilation=dilation))
    x = _layer_norm_np(np.concatenate(groups, axis=-1), *w("norm"))
    return _pointwise_np(x, *w("pw"))


def _numpy(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


# ---- the layers and blocks against them ---------------------------------------------------------


@pytest.mark.parametrize(
    "map_size, axes, input_size",
    [
        ((8, 8), "hw", (16, 4)),  # up along H, down along W (a 64 x 16 input's stride 4)
        ((8, 8), "hw", (8, 8)),  # its own size: the map itself
        ((8, 8), "hw", (1, 1)),  # stride 32 of a 32 px input
        ((8, 1), "h", (12, 5)),
        ((1, 8), "w", (3, 20)),
    ],
)
def test_interpolated_parameter_is_numpy_s_bilinear_resize_of_its_map(map_size, axes, input_size):
    layer = InterpolatedParameter(map_size, axes=axes)
    x = np.zeros((2, *input_size, 3), "float32")
    layer(x)
    parameter = np.random.default_rng(0).normal(size=(*map_size, 3)).astype("float32")
    layer.set_weights([parameter])
    got = _numpy(layer(x))
    size = (input_size[0] if "h" in axes else 1, input_size[1] if "w" in axes else 1)
    assert got.shape == (1, *size, 3) and layer.compute_output_shape(x.shape) == got.shape
    np.testing.assert_allclose(got[0], _resize_np(parameter, size), atol=1e-5)


def test_interpolated_parameter_starts_at_ones_saves_and_follows_the_dtype_policy(tmp_path):
    layer = InterpolatedParameter((8, 8))
    np.testing.assert_array_equal(_numpy(layer(np.zeros((1, 4, 4, 2), "float32"))), 1.0)
    assert_layer_round_trip(
        lambda: InterpolatedParameter((8, 1), axes="h"), np.zeros((2, 6, 3, 4), "float32"), tmp_path
    )


def test_interpolated_parameter_refuses_a_fixed_side_it_would_not_follow():
    with pytest.raises(ValueError, match="must be 1"):
        InterpolatedParameter((8, 8), axes="h")


def test_channel_groups_and_broadcast_multiply():
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 8)).astype("float32")
    parts = ChannelGroups(4)(x)
    for got, expected in zip(parts, np.split(x, 4, axis=-1)):
        np.testing.assert_array_equal(_numpy(got), expected)
    gate = np.random.default_rng(2).normal(size=(1, 3, 1, 8)).astype("float32")
    np.testing.assert_allclose(_numpy(BroadcastMultiply()([x, gate])), x * gate, rtol=1e-6)
    symbolic = BroadcastMultiply()([keras.Input((3, 4, 8)), keras.Input((3, 1, 8), batch_size=1)])
    assert tuple(symbolic.shape) == (None, 3, 4, 8)  # keras' Multiply would say batch 1
    for layer in (ChannelGroups(4), BroadcastMultiply()):
        assert_config_round_trip(layer)
    with pytest.raises(ValueError, match="equal groups"):
        ChannelGroups(4)(np.zeros((1, 2, 2, 6), "float32"))


def test_channel_layer_normalization_is_numpy_s_and_keras_layer_norm(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.normal(3.0, 2.0, size=(2, 3, 4, 6)).astype("float32")
    gamma, beta = rng.normal(size=6).astype("float32"), rng.normal(size=6).astype("float32")
    layer, reference = ChannelLayerNormalization(epsilon=1e-6), keras.layers.LayerNormalization(epsilon=1e-6)
    for each in (layer, reference):
        each(x)
        each.set_weights([gamma, beta])
    got = _numpy(layer(x))
    np.testing.assert_allclose(got, _layer_norm_np(x.astype("float64"), gamma, beta), atol=1e-5)
    np.testing.assert_allclose(got, _numpy(reference(x)), atol=1e-5)
    assert_layer_round_trip(lambda: ChannelLayerNormalization(epsilon=1e-6), x, tmp_path, atol=1e-6)
    with pytest.raises(ValueError, match="last axis"):
        ChannelLayerNormalization(axis=1)


def test_exact_gelu_is_the_erf_gelu(tmp_path):
    x = np.linspace(-6, 6, 97, dtype="float32").reshape(1, 97, 1, 1)
    got = _numpy(ExactGELU()(x))
    np.testing.assert_allclose(got, _gelu_np(x.astype("float64")), atol=1e-6)
    np.testing.assert_allclose(got, _numpy(keras.activations.gelu(x, approximate=False)), atol=1e-6)
    assert_layer_round_trip(ExactGELU, x, tmp_path)


def test_ghpa_is_its_formula_in_numpy():
    """The three Hadamard-product branches (a map over H x W, one over H broadcast along W, one
    over W broadcast along H), the depthwise branch and the output projection, on a non-square
    input so that an H/W mix-up shows."""
    inputs = keras.Input((16, 6, 8))
    model = keras.Model(inputs, egeunet.ghpa(inputs, 12, "t"))
    _randomise(model, seed=3)
    x = np.random.default_rng(4).normal(size=(2, 16, 6, 8)).astype("float32")
    got = _numpy(model(x))
    assert got.shape == (2, 16, 6, 12)
    np.testing.assert_allclose(got, _ghpa_np(model, x.astype("float64"), "t"), atol=2e-4, rtol=1e-4)


def test_gab_is_its_formula_in_numpy():
    """Group aggregation bridge: the deeper map projected and up-sampled, four groups (each with
    the side mask) through dilations 1, 2, 5, 7, the fusion."""
    high, low, mask = keras.Input((8, 6, 12)), keras.Input((16, 12, 8)), keras.Input((16, 12, 1))
    model = keras.Model([high, low, mask], egeunet.gab(high, low, mask, "t"))
    _randomise(model, seed=5)
    rng = np.random.default_rng(6)
    arrays = [rng.normal(size=(2, *t.shape[1:])).astype("float32") for t in (high, low, mask)]
    got = _numpy(model(arrays))
    assert got.shape == (2, 16, 12, 8)
    expected = _gab_np(model, *(a.astype("float64") for a in arrays), "t")
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-4)
