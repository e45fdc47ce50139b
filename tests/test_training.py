"""Every model x loss pair learns, and kseg models save, load and move between backends."""

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import kseg
from kseg.config import RunConfig
from kseg.training import build_model, dtype_policy

MODELS = kseg.models.available()
LOSSES = ("bce", "dice", "focal", "bce+dice")
BACKENDS = ("tensorflow", "jax", "torch")


@pytest.fixture(scope="module")
def tiny_data():
    data = kseg.data.synthetic(n=8, image_size=32, seed=3)
    return np.asarray(data.images), np.asarray(data.masks)


def _tiny(name: str) -> keras.Model:
    return kseg.models.build(name, input_shape=(32, 32, 3), base_filters=4, depth=2)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("name", MODELS)
def test_short_fit_lowers_the_loss(name, loss, tiny_data):
    images, masks = tiny_data
    keras.utils.set_random_seed(0)
    model = _tiny(name)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=kseg.losses.get(loss))
    history = model.fit(images, masks, epochs=15, batch_size=8, verbose=0).history["loss"]
    assert np.isfinite(history).all() and history[-1] < 0.9 * history[0]


def test_build_model_applies_policy_and_jit(monkeypatch):
    config = RunConfig.from_preset("smoke", model="segnet", loss="bce+dice", jit_compile="false")
    model = build_model(config, "mixed_bfloat16")
    assert model.get_layer("enc0_block0_conv").compute_dtype == "bfloat16"
    assert model.output.dtype == "float32"
    assert model.jit_compile is False
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


@pytest.mark.parametrize("name", MODELS)
def test_keras_file_round_trip_with_every_loss_and_metric(name, tmp_path, tiny_data):
    images, masks = tiny_data
    model = _tiny(name)
    model.compile(
        optimizer="adam",
        loss=kseg.losses.get("bce+dice"),
        metrics=[kseg.metrics.IoU(), kseg.metrics.Dice(), kseg.metrics.DatasetIoU()],
    )
    model.fit(images, masks, epochs=1, batch_size=4, verbose=0)  # moving BN statistics too
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")  # no custom_objects needed
    np.testing.assert_array_equal(restored.predict(images, verbose=0), model.predict(images, verbose=0))
    assert type(restored.loss).__name__ == "Combo"
    assert restored.evaluate(images, masks, verbose=0, return_dict=True).keys() == model.evaluate(
        images, masks, verbose=0, return_dict=True).keys()


@pytest.mark.parametrize("loss", LOSSES)
def test_keras_file_round_trip_keeps_each_loss(loss, tmp_path, tiny_data):
    images, masks = tiny_data
    model = _tiny("unet")
    model.compile(optimizer="adam", loss=kseg.losses.get(loss), metrics=[kseg.metrics.IoU()])
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    assert restored.loss.get_config() == model.loss.get_config()
    np.testing.assert_allclose(
        restored.evaluate(images, masks, verbose=0), model.evaluate(images, masks, verbose=0), rtol=1e-6
    )


_SAVE_SCRIPT = """
import sys, numpy as np, keras, kseg
keras.utils.set_random_seed(7)
model = kseg.models.build(sys.argv[1], input_shape=(32, 32, 3), base_filters=4, depth=2)
x = np.random.default_rng(0).random((2, 32, 32, 3), dtype="float32")
model(x, training=True)  # move BN statistics away from their initial values
model.save_weights(sys.argv[2])
np.save(sys.argv[3], model.predict(x, verbose=0))
"""


@pytest.mark.parametrize("name", ["segnet", "unet2"])  # the custom layers and the transposed convs
def test_weights_saved_under_another_backend_give_the_same_predictions(name, tmp_path):
    current = keras.backend.backend()
    other = BACKENDS[(BACKENDS.index(current) + 1) % len(BACKENDS)]
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[other]
    check = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    if check.returncode:
        pytest.skip(f"backend {other} is not installed")
    weights, expected = tmp_path / "w.weights.h5", tmp_path / "pred.npy"
    saved = subprocess.run(
        [sys.executable, "-c", _SAVE_SCRIPT, name, str(weights), str(expected)],
        env={**__import__("os").environ, "KERAS_BACKEND": other}, capture_output=True, text=True, timeout=300,
    )
    assert saved.returncode == 0, saved.stderr[-2000:]
    model = _tiny(name)
    model.load_weights(weights)
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype="float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), np.load(expected), atol=1e-4)
