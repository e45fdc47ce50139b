"""Shades-of-Gray colour constancy (layer and model option) and illuminant augmentation."""

import keras
import numpy as np
import pytest

import kseg
from kseg.data import augment_pair
from kseg.layers import ShadesOfGray
from tests.harness import assert_layer_round_trip

MODELS = kseg.models.SEED_MODELS


def _reference(images: np.ndarray, power: float = 6, epsilon: float = 1e-6) -> np.ndarray:
    """Independent numpy Shades of Gray in float64: e_c = (mean x_c^p)^(1/p) per image, then
    x_c * ||e|| / (sqrt(C) * e_c), clipped to [0, 1]."""
    x = np.asarray(images, np.float64)
    estimate = np.mean(np.maximum(x, 0) ** power, axis=(1, 2)) ** (1 / power)  # (B, C)
    norm = np.linalg.norm(estimate, axis=-1, keepdims=True)
    gains = norm / (np.sqrt(x.shape[-1]) * np.maximum(estimate, epsilon))
    return np.clip(x * gains[:, None, None, :], 0, 1)


def _estimate(images: np.ndarray, power: float = 6) -> np.ndarray:
    return np.mean(np.asarray(images, np.float64) ** power, axis=(1, 2)) ** (1 / power)


def _cast_image(seed: int = 0, size: int = 24) -> np.ndarray:
    """A neutral-grey textured image under a reddish illuminant (gains 1, 0.7, 0.45)."""
    rng = np.random.default_rng(seed)
    grey = rng.uniform(0.2, 0.9, (1, size, size, 1))
    return (grey * np.array([1.0, 0.7, 0.45])).astype("float32")


# ---- the layer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("power", [1, 6, 2.5])
def test_matches_numpy_reference_on_random_images(power):
    images = np.random.default_rng(0).random((3, 16, 20, 3), "float32")
    out = keras.ops.convert_to_numpy(ShadesOfGray(power=power)(images))
    assert out.shape == images.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, _reference(images, power), rtol=1e-5, atol=1e-6)
    assert 0 <= out.min() and out.max() <= 1


def test_removes_a_known_colour_cast_and_keeps_the_illuminant_norm():
    image = _cast_image()
    before = _estimate(image)[0]
    assert before.max() / before.min() > 2
    out = keras.ops.convert_to_numpy(ShadesOfGray()(image)).astype(np.float64)
    assert out.max() < 1  # no clipping here, so the correction is exact
    after = _estimate(out)[0]
    np.testing.assert_allclose(after, np.full(3, np.linalg.norm(before) / np.sqrt(3)), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(after), np.linalg.norm(before), rtol=1e-5)
    # The cast came from per-channel gains only, so the pixels become grey (equal channels).
    np.testing.assert_allclose(out[..., 0], out[..., 1], rtol=1e-5)
    np.testing.assert_allclose(out[..., 0], out[..., 2], rtol=1e-5)


def test_black_image_and_single_channel_stay_as_they_are():
    layer = ShadesOfGray()
    black = np.zeros((1, 8, 8, 3), "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(black)), black)
    grey = np.random.default_rng(1).random((2, 8, 8, 1), "float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ShadesOfGray()(grey)), grey, rtol=1e-6)


def test_layer_has_no_weights_and_round_trips_its_config(tmp_path):
    layer = ShadesOfGray(power=4, epsilon=1e-5, name="sog")
    layer(np.ones((1, 4, 4, 3), "float32"))
    assert not layer.weights
    # Its own float32 policy: under mixed bfloat16 it still outputs float32.
    assert_layer_round_trip(
        lambda: ShadesOfGray(power=4, epsilon=1e-5, name="sog"),
        _cast_image(),
        tmp_path,
        bf16_output_dtype="float32",
        atol=1e-6,
    )
    clone = ShadesOfGray.from_config(layer.get_config())
    assert (clone.name, clone.power, clone.epsilon, clone.compute_dtype) == ("sog", 4.0, 1e-5, "float32")
    assert ShadesOfGray().name == "shades_of_gray"
    with pytest.raises(ValueError, match="power"):
        ShadesOfGray(power=0)


def test_computes_in_float32_under_mixed_bfloat16(mixed_bfloat16):
    images = np.random.default_rng(2).random((2, 16, 16, 3), "float32")
    layer = ShadesOfGray()
    assert layer.compute_dtype == "float32"  # its default dtype, not the global policy
    out = layer(images)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), _reference(images), rtol=1e-5, atol=1e-6)
    # Forced to the mixed policy: the input is rounded to bfloat16 and so is the output (8-bit
    # mantissa: relative error ~2**-8 each), the arithmetic in between is still float32.
    forced = ShadesOfGray(dtype="mixed_bfloat16")(images)
    assert keras.backend.standardize_dtype(forced.dtype) == "bfloat16"
    forced = keras.ops.convert_to_numpy(keras.ops.cast(forced, "float32"))
    np.testing.assert_allclose(forced, _reference(images), rtol=2e-2, atol=1e-2)


