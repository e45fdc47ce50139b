"""Encoders from ``keras.applications``, which ships with Keras: one table row per encoder.

Each row names the application, the preprocessing its ImageNet weights expect
(:class:`kseg.layers.EncoderPreprocessing`, inside the model) and the layer whose output is
each pyramid level ``P{k}`` (stride ``2**k``): the last map at that stride, as keras-hub's
backbones and segmentation_models pick them. Only the layers up to the deepest level a decoder
uses end up in the model.

Weights: None (random; what tests and CI use), "imagenet" (Keras downloads the file to
``$KERAS_HOME/models`` on first use, ~/.keras/models by default) or the path of a local file of
the application's own weights (``*_notop.h5``, or a ``.weights.h5`` saved from it).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import keras

from kseg.layers import EncoderPreprocessing
from kseg.models._common import rename_auto_named, set_batch_norm_momentum
from kseg.models.base import Encoder, Features, ModelOptions


@dataclasses.dataclass(frozen=True)
class _Application:
    name: str
    constructor: str  # the keras.applications attribute
    preprocessing: str  # an EncoderPreprocessing mode
    levels: dict[int, str]  # k -> the layer whose output is P{k}
    family: str
    options: tuple = ()  # constructor keywords beyond include_top, weights and input_tensor


_APPLICATIONS = [
    _Application(
        "mobilenetv2",
        "MobileNetV2",
        "tf",
        {
            1: "block_1_expand_relu",
            2: "block_3_expand_relu",
            3: "block_6_expand_relu",
            4: "block_13_expand_relu",
            5: "out_relu",
        },
        "MobileNet",
    ),
    _Application(
        "efficientnetv2b0",
        "EfficientNetV2B0",
        "torch",
        {1: "block1a_project_activation", 2: "block2b_add", 3: "block3b_add", 4: "block5e_add", 5: "top_activation"},
        "EfficientNet",
        (("include_preprocessing", False),),
    ),
    _Application(
        "resnet50",
        "ResNet50",
        "caffe",
        {1: "conv1_relu", 2: "conv2_block3_out", 3: "conv3_block4_out", 4: "conv4_block6_out", 5: "conv5_block3_out"},
        "ResNet",
    ),
    _Application(
        "densenet121",
        "DenseNet121",
        "torch",
        {1: "conv1_relu", 2: "pool2_relu", 3: "pool3_relu", 4: "pool4_relu", 5: "relu"},
        "DenseNet",
    ),
    _Application(
        "convnexttiny",
        "ConvNeXtTiny",
        "torch",
        {
            2: "convnext_tiny_stage_0_block_2_identity",
            3: "convnext_tiny_stage_1_block_2_identity",
            4: "convnext_tiny_stage_2_block_8_identity",
            5: "convnext_tiny_stage_3_block_2_identity",
        },
        "ConvNeXt",
        (("include_preprocessing", False),),
    ),
    _Application(  # its unnamed ReLU and Activation layers get the encoder's name (rename_auto_named)
        "mobilenetv3small",
        "MobileNetV3Small",
        "tf",
        {
            1: "mobilenetv3small_activation",
            2: "mobilenetv3small_re_lu_2",
            3: "mobilenetv3small_activation_1",
            4: "mobilenetv3small_activation_11",
            5: "mobilenetv3small_activation_17",
        },
        "MobileNet",
        (("include_preprocessing", False),),
    ),
]


def _keras_home() -> str:
    return os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))


def _load_application(spec: _Application, x, weights: str | None) -> keras.Model:
    constructor = getattr(keras.applications, spec.constructor)
    if weights not in (None, "imagenet") and not os.path.isfile(weights):
        raise FileNotFoundError(
            f"encoder_weights for the {spec.name} encoder must be None, 'imagenet' or the path of a weights file. "
            f"Received: encoder_weights={weights!r} (no such file)"
        )
    try:
        return constructor(include_top=False, weights=weights, input_tensor=x, **dict(spec.options))
    except Exception as error:
        if weights != "imagenet":
            raise
        raise RuntimeError(
            f"Could not get the ImageNet weights of the {spec.name} encoder: "
            f"keras.applications.{spec.constructor}(include_top=False, weights='imagenet') tried to download them "
            f"into {_keras_home()}/models and failed ({error}). Offline: run that call on a machine with network, "
            f"then copy the file it wrote (…_notop.h5) into {_keras_home()}/models here, or pass its path as "
            f"encoder_weights (--encoder-weights PATH)."
        ) from error


def _build(image, options: ModelOptions, spec: _Application) -> Features:
    x = EncoderPreprocessing(spec.preprocessing, name="encoder_preprocessing")(image)
    application = _load_application(spec, x, options.encoder_weights)
    rename_auto_named(application, spec.name)
    set_batch_norm_momentum(application, options.bn_momentum)
    return Features({f"P{k}": application.get_layer(name).output for k, name in spec.levels.items()})


ENCODERS = [
    Encoder(
        spec.name,
        functools.partial(_build, spec=spec),
        lambda options: 32,
        spec.family,
        weights_from="keras.applications",
    )
    for spec in _APPLICATIONS
]

__all__ = ["ENCODERS"]
