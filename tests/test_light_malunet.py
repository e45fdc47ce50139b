"""MALUNet (kseg.models.light.malunet): its size against the paper's table, its shapes, and each
module against a numpy transcription of its formula with the layers' own weights.
(test_model_family builds, saves, trains and moves it between backends; test_export exports it.)"""

import math

import keras
import numpy as np
import pytest

from kseg.models import build, build_encoder, cost
from kseg.models.base import ModelOptions
from kseg.models.light import malunet
from kseg.models.light.layers import ExactGELU
from tests.harness import assert_config_round_trip, assert_layer_round_trip

RNG = np.random.default_rng(0)
_erf = np.vectorize(math.erf)


@pytest.mark.backend_independent  # counted from the static shapes
def test_size_at_the_paper_s_settings_is_the_paper_s():
    """The paper: 0.177 M parameters, 0.083 "GFLOPs" (thop's MACs) at 256 x 256 x 3, widths
    [8, 16, 24, 32, 48, 64]. The authors' PyTorch model has 177,943 parameters, and torch's
    FlopCounterMode counts its convolutions and Linear layers at 82,740,224 MACs; kseg's runs
    the final 1x1 convolution after the last up-sampling, 256 * 256 * 8 - 128 * 128 * 8 = 393,216
    more. Normalisation, activations, pooling and resampling are not counted (nor by torch's)."""
    model = build("malunet", (256, 256, 3), base_filters=malunet.PAPER_BASE)
    parameters = cost.trainable_parameter_count(model)
    macs = cost.forward_macs(model)
    assert parameters == pytest.approx(0.177e6, rel=0.1) and parameters == 177_943
    assert macs / 1e9 == pytest.approx(0.083, rel=0.1) and macs == 82_740_224 + 393_216
    assert parameters == cost.parameter_count(model)  # GroupNorm keeps no statistics


