import importlib.util
import json
from pathlib import Path

import keras
import numpy as np
import pytest

import kseg

MODELS = kseg.models.SEED_MODELS
TORCH_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "bench" / "torch_reference.py"
# Trainable parameters of the native PyTorch networks at base 32, depth 4 (torch_reference.py).
REFERENCE_PARAMS = {"segnet": 4_712_993, "unet": 7_852_545, "unet2": 8_114_625}


def _trainable_params(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_available_names():
    assert MODELS == ("segnet", "unet", "unet2")


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_matches_pytorch_reference(name):
    model = kseg.models.build(name, input_shape=(64, 64, 3), base_filters=32, depth=4)
    assert _trainable_params(model) == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("base,depth", [(8, 2), (16, 3)])
def test_parameter_count_matches_native_torch_build(name, base, depth):
    if not TORCH_REFERENCE.exists():
        pytest.skip(f"{TORCH_REFERENCE} not found: native PyTorch reference unavailable")
    pytest.importorskip("torch", reason="torch not installed")
    spec = importlib.util.spec_from_file_location("torch_reference", TORCH_REFERENCE)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    expected = sum(p.numel() for p in reference.build(name, base, depth).parameters() if p.requires_grad)
    model = kseg.models.build(name, input_shape=(32, 32, 3), base_filters=base, depth=depth)
    assert _trainable_params(model) == expected


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(32, 32, 3), (16, 48, 1)])
def test_output_is_one_logit_channel_per_pixel(name, shape):
    model = kseg.models.build(name, input_shape=shape, base_filters=4, depth=2)
    assert model.output.shape == (None, shape[0], shape[1], 1)
    out = model.predict(np.random.default_rng(0).random((2, *shape), "float32"), verbose=0)
    assert out.shape == (2, shape[0], shape[1], 1) and np.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_output_is_float32_under_mixed_precision(name):
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        model = kseg.models.build(name, input_shape=(16, 16, 3), base_filters=4, depth=2)
        assert model.layers[-2].compute_dtype == "bfloat16"
        assert model.output.dtype == "float32"
        out = model(np.zeros((1, 16, 16, 3), "float32"))
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


@pytest.mark.parametrize("name", MODELS)
def test_every_layer_has_a_readable_name(name):
    model = kseg.models.build(name, input_shape=(16, 16, 3), base_filters=4, depth=2)
    prefixes = ("image", "enc", "bottleneck", "dec", "logits")
    unnamed = [layer.name for layer in model.layers if not layer.name.startswith(prefixes)]
    assert not unnamed
    assert len({layer.name for layer in model.layers}) == len(model.layers)


@pytest.mark.parametrize("name", MODELS)
def test_batchnorm_momentum_is_pytorch_default_and_configurable(name):
    default = kseg.models.build(name, input_shape=(16, 16, 3), base_filters=4, depth=2)
    custom = kseg.models.build(name, input_shape=(16, 16, 3), base_filters=4, depth=2, bn_momentum=0.5)
    bn = [layer for layer in default.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and all(layer.momentum == 0.9 for layer in bn)
    assert all(layer.momentum == 0.5 for layer in custom.layers if isinstance(layer, keras.layers.BatchNormalization))


@pytest.mark.parametrize("name", MODELS)
def test_fast_batch_norm_builds_the_same_network(name, tmp_path):
    """batch_norm="fast" swaps only the normalisation layers: same layer names, same weights, the
    same output (training and inference) once the weights are copied, and a .keras round trip."""
    build = dict(input_shape=(32, 32, 3), base_filters=4, depth=2)
    plain = kseg.models.build(name, **build)
    fast = kseg.models.build(name, batch_norm="fast", **build)
    assert [layer.name for layer in fast.layers] == [layer.name for layer in plain.layers]
    swapped = [layer for layer in fast.layers if isinstance(layer, kseg.layers.FastBatchNormalization)]
    assert len(swapped) == sum(isinstance(layer, keras.layers.BatchNormalization) for layer in plain.layers) > 0
    assert [w.path for w in fast.weights] == [w.path for w in plain.weights]
    fast.set_weights(plain.get_weights())
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    for training in (True, False):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(fast(x, training=training)),
            keras.ops.convert_to_numpy(plain(x, training=training)),
            atol=1e-3,
        )
    fast.save(tmp_path / "fast.keras")
    loaded = keras.saving.load_model(tmp_path / "fast.keras")
    assert any(isinstance(layer, kseg.layers.FastBatchNormalization) for layer in loaded.layers)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(fast(x)), atol=1e-6)


