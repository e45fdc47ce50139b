"""kseg.models.cost against hand-computed counts, one layer kind at a time. (The seed networks'
totals are held against torch's own FlopCounterMode in test_bench.)"""

import keras
import pytest

from kseg.models import cost


def _one_layer(layer, shape=(8, 8, 5)) -> keras.Model:
    image = keras.Input(shape)
    return keras.Model(image, layer(image))


@pytest.mark.backend_independent  # static shapes
@pytest.mark.parametrize(
    "layer, macs",
    [
        # 8*8 outputs x 2 channels x (5 in x 3*3); stride and padding change the outputs only.
        (keras.layers.Conv2D(2, 3, padding="same"), 8 * 8 * 2 * 5 * 9),
        (keras.layers.Conv2D(2, 3, strides=2), 3 * 3 * 2 * 5 * 9),
        # grouped: each output sees in/groups channels
        (keras.layers.Conv2D(4, 1, groups=1), 8 * 8 * 4 * 5),
        # transposed: 8*8*5 inputs x 3 out x 2*2 (torch's convention)
        (keras.layers.Conv2DTranspose(3, 2, strides=2), 8 * 8 * 5 * 3 * 4),
        # depthwise: one 3*3 filter per channel and output pixel
        (keras.layers.DepthwiseConv2D(3, padding="same"), 8 * 8 * 5 * 9),
        # separable: the depthwise part, then a 1x1 from 5 to 7 channels
        (keras.layers.SeparableConv2D(7, 3, padding="same"), 8 * 8 * 5 * 9 + 8 * 8 * 7 * 5),
        # Dense on every pixel (a token MLP): 64 positions x 5 in x 6 out
        (keras.layers.Dense(6), 8 * 8 * 5 * 6),
        (keras.layers.BatchNormalization(), 0),
        (keras.layers.ReLU(), 0),
    ],
)
def test_each_layer_kind_counts_its_multiply_accumulates(layer, macs):
    model = _one_layer(layer)
    assert cost.forward_macs(model) == macs
    assert cost.forward_gflops(model) == pytest.approx(2 * macs / 1e9)


@pytest.mark.backend_independent
def test_grouped_convolution_divides_by_its_groups():
    model = _one_layer(keras.layers.Conv2D(4, 3, padding="same", groups=2), (8, 8, 6))
    assert cost.forward_macs(model) == 8 * 8 * 4 * (6 // 2) * 9


@pytest.mark.backend_independent
def test_nested_models_are_counted_inside_and_parameters_split_trainable():
    image = keras.Input((8, 8, 3))
    inner = keras.Sequential([keras.layers.Conv2D(2, 1), keras.layers.BatchNormalization()], name="inner")
    model = keras.Model(image, inner(image))
    assert cost.forward_macs(model) == 8 * 8 * 2 * 3
    # conv 3*2 + 2 bias; BN gamma, beta (trainable) + moving mean, variance
    assert cost.trainable_parameter_count(model) == 8 + 4
    assert cost.parameter_count(model) == 8 + 8


@pytest.mark.backend_independent
def test_a_shared_layer_costs_each_call_and_conv1d_counts():
    """thop and ptflops count a module called twice twice (MALUNet's spatial attention
    convolution runs on five maps): a Conv2D on an 8x8 and a 4x4 map costs both calls."""
    big, small = keras.Input((8, 8, 2)), keras.Input((4, 4, 2))
    shared = keras.layers.Conv2D(1, 3, padding="same")
    model = keras.Model([big, small], [shared(big), shared(small)])
    assert cost.forward_macs(model) == (8 * 8 + 4 * 4) * 1 * 2 * 9
    # Conv1D: 10 outputs x 3 channels x (4 in x kernel 3)
    assert cost.forward_macs(_one_layer(keras.layers.Conv1D(3, 3, padding="same"), (10, 4))) == 10 * 3 * 4 * 3
