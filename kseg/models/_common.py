"""Pieces shared by every kseg model: the input, its size check, the optional colour-constancy
preprocessing, the logit head, and pretrained encoders' BatchNormalization momentum."""

from __future__ import annotations

import re

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


def bilinear_upsampling(factor: int, name: str) -> layers.UpSampling2D:
    """``UpSampling2D(factor, interpolation="bilinear")`` computed in float32 whatever the policy.

    Under mixed bfloat16 TensorFlow's bilinear resize returns its gradient in float32, and where
    the resized map also feeds another layer XLA refuses to add that gradient to the other's
    bfloat16 one ("Seen floating point types of different precisions": every decoder with a
    bilinear up-sampling, under ``--jit-compile`` on a GPU). In float32 the cast before the resize
    hands a bfloat16 gradient back, and the next layer casts the output down again."""
    return layers.UpSampling2D(factor, interpolation="bilinear", dtype="float32", name=name)


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


def _auto_name(class_name: str) -> str:
    """The name Keras gives an unnamed layer of class ``class_name`` before its counter: its snake
    case as ``keras.src.utils.naming.to_snake_case`` writes it ("ReLU" -> "re_lu", "Conv2D" -> "conv2d")."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def rename_auto_named(model: keras.Model, prefix: str) -> None:
    """Keras names a layer created without a name by a session-wide counter ("normalization_3",
    "re_lu_14"), so the same encoder built twice in one process would get other names, and weights
    matched by layer name (``--init-from``) would miss them. Those layers, the bare math ops
    (``x + 3.0``: MobileNetV3's hard sigmoid) and a nested backbone's input get the encoder's
    name and their rank in the model instead."""
    counts: dict[str, int] = {}
    for operation in model.operations:
        snake = _auto_name(type(operation).__name__)
        if re.fullmatch(rf"{re.escape(snake)}(_\d+)?", operation.name):
            index = counts.get(snake, 0)
            counts[snake] = index + 1
            operation.name = f"{prefix}_{snake}" + (f"_{index}" if index else "")