def test_unknown_batch_norm_is_named():
    with pytest.raises(ValueError, match="batch_norm 'group'"):
        kseg.models.build("unet", input_shape=(16, 16, 3), base_filters=4, depth=2, batch_norm="group")


@pytest.mark.parametrize("name", MODELS)
def test_indivisible_input_size_is_rejected(name):
    with pytest.raises(
        ValueError,
        match=r"Expected an input height divisible by 2\*\*depth = 16 \(depth=4\), e.g. 32. Received: height 40",
    ):
        kseg.models.build(name, input_shape=(40, 64, 3), depth=4)


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(ValueError, match="segnet, unet, unet2"):
        kseg.models.build("resnet")


def test_segnet_decoder_unpools_to_pooling_positions():
    """With identity-like weights removed from the picture, SegNet's first decoder input must be
    zero everywhere except at its encoder's pooling positions."""
    model = kseg.models.segnet(input_shape=(16, 16, 3), base_filters=4, depth=2)
    probe = keras.Model(model.input, [model.get_layer("enc0_block1_bn").output, model.get_layer("dec0_unpool").output])
    encoded, unpooled = probe.predict(np.random.default_rng(1).random((1, 16, 16, 3), "float32"), verbose=0)
    nonzero = unpooled != 0
    windows = nonzero.reshape(1, 8, 2, 8, 2, 4).sum(axis=(2, 4))
    assert windows.max() <= 1  # at most one position per window (zero where the value was 0)
    # Each kept position is where the encoder's window maximum was.
    enc_windows = encoded.reshape(1, 8, 2, 8, 2, 4).transpose(0, 1, 3, 5, 2, 4).reshape(1, 8, 8, 4, 4)
    un_windows = nonzero.reshape(1, 8, 2, 8, 2, 4).transpose(0, 1, 3, 5, 2, 4).reshape(1, 8, 8, 4, 4)
    kept = un_windows.any(-1)
    np.testing.assert_array_equal(un_windows.argmax(-1)[kept], enc_windows.argmax(-1)[kept])


SEED_FIXTURE = Path(__file__).parent / "fixtures" / "seed_networks_kseg03.json"


@pytest.mark.parametrize("colour_constancy", [False, True])
@pytest.mark.parametrize("name", MODELS)
def test_seed_networks_keep_kseg_03_layer_names_and_parameter_counts(name, colour_constancy):
    """Written by kseg 0.3's builders (before the encoder/decoder split): every committed run's
    weights still load, by name, into the same shapes."""
    expected = json.loads(SEED_FIXTURE.read_text())["models"][f"{name}{colour_constancy}"]
    model = kseg.models.build(
        name, input_shape=(128, 128, 3), base_filters=16, depth=4, batch_norm="fast", colour_constancy=colour_constancy
    )
    assert [layer.name for layer in model.layers] == expected["layer_names"]
    assert model.count_params() == expected["params"]


@pytest.mark.backend_independent  # the graph's layers
@pytest.mark.parametrize("name", kseg.models.available())
def test_every_bilinear_up_sampling_computes_in_float32(name):
    """Under mixed bfloat16 a bilinear UpSampling2D in bfloat16 breaks TensorFlow's XLA training
    step (its gradient comes back float32); kseg builds every one through bilinear_upsampling."""
    decoder = kseg.models.decoders.get(name)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = kseg.models.build(f"{name}:{decoder.test_encoder}", (32, 32, 3), base_filters=8, depth=3)
    finally:
        keras.config.set_dtype_policy("float32")
    bilinear = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation == "bilinear"
    ]
    assert all(layer.compute_dtype == "float32" for layer in bilinear), [layer.name for layer in bilinear]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="XLA's mixed-precision check is TensorFlow's")
def test_a_bilinear_decoder_trains_under_xla_in_mixed_bfloat16():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = kseg.models.build("fpn:unet", (32, 32, 3), base_filters=4, depth=3)
    finally:
        keras.config.set_dtype_policy("float32")
    model.compile(optimizer="adam", loss="binary_crossentropy", jit_compile=True)
    rng = np.random.default_rng(0)
    loss = model.train_on_batch(rng.random((2, 32, 32, 3), dtype="float32"), np.ones((2, 32, 32, 1), "float32"))
    assert np.isfinite(loss)
