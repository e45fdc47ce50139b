import keras
import numpy as np
import pytest

from kseg.layers import EncoderPreprocessing, MaxPoolingWithArgmax2D, MaxUnpooling2D
from tests.backend_utils import value_and_grad
from tests.harness import assert_layer_round_trip


def _distinct_values(shape, seed=0):
    """Random values with no ties (a permutation), so argmax is unique everywhere."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(np.prod(shape)).reshape(shape) / np.prod(shape)).astype("float32")


def _numpy_pool_unpool(x, p=2):
    """Reference: loop over windows, keep the max at its place, zero the rest."""
    out = np.zeros_like(x)
    b, h, w, c = x.shape
    for i in range(0, h, p):
        for j in range(0, w, p):
            window = x[:, i : i + p, j : j + p, :].reshape(b, p * p, c)
            k = window.argmax(axis=1)
            for bb in range(b):
                for cc in range(c):
                    r, s = divmod(k[bb, cc], p)
                    out[bb, i + r, j + s, cc] = x[bb, i + r, j + s, cc]
    return out


def _pool_unpool(x, p=2, training=False):
    pooled, positions = MaxPoolingWithArgmax2D(p)(x)
    return MaxUnpooling2D(p)([pooled, positions], training=training)


# MaxUnpooling2D computes the same values two ways, one for training and one for inference.
TRAINING = pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])


@TRAINING
@pytest.mark.parametrize("pool_size", [2, 3])
def test_pool_unpool_matches_numpy_reference(pool_size, training):
    x = _distinct_values((2, 6, 6, 3))
    pooled, positions = MaxPoolingWithArgmax2D(pool_size)(x)
    expected_pooled = x.reshape(2, 6 // pool_size, pool_size, 6 // pool_size, pool_size, 3).max(axis=(2, 4))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(pooled), expected_pooled)
    assert keras.ops.convert_to_numpy(positions).dtype == np.int32
    unpooled = MaxUnpooling2D(pool_size)([pooled, positions], training=training)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(unpooled), _numpy_pool_unpool(x, pool_size))


@TRAINING
def test_pool_unpool_matches_pytorch_maxunpool2d(training):
    torch = pytest.importorskip("torch", reason="torch not installed: PyTorch reference unavailable")
    x = _distinct_values((2, 8, 12, 5), seed=1)
    x_nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    pooled, indices = torch.nn.MaxPool2d(2, return_indices=True)(x_nchw)
    expected = torch.nn.MaxUnpool2d(2)(pooled, indices).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(_pool_unpool(x, training=training)), expected)


@TRAINING
def test_ties_give_the_value_to_exactly_one_position(training):
    x = np.ones((1, 4, 4, 2), "float32")
    out = keras.ops.convert_to_numpy(_pool_unpool(x, training=training))
    per_window = out.reshape(1, 2, 2, 2, 2, 2).sum(axis=(2, 4))
    np.testing.assert_array_equal(per_window, np.ones((1, 2, 2, 2)))
    assert np.count_nonzero(out) == 2 * 2 * 2


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_positions_are_numpys_argmax_on_tied_values(dtype):
    """Values from {0, 1, 2}: most windows hold ties; numpy's argmax picks the first maximum."""
    x = np.random.default_rng(3).integers(0, 3, size=(2, 6, 8, 3)).astype("float32")
    windows = x.reshape(2, 3, 2, 4, 2, 3).transpose(0, 1, 3, 5, 2, 4).reshape(2, 3, 4, 3, 4)
    _, positions = MaxPoolingWithArgmax2D()(keras.ops.cast(x, dtype))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(positions), windows.argmax(-1))


def test_a_nan_window_still_gets_a_valid_position():
    x = np.zeros((1, 2, 2, 1), "float32")
    x[0, 1, 1, 0] = np.nan
    _, positions = MaxPoolingWithArgmax2D()(x)
    assert 0 <= int(keras.ops.convert_to_numpy(positions).item()) < 4


@TRAINING
def test_gradient_reaches_only_the_max_positions(training):
    x = _distinct_values((1, 4, 4, 2), seed=2)
    _, grad = value_and_grad(lambda t: _pool_unpool(t, training=training), x)
    expected = (_numpy_pool_unpool(x) != 0).astype("float32")
    np.testing.assert_array_equal(grad, expected)


def test_static_shapes_and_dtypes_in_functional_model():
    inputs = keras.Input((8, 16, 4))
    pooled, positions = MaxPoolingWithArgmax2D(name="pool")(inputs)
    assert pooled.shape == (None, 4, 8, 4) and positions.shape == (None, 4, 8, 4)
    assert positions.dtype == "int32"
    out = MaxUnpooling2D(name="unpool")([pooled, positions])
    assert out.shape == (None, 8, 16, 4)


def test_indivisible_input_raises():
    with pytest.raises(ValueError, match="not divisible by pool_size 2"):
        MaxPoolingWithArgmax2D()(np.zeros((1, 5, 4, 1), "float32"))


@pytest.mark.parametrize("layer_cls", [MaxPoolingWithArgmax2D, MaxUnpooling2D])
def test_layers_serialize(layer_cls):
    layer = layer_cls(pool_size=3, name="x")
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"] == f"kseg>{layer_cls.__name__}"
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is layer_cls and restored.pool_size == 3


def test_model_with_unpooling_round_trips_through_keras_file(tmp_path):
    inputs = keras.Input((4, 4, 2))
    pooled, positions = MaxPoolingWithArgmax2D()(inputs)
    model = keras.Model(inputs, MaxUnpooling2D()([pooled * 2.0, positions]))
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    x = _distinct_values((3, 4, 4, 2))
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))


# ----- EncoderPreprocessing -------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, reference",
    [
        ("tf", keras.applications.mobilenet_v2.preprocess_input),
        ("torch", keras.applications.densenet.preprocess_input),
        ("caffe", keras.applications.resnet50.preprocess_input),
        ("pixels", lambda pixels: pixels),
    ],
)
def test_encoder_preprocessing_equals_keras_applications_own(mode, reference):
    images = np.random.default_rng(0).random((2, 4, 4, 3), dtype="float32")  # kseg's [0, 1]
    expected = np.asarray(reference(images * 255.0))  # keras.applications' functions take [0, 255]
    got = keras.ops.convert_to_numpy(EncoderPreprocessing(mode)(images))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_encoder_preprocessing_round_trip_and_unknown_mode(tmp_path):
    images = np.random.default_rng(1).random((1, 4, 4, 3), dtype="float32")
    assert_layer_round_trip(lambda: EncoderPreprocessing("caffe"), images, tmp_path, atol=1e-6)
    with pytest.raises(ValueError, match="Unknown mode 'bgr'. Expected one of: pixels, tf, torch, caffe"):
        EncoderPreprocessing("bgr")
