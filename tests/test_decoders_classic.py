"""U-Net's two classic kin as decoders: Attention U-Net's gate against numpy, U-Net++'s nodes,
both decoders' parameter counts against hand-computed formulas, and both on a keras.applications
encoder. (test_model_family builds, saves, trains and moves them with every other decoder.)"""

import re

import keras
import numpy as np
import pytest

from kseg import models
from kseg.models import cost
from kseg.models.decoders.attention_unet import attention_gate
from kseg.models.decoders.unetpp import side_outputs


def _numpy_up2_bilinear(a):
    """2x bilinear up-sampling with half-pixel centres and edge clamping (tf/torch/jax resize):
    output row 2m reads 0.25 * a[m - 1] + 0.75 * a[m], row 2m + 1 0.75 * a[m] + 0.25 * a[m + 1]."""
    for axis in (1, 2):
        n = a.shape[axis]
        before = np.take(a, np.clip(np.arange(n) - 1, 0, n - 1), axis=axis)
        after = np.take(a, np.clip(np.arange(n) + 1, 0, n - 1), axis=axis)
        even, odd = 0.25 * before + 0.75 * a, 0.75 * a + 0.25 * after
        a = np.stack([even, odd], axis=axis + 1).reshape(a.shape[:axis] + (2 * n,) + a.shape[axis + 1 :])
    return a


