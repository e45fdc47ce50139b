"""kseg.optimizers: the encoder's variables learn at their own rate, and not at all while frozen,
measured against Keras's own Adam on the same gradients."""

import keras
import numpy as np
import pytest

from kseg import optimizers
from kseg.experiment import training
from kseg.experiment.config import RunConfig


def _two_layer_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="encoder_dense")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, name="decoder_dense")(hidden))


def _weights_after(optimizer, steps: int) -> dict[str, np.ndarray]:
    model = _two_layer_model()
    model.compile(optimizer=optimizer, loss="mse")
    x, y = np.random.default_rng(0).normal(size=(8, 4)), np.ones((8, 1))
    for _ in range(steps):
        model.train_on_batch(x, y)
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_weights}


ENCODER = ["encoder_dense/kernel", "encoder_dense/bias"]


def test_the_encoder_moves_at_its_factor_of_adams_step_and_the_decoder_as_adam():
    start = _weights_after(keras.optimizers.Adam(1e-2), 0)
    plain = _weights_after(keras.optimizers.Adam(1e-2), 1)
    scaled = _weights_after(optimizers.EncoderRateAdam(1e-2, encoder_variables=ENCODER, encoder_lr_factor=0.25), 1)
    for path in plain:
        factor = 0.25 if path in ENCODER else 1.0
        np.testing.assert_allclose(scaled[path] - start[path], factor * (plain[path] - start[path]), atol=1e-7)


def test_frozen_encoder_stays_put_for_freeze_steps_then_learns():
    start = _weights_after(keras.optimizers.Adam(1e-2), 0)
    frozen = optimizers.EncoderRateAdam(1e-2, encoder_variables=ENCODER, freeze_steps=3)
    during, after = _weights_after(frozen, 3), _weights_after(frozen.from_config(frozen.get_config()), 4)
    for path in start:
        moved_during = not np.allclose(during[path], start[path])
        assert moved_during == (path not in ENCODER), path
        assert not np.allclose(after[path], start[path]), path


def test_the_optimizer_saves_and_loads_with_the_model(tmp_path):
    model = _two_layer_model()
    model.compile(optimizer=optimizers.EncoderRateAdamW(1e-3, encoder_variables=ENCODER, freeze_steps=5), loss="mse")
    model.train_on_batch(np.zeros((2, 4)), np.zeros((2, 1)))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, optimizers.EncoderRateAdamW)
    assert loaded.optimizer.get_config()["encoder_variables"] == sorted(ENCODER)
    assert loaded.optimizer.freeze_steps == 5


@pytest.mark.parametrize("model_name", ["unet", "fpn:mobilenetv2"])
def test_the_grid_scales_exactly_the_encoders_variables(model_name):
    config = RunConfig.from_preset("smoke", model=model_name, loss="bce", freeze_encoder_epochs=2, image_size=64)
    model = training.build_model(config, "float32", n_train=12)
    encoder = set(training.encoder_layers(config))
    scaled = set(model.optimizer.encoder_variables)
    variables = [(layer.name in encoder, v.path) for layer in model.layers for v in layer.trainable_weights]
    assert scaled and scaled == {path for in_encoder, path in variables if in_encoder}
    decoder = [path for in_encoder, path in variables if not in_encoder]
    assert decoder and not scaled & set(decoder)
    assert model.optimizer.freeze_steps == 2 * 3  # 12 images in batches of 4


def test_without_the_knobs_the_grid_uses_keras_adam():
    config = RunConfig.from_preset("smoke", model="unet", loss="bce")
    assert type(training.optimizer_for(config, 12)) is type(keras.optimizers.Adam())
