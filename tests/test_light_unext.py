"""UNeXt (kseg.models.light.unext): its size against the paper's table, its output shapes, and
its token shift and shifted-MLP block against numpy written from the paper's formulas.
(Building, saving, training a step and moving between backends: test_model_family; the ONNX
export: test_export. Both pick the network up from the registries.)"""

import math

import keras
import numpy as np
import pytest

from kseg import models
from kseg.models import cost
from kseg.models.light import unext
from tests.harness import assert_layer_round_trip


@pytest.mark.backend_independent  # static shapes
def test_the_paper_s_network_has_the_paper_s_size():
    """Table 1 of the paper: 1.47 M parameters, 0.57 GFLOPs (ptflops' multiply-accumulates), at
    256x256, the input size of the authors' code (train.py's default; at 512x512 the count would be
    four times as large, 2.25 G). kseg counts convolutions and Dense layers only: 0.562 G, 1.4% under
    the paper's figure, which also counts normalisation, activations, pooling and up-sampling."""
    model = models.build("unext", (256, 256, 3), base_filters=unext.PAPER_BASE_FILTERS)
    assert cost.trainable_parameter_count(model) == pytest.approx(1.47e6, rel=0.10)
    assert cost.forward_macs(model) / 1e9 == pytest.approx(0.57, rel=0.10)
    widths = [model.get_layer(f"unext_enc{k}_{'conv' if k <= 3 else 'embed_conv'}").filters for k in range(1, 6)]
    assert widths == [16, 32, 128, 160, 256]


@pytest.mark.parametrize("size", [64, 32])
def test_logits_have_the_input_s_size(size):
    model = models.build("unext", (size, size, 3), base_filters=4)
    assert model.output.shape == (None, size, size, 1)
    images = np.random.default_rng(0).random((2, size, size, 3), dtype="float32")
    logits = keras.ops.convert_to_numpy(model(images, training=False))
    assert logits.shape == (2, size, size, 1) and np.isfinite(logits).all()


@pytest.mark.backend_independent
def test_the_input_must_divide_by_32_whatever_the_depth():
    assert models.total_stride("unext", depth=2) == 32
    with pytest.raises(ValueError, match=r"divisible by 32 \(the unext encoder.s total stride\), e.g. 32"):
        models.build("unext", (48, 48, 3))


def _shift_reference(x: np.ndarray, axis: int, shift_size: int) -> np.ndarray:
    """The paper's shift, channel by channel: channel c is in group g = c // ceil(C / shift_size)
    (torch.chunk's groups) and moves by s = g - shift_size // 2 along ``axis``, zeros filling in."""
    out = np.zeros_like(x)
    size = math.ceil(x.shape[-1] / shift_size)
    length = x.shape[axis]
    for c in range(x.shape[-1]):
        s = c // size - shift_size // 2
        for i in range(length):
            if 0 <= i - s < length:
                target = [slice(None)] * 4
                target[axis], target[3] = i, c
                source = list(target)
                source[axis] = i - s
                out[tuple(target)] = x[tuple(source)]
    return out


@pytest.mark.parametrize("axis", [1, 2])
@pytest.mark.parametrize("channels, shift_size", [(7, 5), (12, 5), (3, 5), (6, 3)])
def test_axial_shift_matches_numpy(axis, channels, shift_size):
    x = np.random.default_rng(channels).normal(size=(2, 6, 5, channels)).astype("float32")
    got = keras.ops.convert_to_numpy(unext.AxialShift(axis, shift_size)(x))
    np.testing.assert_array_equal(got, _shift_reference(x, axis, shift_size))


@pytest.mark.backend_independent
def test_axial_shift_groups_are_torch_chunk_s():
    shift = unext.AxialShift(1)
    assert [end - start for start, end, _ in shift.groups(256)] == [52, 52, 52, 52, 48]
    assert [s for *_, s in shift.groups(256)] == [-2, -1, 0, 1, 2]
    assert shift.groups(4) == [(0, 1, -2), (1, 2, -1), (2, 3, 0), (3, 4, 1)]  # 4 groups of 1, as torch.chunk(x, 5)