def _numpy_attention_gate(x, g, wx, wg, bg, wpsi, bpsi):
    """Oktay et al.'s gate: alpha = up2(sigmoid(psi(relu(W_x x + W_g g + b_g)) + b_psi)), alpha * x,
    with W_x the 2x2 stride-2 projection onto g's grid."""
    b, h2, w2, c = x.shape
    blocks = x.reshape(b, h2 // 2, 2, w2 // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h2 // 2, w2 // 2, 4 * c)
    theta = blocks @ wx.reshape(4 * c, -1)  # kernel (2, 2, c, F) read row-major as (r, s, c)
    q = np.maximum(theta + g @ wg[0, 0] + bg, 0.0)
    alpha = 1.0 / (1.0 + np.exp(-(q @ wpsi[0, 0] + bpsi)))
    return x * _numpy_up2_bilinear(alpha)


def test_attention_gate_matches_numpy():
    rng = np.random.default_rng(0)
    x_in, g_in = keras.Input((8, 6, 3)), keras.Input((4, 3, 5))
    gate = keras.Model([x_in, g_in], attention_gate(x_in, g_in, 2, "gate"))
    assert [layer.name for layer in gate.layers if not isinstance(layer, keras.layers.InputLayer)] == [
        f"gate_{part}" for part in ("wx", "wg", "add", "relu", "psi", "sigmoid", "resample", "multiply")
    ]
    weights = [rng.normal(size=w.shape).astype("float32") for w in gate.get_weights()]  # biases too
    gate.set_weights(weights)
    x, g = rng.normal(size=(2, 8, 6, 3)).astype("float32"), rng.normal(size=(2, 4, 3, 5)).astype("float32")
    (wx,), (wg, bg), (wpsi, bpsi) = (gate.get_layer(f"gate_{n}").get_weights() for n in ("wx", "wg", "psi"))
    got = keras.ops.convert_to_numpy(gate([x, g]))
    np.testing.assert_allclose(got, _numpy_attention_gate(x, g, wx, wg, bg, wpsi, bpsi), rtol=1e-4, atol=1e-5)


def _widths(base, depth):
    return [base * 2**k for k in range(depth + 1)]


@pytest.mark.backend_independent  # symbolic shapes
def test_unetpp_has_the_nested_nodes_of_depth_3():
    model = models.build("unetpp", (32, 32, 3), base_filters=4, depth=3)
    last_blocks = (re.fullmatch(r"(x\d+_\d+)_block1_bn", layer.name) for layer in model.layers)
    nodes = {match[1]: model.get_layer(match[0]).output for match in last_blocks if match}
    # X^{i,j} for j >= 1 and i + j <= 3: 3 + 2 + 1 nodes, at level i's stride and width.
    expected = {f"x{i}_{j}": (32 // 2**i, 4 * 2**i) for j in range(1, 4) for i in range(4 - j)}
    assert {name: (t.shape[1], t.shape[3]) for name, t in nodes.items()} == expected
    # X^{1,2} reads X^{1,0} (P1), X^{1,1} and X^{2,1} up-sampled: 2 * f_1 + f_2 channels.
    assert model.get_layer("x1_2_concat").output.shape[-1] == 2 * 8 + 16
    assert list(side_outputs(model)) == ["x0_1", "x0_2", "x0_3"]
    # The decoder's output is X^{0,3}, which the logit head reads.
    assert model.get_layer("logits").input is side_outputs(model)["x0_3"]


def _conv_block_params(c_in, c_out):
    return 9 * c_in * c_out + c_out + 4 * c_out  # 3x3 kernel, bias, BN gamma/beta/mean/variance


def _decoder_params(name, base, depth):
    """The decoder's weights: the model's less kseg's unet encoder's and the 1x1 logit head's."""
    model = models.build(name, (32, 32, 3), base_filters=base, depth=depth)
    encoder = models.build_encoder("unet", (32, 32, 3), base_filters=base, depth=depth)
    return cost.parameter_count(model) - cost.parameter_count(encoder) - (base + 1)


@pytest.mark.backend_independent  # weight shapes
@pytest.mark.parametrize("base, depth", [(4, 2), (3, 3)])
def test_parameter_counts_are_the_formulas(base, depth):
    f = _widths(base, depth)  # P_k has f_k channels on kseg's unet encoder, the bottleneck P_depth too
    unet = sum(_conv_block_params(f[k + 1] + f[k], f[k]) + _conv_block_params(f[k], f[k]) for k in range(depth))
    assert _decoder_params("unet", base, depth) == unet
    # Each gate: W_x (2x2, no bias), W_g (1x1 + bias) and psi (1x1 + bias), F_int = max(1, f_k // 2) wide.
    gates = 0
    for k in range(depth):
        inter = max(1, f[k] // 2)
        gates += 4 * f[k] * inter + (f[k + 1] * inter + inter) + (inter + 1)
    assert _decoder_params("attention_unet", base, depth) == unet + gates
    # X^{i,j}: j maps of f_i (P_i and the j - 1 nodes before it) and U(X^{i+1,j-1}), f_{i+1}.
    unetpp = sum(
        _conv_block_params(j * f[i] + f[i + 1], f[i]) + _conv_block_params(f[i], f[i])
        for j in range(1, depth + 1)
        for i in range(depth - j + 1)
    )
    assert _decoder_params("unetpp", base, depth) == unetpp


@pytest.mark.backend_independent  # weight shapes
def test_attention_unet_shares_the_unet_decoder_s_layer_names_and_shapes():
    """Only the gates are new: a trained unet's decoder weights load into it by name (--init-from)."""
    unet, gated = (models.build(name, (32, 32, 3), base_filters=4, depth=2) for name in ("unet", "attention_unet"))
    shapes = {w.path: w.shape for w in unet.weights}
    gated_shapes = {w.path: w.shape for w in gated.weights if "_att_" not in w.path}
    assert gated_shapes == shapes


@pytest.mark.backend_independent  # symbolic shapes
def test_both_decoders_build_on_mobilenetv2_without_p0():
    attention = models.build("attention_unet:mobilenetv2", (32, 32, 3), base_filters=4, encoder_weights=None)
    assert attention.output.shape == (None, 32, 32, 1)
    # MobileNetV2 gives P1..P5: a gate on each skip P1..P4, none at stride 1.
    gates = sorted(layer.name for layer in attention.layers if layer.name.endswith("_att_multiply"))
    assert gates == [f"dec{k}_att_multiply" for k in range(1, 5)]
    assert attention.get_layer("dec0_block0_conv").input.shape[-1] == 2 * 4  # f_1 up-sampled, no skip

    nested = models.build("unetpp:mobilenetv2", (32, 32, 3), base_filters=4, encoder_weights=None)
    assert nested.output.shape == (None, 32, 32, 1)
    # No X^{0,0}: the top row starts at column 1, X^{0,1} = H(U(P1)).
    assert [(name, t.shape[1:]) for name, t in side_outputs(nested).items()] == [
        (f"x0_{j}", (32, 32, 4)) for j in range(1, 6)
    ]
    assert "x0_1_concat" not in {layer.name for layer in nested.layers}
    assert nested.get_layer("x0_2_concat").output.shape[-1] == 4 + 8  # X^{0,1} and U(X^{1,1})
