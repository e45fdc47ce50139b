"""Pieces shared by every kseg model: the input, its size check, the optional colour-constancy
preprocessing, the logit head, and pretrained encoders' BatchNormalization momentum."""

from __future__ import annotations

import keras
from keras import layers

from kseg._errors import invalid_value
from kseg.layers import ShadesOfGray


def check_input_shape(input_shape: tuple[int, int, int], total_stride: int, stride_label: str) -> None:
    """Raises unless ``input_shape`` is (height, width, channels) with both sides divisible by
    ``total_stride``; ``stride_label`` says where that stride comes from ("2**depth = 16 (depth=4)")."""
    if len(input_shape) != 3:
        raise invalid_value("input_shape", "(height, width, channels)", input_shape)
    for side, label in zip(input_shape[:2], ("height", "width")):
        if side is None or side % total_stride:
            raise ValueError(
                f"Expected an input {label} divisible by {stride_label}, e.g. "
                f"{max(total_stride, (side or 0) // total_stride * total_stride)}. Received: {label} {side}"
            )


def segmentation_input(input_shape: tuple[int, int, int]) -> keras.KerasTensor:
    """The model input, named "image"."""
    return keras.Input(shape=input_shape, name="image")


def colour_constancy_stem(inputs: keras.KerasTensor, colour_constancy: bool) -> keras.KerasTensor:
    """``inputs`` as they are, or through a ``ShadesOfGray`` layer named "shades_of_gray" when
    ``colour_constancy`` is true, so a saved model normalises the illuminant by itself."""
    if not colour_constancy:
        return inputs
    return ShadesOfGray(name="shades_of_gray")(inputs)


def logit_head(x) -> keras.KerasTensor:
    """1x1 convolution to one channel of logits, computed in float32 whatever the policy, so
    losses and thresholds see full-precision values under mixed precision."""
    return layers.Conv2D(1, 1, dtype="float32", name="logits")(x)


def set_batch_norm_momentum(model: keras.Model, momentum: float) -> None:
    """Sets a pretrained encoder's BatchNormalization momentum to kseg's. The applications' own
    (0.99; 0.999 in MobileNetV2) lets the moving statistics move ~0.1-1% a step: on ~13 steps per
    epoch of 100 images they stay near their initial values, and a model trained from random
    weights then predicts nothing in inference mode (validation IoU 0.0 through 32 epochs while
    training IoU reached 0.77). kseg's blocks use 0.9 for that reason; the encoders get the same."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