def test_axial_shift_round_trips(tmp_path):
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 6)).astype("float32")
    assert_layer_round_trip(lambda: unext.AxialShift(2, 3, name="shift"), x, tmp_path)


@pytest.mark.parametrize("axis, shift_size", [(0, 5), (3, 5), (1, 4), (1, 0)])
def test_axial_shift_refuses_other_axes_and_even_sizes(axis, shift_size):
    with pytest.raises(ValueError, match="Received"):
        unext.AxialShift(axis, shift_size)


def test_channel_layer_normalization_is_keras_s_layer_normalization(tmp_path):
    x = np.random.default_rng(2).normal(3.0, 2.0, size=(2, 3, 4, 6)).astype("float32")
    ours = unext.ChannelLayerNormalization(epsilon=1e-5)
    keras_s = keras.layers.LayerNormalization(epsilon=1e-5)
    ours.build(x.shape), keras_s.build(x.shape)
    weights = [np.random.default_rng(3).normal(size=(6,)).astype("float32") for _ in range(2)]
    ours.set_weights(weights), keras_s.set_weights(weights)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(keras_s(x)), atol=1e-5, rtol=0
    )
    assert_layer_round_trip(lambda: unext.ChannelLayerNormalization(epsilon=1e-5, name="norm"), x, tmp_path)
    with pytest.raises(ValueError, match="last axis"):
        unext.ChannelLayerNormalization(axis=1).build(x.shape)


def test_exact_gelu_matches_erf_and_keras_s_gelu(tmp_path):
    x = np.linspace(-6.0, 6.0, 49, dtype="float32").reshape(1, 7, 7, 1)
    got = keras.ops.convert_to_numpy(unext.ExactGELU()(x))
    np.testing.assert_allclose(got, 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))), atol=1e-6, rtol=0)
    expected = keras.ops.convert_to_numpy(keras.activations.gelu(x, approximate=False))
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert_layer_round_trip(lambda: unext.ExactGELU(name="gelu"), x, tmp_path)


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(x.astype("float64"))


def _block_reference(x: np.ndarray, weights: dict) -> np.ndarray:
    """x + fc2(shift_w(GELU(dwconv(fc1(shift_h(LayerNorm(x))))))), in float64."""
    x = x.astype("float64")
    gamma, beta = weights["norm"]
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    y = (x - mean) / np.sqrt(variance + 1e-5) * gamma + beta
    y = _shift_reference(y, 1, 5)
    kernel, bias = weights["fc1"]
    y = y @ kernel + bias
    depthwise, depthwise_bias = weights["dwconv"]  # (3, 3, C, 1)
    padded = np.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)))
    height, width = y.shape[1:3]
    y = sum(padded[:, i : i + height, j : j + width, :] * depthwise[i, j, :, 0] for i in range(3) for j in range(3))
    y = y + depthwise_bias
    y = 0.5 * y * (1.0 + _erf(y / math.sqrt(2.0)))  # exact GELU
    y = _shift_reference(y, 2, 5)
    kernel, bias = weights["fc2"]
    return x + y @ kernel + bias


def test_shifted_mlp_block_matches_numpy():
    inputs = keras.Input((5, 6, 7))
    model = keras.Model(inputs, unext.shifted_mlp_block(inputs, "block"))
    rng = np.random.default_rng(3)
    weights = {}
    for part in ("norm", "fc1", "dwconv", "fc2"):
        layer = model.get_layer(f"block_{part}")
        # Every weight random (biases and LayerNorm's scale and offset too), so each one is checked.
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
        weights[part] = [w.astype("float64") for w in layer.get_weights()]
    x = rng.normal(size=(2, 5, 6, 7)).astype("float32")
    got = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(got, _block_reference(x, weights), atol=1e-5, rtol=1e-5)
