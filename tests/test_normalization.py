"""FastBatchNormalization against keras.layers.BatchNormalization and a numpy reference."""

import keras
import numpy as np
import pytest
from keras import ops

from kseg.layers import FastBatchNormalization
from tests.backend_utils import value_and_grad
from tests.harness import assert_config_round_trip

SHAPE = (4, 6, 5, 3)
MOMENTUM, EPSILON = 0.9, 1e-3
# Channels with different means and spreads, one mean large against its spread.
MEANS, SPREADS = np.array([3.0, -1.0, 10.0]), np.array([1.0, 2.0, 0.5])


@pytest.fixture(autouse=True)
def _float32_policy():
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


def _data(seed=0, shape=SHAPE, means=MEANS, spreads=SPREADS):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * spreads + means).astype("float32")


def _weights(channels=3, seed=1):
    """gamma, beta, moving_mean, moving_variance: all away from their initial values."""
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=channels).astype("float32"),
        rng.normal(size=channels).astype("float32"),
        rng.normal(size=channels).astype("float32"),
        rng.uniform(0.5, 2.0, size=channels).astype("float32"),
    ]


def _reference(x, weights, training, momentum=MOMENTUM, epsilon=EPSILON):
    """numpy float64: output, new moving mean and variance, and (training) the gradients of
    sum(w * y) as functions of w."""
    gamma, beta, moving_mean, moving_variance = (np.float64(w) for w in weights)
    x = np.float64(x)
    axes = tuple(range(x.ndim - 1))
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        moving_mean = moving_mean * momentum + mean * (1 - momentum)
        moving_variance = moving_variance * momentum + var * (1 - momentum)
    else:
        mean, var = moving_mean, moving_variance
    inv_std = 1 / np.sqrt(var + epsilon)
    xhat = (x - mean) * inv_std
    y = gamma * xhat + beta

    def grads(w):
        w = np.float64(w)
        if training:
            dx = gamma * inv_std * (w - w.mean(axis=axes) - xhat * (w * xhat).mean(axis=axes))
        else:
            dx = gamma * inv_std * w
        return dx, (w * xhat).sum(axis=axes), w.sum(axis=axes)

    return y, moving_mean, moving_variance, grads


def _layers(weights, **kwargs):
    keras_bn = keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON, **kwargs)
    fast_bn = FastBatchNormalization(momentum=MOMENTUM, epsilon=EPSILON, **kwargs)
    for layer in (keras_bn, fast_bn):
        layer.build(SHAPE)
        layer.set_weights(weights)
    return keras_bn, fast_bn


def _run(layer, x, training):
    """Output (float32 numpy) and the layer's weights after one call."""
    y = layer(ops.cast(x, layer.compute_dtype), training=training)
    return ops.convert_to_numpy(ops.cast(y, "float32")), [ops.convert_to_numpy(w) for w in layer.weights]


def _bf16_round(x):
    return ops.convert_to_numpy(ops.cast(ops.cast(x, "bfloat16"), "float32"))


def test_weights_are_keras_weights():
    keras_bn, fast_bn = _layers(_weights())
    assert [w.path.split("/")[-1] for w in fast_bn.weights] == [w.path.split("/")[-1] for w in keras_bn.weights]
    assert [w.shape for w in fast_bn.weights] == [w.shape for w in keras_bn.weights]
    assert [w.trainable for w in fast_bn.weights] == [w.trainable for w in keras_bn.weights]
    assert all(w.dtype == "float32" for w in fast_bn.weights)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
