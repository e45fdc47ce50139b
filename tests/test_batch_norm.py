"""kseg.batch_norm.recalibrate against the batch statistics computed in numpy, for Keras's
BatchNormalization and kseg's FastBatchNormalization, and the smoke preset using it."""

import keras
import numpy as np
import pytest

from kseg import batch_norm
from kseg.experiment.config import RunConfig
from kseg.layers import FastBatchNormalization


@pytest.mark.parametrize("norm", [keras.layers.BatchNormalization, FastBatchNormalization])
def test_moving_statistics_become_the_mean_of_the_batch_statistics(norm):
    rng = np.random.default_rng(0)
    images = rng.normal(2.0, 3.0, size=(10, 4, 4, 3)).astype("float32")
    image = keras.Input((4, 4, 3))
    first = norm(momentum=0.9, epsilon=1e-5, name="first")
    conv = keras.layers.Conv2D(2, 1, name="conv")
    second = norm(momentum=0.9, epsilon=1e-5, name="second")
    model = keras.Model(image, second(conv(first(image))))
    assert batch_norm.recalibrate(model, images, batch_size=4) == 2
    assert first.momentum == second.momentum == 0.9  # restored

    batches = [images[i : i + 4] for i in range(0, 10, 4)]  # 4, 4 and 2 images
    np.testing.assert_allclose(first.moving_mean, np.mean([b.mean(axis=(0, 1, 2)) for b in batches], 0), rtol=1e-5)
    np.testing.assert_allclose(first.moving_variance, np.mean([b.var(axis=(0, 1, 2)) for b in batches], 0), rtol=1e-4)
    # The second layer saw the first's batch-normalised outputs, batch by batch.
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in conv.weights)
    gamma, beta = (keras.ops.convert_to_numpy(w) for w in (first.gamma, first.beta))
    inner = []
    for b in batches:
        normalised = (b - b.mean(axis=(0, 1, 2))) / np.sqrt(b.var(axis=(0, 1, 2)) + 1e-5) * gamma + beta
        inner.append(normalised @ kernel[0, 0] + bias)
    np.testing.assert_allclose(second.moving_mean, np.mean([x.mean(axis=(0, 1, 2)) for x in inner], 0), atol=1e-4)
    np.testing.assert_allclose(second.moving_variance, np.mean([x.var(axis=(0, 1, 2)) for x in inner], 0), rtol=1e-3)


def test_a_model_without_batch_norm_is_left_alone():
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(1, 1)])
    before = [w.copy() for w in model.get_weights()]
    assert batch_norm.recalibrate(model, np.ones((2, 4, 4, 3), "float32")) == 0
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_the_smoke_preset_recalibrates_and_the_cpu_preset_does_not():
    assert RunConfig.from_preset("smoke", model="unet", loss="bce").precise_bn
    assert not RunConfig.from_preset("cpu", model="unet", loss="bce").precise_bn