# ---- the model option ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_default_builds_are_unchanged(name):
    plain = kseg.models.build(name, input_shape=(8, 8, 3), base_filters=2, depth=1)
    off = kseg.models.build(name, input_shape=(8, 8, 3), base_filters=2, depth=1, colour_constancy=False)
    on = kseg.models.build(name, input_shape=(8, 8, 3), base_filters=2, depth=1, colour_constancy=True)
    names = [layer.name for layer in plain.layers]
    assert [layer.name for layer in off.layers] == names
    assert "shades_of_gray" not in names
    assert [layer.name for layer in on.layers] == [names[0], "shades_of_gray", *names[1:]]
    assert [w.shape for w in on.weights] == [w.shape for w in plain.weights]


@pytest.mark.parametrize("name", MODELS)
def test_model_applies_the_layer_right_after_the_input(name):
    model = kseg.models.build(name, input_shape=(8, 8, 3), base_filters=2, depth=1, colour_constancy=True)
    layer = model.get_layer("shades_of_gray")
    assert isinstance(layer, ShadesOfGray)
    assert layer.input is model.input
    images = np.random.default_rng(3).random((2, 8, 8, 3), "float32")
    probe = keras.Model(model.input, layer.output)
    np.testing.assert_allclose(probe.predict(images, verbose=0), _reference(images), rtol=1e-5, atol=1e-6)


def test_saved_model_carries_the_layer(tmp_path):
    model = kseg.models.build("unet", input_shape=(8, 8, 3), base_filters=2, depth=1, colour_constancy=True)
    images = _cast_image(4, 8).repeat(2, axis=0)
    expected = model.predict(images, verbose=0)
    path = tmp_path / "unet_sog.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: registered under "kseg"
    assert isinstance(loaded.get_layer("shades_of_gray"), ShadesOfGray)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-5)


def test_model_with_layer_under_mixed_bfloat16(mixed_bfloat16):
    model = kseg.models.build("segnet", input_shape=(8, 8, 3), base_filters=2, depth=1, colour_constancy=True)
    assert model.get_layer("shades_of_gray").compute_dtype == "float32"
    assert model.get_layer("enc0_block0_conv").compute_dtype == "bfloat16"
    out = model(np.random.default_rng(5).random((1, 8, 8, 3), "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert np.isfinite(keras.ops.convert_to_numpy(out)).all()


# ---- illuminant augmentation -------------------------------------------------------------------


def _pair(h=32, w=32):
    rng = np.random.default_rng(11)
    image = rng.uniform(0.2, 0.7, (h, w, 3)).astype("float32")
    mask = np.zeros((h, w, 1), "float32")
    mask[8:20, 6:26] = 1
    return image, mask


@pytest.mark.parametrize("photometric", [True, False])
def test_illuminant_keeps_mask_and_changes_channel_ratios(photometric):
    image, mask = _pair()
    for seed in range(5):
        base_i, base_m = augment_pair(image, mask, np.random.default_rng(seed), photometric=photometric)
        out_i, out_m = augment_pair(image, mask, np.random.default_rng(seed), photometric=photometric, illuminant=0.3)
        np.testing.assert_array_equal(out_m, base_m)
        assert out_i.dtype == np.float32 and out_i.shape == image.shape
        assert 0 <= out_i.min() and out_i.max() <= 1
        ratio = lambda x: x[..., :2].mean(axis=(0, 1)) / x[..., 2].mean()  # noqa: E731
        assert np.abs(ratio(out_i) - ratio(base_i)).max() > 1e-3


def test_illuminant_is_a_per_channel_gain_drawn_after_the_rest():
    image, mask = _pair()
    rng = np.random.default_rng(7)
    base_i, _ = augment_pair(image, mask, rng)  # illuminant = 0: consumes the usual draws only
    gains = np.exp(rng.uniform(-0.2, 0.2, 3)).astype("float32")  # what comes next in the stream
    out_i, _ = augment_pair(image, mask, np.random.default_rng(7), illuminant=0.2)
    np.testing.assert_allclose(out_i, np.clip(base_i * gains, 0, 1), rtol=1e-6, atol=1e-7)
    assert np.all((gains >= np.exp(-0.2)) & (gains <= np.exp(0.2)))


def test_zero_illuminant_is_the_previous_behaviour():
    image, mask = _pair(24, 40)
    for seed in range(5):
        a_rng, b_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        a = augment_pair(image, mask, a_rng)
        b = augment_pair(image, mask, b_rng, illuminant=0.0)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert a_rng.bit_generator.state == b_rng.bit_generator.state  # no extra draws
    with pytest.raises(ValueError, match="illuminant"):
        augment_pair(image, mask, np.random.default_rng(0), illuminant=-0.1)