def test_float32_matches_numpy_and_keras(training, center, scale):
    x, weights = _data(), _weights()
    weights = [w for w, keep in zip(weights, (scale, center, True, True)) if keep]
    full = [
        weights[0] if scale else np.ones(3, "float32"),
        weights[int(scale)] if center else np.zeros(3, "float32"),
        *weights[-2:],
    ]
    expected, moving_mean, moving_variance, _ = _reference(x, full, training)
    keras_bn, fast_bn = _layers(weights, center=center, scale=scale)
    y_keras, after_keras = _run(keras_bn, x, training)
    y_fast, after_fast = _run(fast_bn, x, training)
    np.testing.assert_allclose(y_fast, expected, rtol=1e-5, atol=1e-5)
    # Keras' layer itself is off by 1.5e-5 on the channel of mean 10 and spread 0.5 on torch.
    np.testing.assert_allclose(y_fast, y_keras, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(after_fast[-2], moving_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(after_fast[-1], moving_variance, rtol=1e-6, atol=1e-6)
    for fast, keras_value in zip(after_fast, after_keras):
        np.testing.assert_allclose(fast, keras_value, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_mixed_bfloat16_matches_numpy_and_keras(training):
    keras.config.set_dtype_policy("mixed_bfloat16")
    x, weights = _data(), _weights()
    # The layer sees the input rounded to bfloat16: the reference takes the same input.
    expected, moving_mean, moving_variance, _ = _reference(_bf16_round(x), weights, training)
    keras_bn, fast_bn = _layers(weights)
    assert fast_bn.compute_dtype == "bfloat16" and fast_bn.variable_dtype == "float32"
    y_fast = fast_bn(ops.cast(x, "bfloat16"), training=training)
    assert keras.backend.standardize_dtype(y_fast.dtype) == "bfloat16"
    y_keras, after_keras = _run(keras_bn, x, training)
    y_fast = ops.convert_to_numpy(ops.cast(y_fast, "float32"))
    # A few bfloat16 roundings (2**-8 relative) of values up to ~10.
    scale = np.abs(expected).max()
    np.testing.assert_allclose(y_fast, expected, rtol=2**-6, atol=2**-6 * scale)
    np.testing.assert_allclose(y_fast, y_keras, rtol=2**-6, atol=2**-6 * scale)
    # Statistics and moving averages are float32 computations on the bfloat16 input: tight.
    after_fast = [ops.convert_to_numpy(w) for w in fast_bn.weights]
    np.testing.assert_allclose(after_fast[-2], moving_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(after_fast[-1], moving_variance, rtol=1e-5, atol=1e-5)
    for fast, keras_value in zip(after_fast, after_keras):
        np.testing.assert_allclose(fast, keras_value, rtol=1e-5, atol=1e-5)


def test_mixed_bfloat16_training_output_is_keras_output():
    """In training both layers normalise in float32 and round once to bfloat16."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    x = _data(seed=3, shape=(8, 16, 16, 3))
    keras_bn, fast_bn = _layers(_weights())
    y_keras, _ = _run(keras_bn, x, True)
    y_fast, _ = _run(fast_bn, x, True)
    # At most the neighbouring bfloat16 value: both round float32 results that differ by float32
    # rounding (~1e-6 here), which can tip a rounding either way.
    ulp = 2.0 ** (np.floor(np.log2(np.maximum(np.abs(y_keras), 1e-30))) - 7)
    assert np.all(np.abs(y_fast - y_keras) <= np.maximum(ulp, 1e-5))
    assert np.mean(y_fast == y_keras) > 0.99


def _gradients(layer, x, w, training, dtype):
    """d sum(w * layer(x)) / d(x, gamma, beta), through stateless_call (no variable updates)."""
    gamma, beta = (ops.convert_to_numpy(v) for v in layer.trainable_variables)
    moving = [v.value for v in layer.non_trainable_variables]
    w = ops.convert_to_tensor(w)

    def loss_terms(x_value, gamma_value, beta_value):
        y, _ = layer.stateless_call([gamma_value, beta_value], moving, ops.cast(x_value, dtype), training=training)
        return ops.cast(y, "float32") * w

    _, dx = value_and_grad(lambda v: loss_terms(v, gamma, beta), x)
    _, d_gamma = value_and_grad(lambda v: loss_terms(x, v, beta), gamma)
    _, d_beta = value_and_grad(lambda v: loss_terms(x, gamma, v), beta)
    return dx, d_gamma, d_beta


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_gradients_match_numpy_and_keras(training, policy):
    keras.config.set_dtype_policy(policy)
    x, weights = _data(), _weights()
    w = np.random.default_rng(2).normal(size=SHAPE).astype("float32")
    keras_bn, fast_bn = _layers(weights)
    dtype = fast_bn.compute_dtype
    x_seen = x if dtype == "float32" else _bf16_round(x)
    expected = _reference(x_seen, weights, training)[3](w)
    got_fast = _gradients(fast_bn, x, w, training, dtype)
    got_keras = _gradients(keras_bn, x, w, training, dtype)
    for name, fast, keras_value, reference in zip(("x", "gamma", "beta"), got_fast, got_keras, expected):
        scale = np.abs(reference).max()
        # float32: rounding only. bfloat16: the input gradient is rounded to bfloat16 (and the
        # upstream gradient before it); gamma's and beta's are float32 sums of bfloat16 terms.
        tolerance = 1e-5 if dtype == "float32" else 2**-6
        np.testing.assert_allclose(fast, reference, rtol=tolerance, atol=tolerance * scale, err_msg=name)
        np.testing.assert_allclose(fast, keras_value, rtol=tolerance, atol=tolerance * scale, err_msg=name)


def test_variance_of_a_channel_with_a_large_mean():
    """mean 1e3, spread 0.1: E[x^2] - E[x]^2 would cancel to noise in float32; the shift by a
    sampled mean keeps the variance to float32 precision."""
    x = _data(seed=4, shape=(8, 8, 8, 2), means=np.array([1e3, -1e3]), spreads=np.array([0.1, 0.01]))
    layer = FastBatchNormalization(momentum=0.0, epsilon=1e-8)
    y = ops.convert_to_numpy(layer(x, training=True))
    mean, variance = (ops.convert_to_numpy(v) for v in layer.non_trainable_variables)
    np.testing.assert_allclose(mean, np.float64(x).mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(variance, np.float64(x).var(axis=(0, 1, 2)), rtol=1e-3)
    np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1.0, rtol=1e-3)


def test_statistics_of_sparse_relu_channels_over_many_pixels():
    """ReLU outputs that are mostly zeros, over 3.3e4 pixels: float32 sums accumulated in
    sequence lose digits here; the moments stay within 1e-5 of float64."""
    rng = np.random.default_rng(6)
    x = np.maximum(rng.normal(size=(8, 64, 64, 4)) + np.array([-2.5, -1.0, 0.0, 3.0]), 0).astype("float32")
    x[0, 0, 0] = 5.0  # a first pixel far from every mean
    layer = FastBatchNormalization(momentum=0.0)
    y = ops.convert_to_numpy(layer(x, training=True))
    mean, variance = (ops.convert_to_numpy(v) for v in layer.non_trainable_variables)
    x64 = np.float64(x)
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(variance, x64.var(axis=(0, 1, 2)), rtol=1e-5)
    expected = (x64 - x64.mean(axis=(0, 1, 2))) / np.sqrt(x64.var(axis=(0, 1, 2)) + EPSILON)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_constant_channel_gives_beta():
    x = np.full(SHAPE, 7.0, "float32")
    layer = FastBatchNormalization(beta_initializer="ones")
    y = ops.convert_to_numpy(layer(x, training=True))
    np.testing.assert_allclose(y, 1.0, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(layer.moving_variance), 0.99, rtol=1e-6)


def test_frozen_layer_runs_in_inference_mode():
    x, weights = _data(), _weights()
    keras_bn, fast_bn = _layers(weights)
    for layer in (keras_bn, fast_bn):
        layer.trainable = False
    y_keras, after_keras = _run(keras_bn, x, True)
    y_fast, after_fast = _run(fast_bn, x, True)
    np.testing.assert_allclose(y_fast, y_keras, rtol=1e-5, atol=1e-5)
    for before, after in zip(weights, after_fast):
        np.testing.assert_array_equal(before, after)


def test_config_round_trip_and_keras_config():
    layer = FastBatchNormalization(
        momentum=0.9, epsilon=1e-5, center=False, name="bn", gamma_initializer="zeros", beta_regularizer="l2"
    )
    config = assert_config_round_trip(layer).get_config()
    keras_config = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, center=False).get_config()
    assert set(config) == set(keras_config)
    from_keras = FastBatchNormalization.from_config(keras_config)
    assert (from_keras.momentum, from_keras.epsilon, from_keras.center) == (0.9, 1e-5, False)
    for bad in ({"axis": 1}, {"renorm": True}, {"synchronized": True}):
        with pytest.raises(ValueError):
            FastBatchNormalization(**bad)


def _model(bn_class):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = bn_class(momentum=MOMENTUM, epsilon=1e-5, name="bn")(x)
    outputs = keras.layers.Conv2D(1, 1, name="logits")(x)
    return keras.Model(inputs, outputs)


def test_save_and_load_keras_file(tmp_path):
    keras.utils.set_random_seed(0)
    model = _model(FastBatchNormalization)
    model.compile(optimizer="adam", loss="mse")
    x, y = _data(shape=(10, 8, 8, 3)), np.random.default_rng(5).normal(size=(10, 8, 8, 1)).astype("float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # a partial last batch of 2
    path = tmp_path / "fast_bn.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("bn"), FastBatchNormalization)
    assert loaded.get_layer("bn").get_config() == model.get_layer("bn").get_config()
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x)))
    for saved, restored in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(saved), ops.convert_to_numpy(restored))


def test_weights_move_between_keras_and_fast_batchnorm():
    """get_weights / set_weights, layer by layer or whole models. (A .weights.h5 file does not:
    Keras keys a model's layers there by snake-cased class name, batch_normalization vs
    fast_batch_normalization.)"""
    keras.utils.set_random_seed(0)
    keras_model, fast_model = _model(keras.layers.BatchNormalization), _model(FastBatchNormalization)
    keras_model.get_layer("bn").set_weights(_weights(channels=4))
    fast_model.set_weights(keras_model.get_weights())
    keras_model.get_layer("bn").set_weights(fast_model.get_layer("bn").get_weights())
    x = _data(shape=(2, 8, 8, 3))
    np.testing.assert_allclose(
        ops.convert_to_numpy(fast_model(x)), ops.convert_to_numpy(keras_model(x)), rtol=1e-5, atol=1e-5
    )
    # One training step from the same weights: same loss, same moving statistics.
    y = np.zeros((2, 8, 8, 1), "float32")
    losses = []
    for model in (keras_model, fast_model):
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        losses.append(float(model.train_on_batch(x, y)))
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    for keras_weight, fast_weight in zip(keras_model.weights, fast_model.weights):
        np.testing.assert_allclose(
            ops.convert_to_numpy(fast_weight), ops.convert_to_numpy(keras_weight), rtol=1e-4, atol=1e-5
        )