@pytest.mark.backend_independent
@pytest.mark.parametrize("size", [64, 32])
def test_logits_at_the_input_s_size_and_the_pyramid_s_strides(size):
    model = build("malunet", (size, size, 3), base_filters=4)
    assert model.output.shape == (None, size, size, 1)
    encoder = build_encoder("malunet", (size, size, 3), base_filters=8)
    assert {k: tuple(v.shape[1:]) for k, v in encoder.output.items()} == {
        f"P{k}": (size // 2**k, size // 2**k, c) for k, c in zip(range(1, 6), [8, 16, 24, 32, 64])
    }
    features = malunet.ENCODERS[0].build(keras.Input((size, size, 3)), ModelOptions(base_filters=8))
    assert tuple(features.extra["enc5"].shape[1:]) == (size // 32, size // 32, 48)  # t5 shares P5's stride


def test_logits_of_a_batch_are_finite():
    images = RNG.random((2, 64, 64, 3), dtype="float32")
    logits = keras.ops.convert_to_numpy(build("malunet", (64, 64, 3), base_filters=8)(images))
    assert logits.shape == (2, 64, 64, 1) and np.isfinite(logits).all()


@pytest.mark.backend_independent
def test_widths_refuse_a_base_that_four_groups_do_not_divide():
    assert malunet.widths(8) == [8, 16, 24, 32, 48, 64]
    with pytest.raises(ValueError, match="base_filters must be a multiple of 4"):
        build("malunet", (64, 64, 3), base_filters=6)


# numpy transcriptions of the formulas (channels last, "same" padding, stride 1)


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _group_norm(x, gamma, beta, groups=4, epsilon=1e-5):
    shape = x.shape
    g = x.reshape(*shape[:-1], groups, shape[-1] // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + epsilon)).reshape(shape) * gamma + beta


def _conv(x, kernel, bias=None, dilation=1, depthwise=False):
    """kernel (kh, kw, C_in, C_out), or (kh, kw, C, 1) depthwise."""
    kh, kw = kernel.shape[:2]
    ph, pw = dilation * (kh - 1) // 2, dilation * (kw - 1) // 2
    padded = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    height, width = x.shape[1:3]
    out = 0.0
    for u in range(kh):
        for v in range(kw):
            window = padded[:, u * dilation : u * dilation + height, v * dilation : v * dilation + width]
            out = out + (window * kernel[u, v, :, 0] if depthwise else window @ kernel[u, v])
    return out if bias is None else out + bias


def _weights(model, name):
    return model.get_layer(name).get_weights()


def _randomised(inputs, outputs):
    """A model whose every weight is random (GroupNorm's gamma and beta too, so a misplaced norm shows)."""
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        layer.set_weights([RNG.normal(0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
    return model


def _run(model, x):
    out = model(x)
    return [keras.ops.convert_to_numpy(o) for o in out] if isinstance(out, list) else keras.ops.convert_to_numpy(out)


def _np_separable(model, x, name):
    dw, dw_bias = _weights(model, f"{name}_dw")
    y = _group_norm(_conv(x, dw, dw_bias, depthwise=True), *_weights(model, f"{name}_gn"))
    return _conv(y, *_weights(model, f"{name}_pw"))


def _np_dga(model, x, name):
    quarters = np.split(x, 4, axis=-1)
    y = np.concatenate(
        [
            _conv(q, *_weights(model, f"{name}_dw_d{d}"), dilation=d, depthwise=True)
            for q, d in zip(quarters, (7, 5, 2, 1))
        ],
        axis=-1,
    )
    y = _gelu(_conv(_group_norm(y, *_weights(model, f"{name}_gn")), *_weights(model, f"{name}_conv")))
    g = f"{name}_gau"
    gated = _sigmoid(_np_separable(model, y, f"{g}_gate")) * _gelu(_np_separable(model, y, f"{g}_value"))
    return _gelu(_np_separable(model, gated, f"{g}_out")) + _conv(y, *_weights(model, f"{g}_shortcut"))


def test_dilated_gated_attention_is_its_formula():
    x = RNG.normal(size=(2, 9, 9, 8)).astype("float32")  # 9 px: the dilation-7 taps fall off the edges
    inputs = keras.Input(x.shape[1:])
    model = _randomised(inputs, malunet.dilated_gated_attention(inputs, 12, "dga"))
    np.testing.assert_allclose(_run(model, x), _np_dga(model, x, "dga"), rtol=1e-4, atol=1e-4)


def test_inverted_external_attention_is_its_formula():
    """y = Conv1x1(x); a = softmax over the positions of y M_k, then each position's 4C values
    over their sum; out = GELU(GN(Conv1x1(a M_v)) + x)."""
    x = RNG.normal(size=(2, 3, 5, 8)).astype("float32")
    inputs = keras.Input(x.shape[1:])
    built = keras.Model(inputs, malunet.inverted_external_attention(inputs, "iea"))
    key, value = _weights(built, "iea_memory_key")[0], _weights(built, "iea_memory_value")[0]
    np.testing.assert_array_equal(value, key.T)  # M_v starts as M_k transposed, as in the code
    model = _randomised(inputs, built.output)
    y = _conv(x, *_weights(model, "iea_conv_in")) @ _weights(model, "iea_memory_key")[0]
    a = np.exp(y - y.max(axis=(1, 2), keepdims=True))
    a = a / a.sum(axis=(1, 2), keepdims=True)
    a = a / (1e-9 + a.sum(axis=-1, keepdims=True))
    y = (a @ _weights(model, "iea_memory_value")[0]) @ _weights(model, "iea_conv_out")[0][0, 0]
    expected = _gelu(_group_norm(y, *_weights(model, "iea_gn")) + x)
    np.testing.assert_allclose(_run(model, x), expected, rtol=1e-4, atol=1e-5)


def test_spatial_and_channel_attention_bridge_is_its_formula():
    """s_i = sigmoid(conv7x7 dil 3 ([mean_c, max_c] t_i)) t_i with one convolution for all;
    u_i = s_i + t_i; c_i = sigmoid(fc_i(conv1d_3(concat_j mean_hw u_j))); out_i = c_i u_i + s_i."""
    maps = [RNG.normal(size=(2, s, s, c)).astype("float32") for s, c in [(8, 4), (4, 8), (4, 12), (2, 16), (1, 24)]]
    inputs = [keras.Input(t.shape[1:]) for t in maps]
    model = _randomised(inputs, malunet.sc_attention_bridge(inputs, "bridge"))
    sab = _weights(model, "bridge_sab_conv")
    s = [
        _sigmoid(_conv(np.concatenate([t.mean(-1, keepdims=True), t.max(-1, keepdims=True)], -1), *sab, dilation=3)) * t
        for t in maps
    ]
    u = [si + t for si, t in zip(s, maps)]
    pooled = np.concatenate([ui.mean(axis=(1, 2)) for ui in u], axis=-1)  # (B, 64)
    k = _weights(model, "bridge_cab_conv1d")[0][:, 0, 0]
    padded = np.pad(pooled, ((0, 0), (1, 1)))
    mixed = k[0] * padded[:, :-2] + k[1] * padded[:, 1:-1] + k[2] * padded[:, 2:]
    expected = []
    for i, (ui, si) in enumerate(zip(u, s), start=1):
        kernel, bias = _weights(model, f"bridge_cab_fc{i}")
        expected.append(_sigmoid(mixed @ kernel + bias)[:, None, None, :] * ui + si)
    for got, want in zip(_run(model, maps), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_parameter_free_layers_are_their_formulas_and_round_trip(tmp_path):
    x = RNG.normal(size=(2, 3, 4, 8)).astype("float32")
    np.testing.assert_allclose(_run(ExactGELU(), x), _gelu(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        _run(ExactGELU(), x),
        keras.ops.convert_to_numpy(keras.activations.gelu(x, approximate=False)),
        rtol=1e-6,
        atol=1e-6,
    )
    stacked = np.concatenate([x.mean(-1, keepdims=True), x.max(-1, keepdims=True)], -1)
    np.testing.assert_allclose(_run(malunet.ChannelMeanMax(), x), stacked, rtol=1e-6, atol=1e-6)
    softmax = np.exp(x) / np.exp(x).sum(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(
        _run(malunet.DoubleNormalization(), x), softmax / (1e-9 + softmax.sum(-1, keepdims=True)), rtol=1e-5
    )
    one_position = _run(malunet.DoubleNormalization(), x[:, :1, :1])  # softmax over one position is 1
    np.testing.assert_allclose(one_position, np.full_like(one_position, 1 / 8), rtol=1e-6)
    split = malunet.ChannelSplit(4)
    for got, want in zip(_run(split, x), np.split(x, 4, axis=-1)):
        np.testing.assert_array_equal(got, want)
    assert_config_round_trip(split)
    for make in (ExactGELU, malunet.ChannelMeanMax, lambda: malunet.DoubleNormalization(epsilon=1e-7)):
        assert_layer_round_trip(make, x, tmp_path, atol=1e-6)
