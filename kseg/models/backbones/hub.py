"""Encoders from keras-hub's backbones (the optional ``kseg[hub]`` extra), through their
``pyramid_outputs``.

Each row names the ``keras_hub.models`` backbone class, the configuration of its ImageNet preset
(so that ``encoder_weights=None`` builds the same network with random weights), the preset itself
and the preprocessing its weights expect (:class:`kseg.layers.EncoderPreprocessing`, inside the
model). The backbone sits in kseg's model as one nested functional model from the preprocessed
image to its pyramid levels, named after the encoder; these backbones are made of Keras's own
layers, so a saved kseg model loads without keras-hub.

Weights: None (random; what tests and CI use), "imagenet" (keras-hub downloads the row's preset
from Kaggle into its cache on first use), the path of a local preset folder (what
``Backbone.save_to_preset`` writes; the offline route) or of a ``.weights.h5`` file saved from
the backbone.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import keras

from kseg.layers import EncoderPreprocessing
from kseg.models._common import rename_auto_named, set_batch_norm_momentum
from kseg.models.base import Encoder, Features, ModelOptions

INSTALL_HINT = 'pip install "kseg[hub]" (keras-hub)'
FAMILY_PREFIX = "keras-hub"  # every row's family starts with it


@dataclasses.dataclass(frozen=True)
class _HubBackbone:
    name: str
    backbone_class: str  # the keras_hub.models attribute
    preset: str  # what encoder_weights="imagenet" loads
    preprocessing: str  # an EncoderPreprocessing mode
    config: dict  # the preset's backbone configuration, for random weights
    family: str


_BACKBONES = [
    _HubBackbone(
        "hub_resnet18",
        "ResNetBackbone",
        "resnet_18_imagenet",
        "torch",
        dict(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 128, 256, 512],
            stackwise_num_blocks=[2, 2, 2, 2],
            stackwise_num_strides=[1, 2, 2, 2],
            block_type="basic_block",
            use_pre_activation=False,
        ),
        f"{FAMILY_PREFIX} ResNet",
    ),
]


def keras_hub_module():
    """keras_hub, or an ImportError that says how to install it."""
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(f"keras-hub encoders need keras-hub: {INSTALL_HINT}. ({error})") from error
    return keras_hub


def _backbone(spec: _HubBackbone, image_shape: tuple, weights: str | None) -> keras.Model:
    backbone_class = getattr(keras_hub_module().models, spec.backbone_class)
    if weights is None:
        return backbone_class(**spec.config, image_shape=image_shape)
    # A preset keeps the dtype it was saved with; the run's policy (mixed_bfloat16) comes first.
    overrides = dict(image_shape=image_shape, dtype=keras.config.dtype_policy().name)
    if weights == "imagenet":
        try:
            backbone = backbone_class.from_preset(spec.preset, **overrides)
        except Exception as error:
            raise RuntimeError(
                f"Could not get the ImageNet weights of the {spec.name} encoder: "
                f"keras_hub.models.{spec.backbone_class}.from_preset({spec.preset!r}) tried to download them from "
                f"Kaggle and failed ({error}). Offline: on a machine with network run "
                f"keras_hub.models.{spec.backbone_class}.from_preset({spec.preset!r}).save_to_preset('FOLDER'), copy "
                f"FOLDER here and pass its path as encoder_weights (--encoder-weights FOLDER)."
            ) from error
        return _same_network(spec, backbone, spec.preset)
    if os.path.isdir(weights):
        try:
            return _same_network(spec, backbone_class.from_preset(weights, **overrides), weights)
        except ValueError as error:  # keras-hub names the preset's class when it is another backbone's
            raise ValueError(f"encoder_weights for the {spec.name} encoder: {error}") from error
    if os.path.isfile(weights):
        backbone = backbone_class(**spec.config, image_shape=image_shape)
        backbone.load_weights(weights)
        return backbone
    raise FileNotFoundError(
        f"encoder_weights for the {spec.name} encoder must be None, 'imagenet', a keras-hub preset folder or a "
        f".weights.h5 file. Received: encoder_weights={weights!r} (no such file or folder)"
    )


def _same_network(spec: _HubBackbone, backbone: keras.Model, source: str) -> keras.Model:
    """``backbone``, once its configuration is the row's: a preset of the same class but another
    depth (resnet_50 for hub_resnet18) would otherwise train under the wrong name."""
    config = {key: list(v) if isinstance(v, tuple) else v for key, v in backbone.get_config().items()}
    differs = {key: config.get(key) for key, value in spec.config.items() if config.get(key) != value}
    if differs:
        raise ValueError(
            f"the preset {source!r} is another {spec.backbone_class}: {differs}; the {spec.name} encoder has "
            f"{ {key: spec.config[key] for key in differs} }"
        )
    return backbone


def _build(image, options: ModelOptions, spec: _HubBackbone) -> Features:
    x = EncoderPreprocessing(spec.preprocessing, name="encoder_preprocessing")(image)
    backbone = _backbone(spec, tuple(image.shape[1:]), options.encoder_weights)
    set_batch_norm_momentum(backbone, options.bn_momentum)
    # The backbone's own class would need keras-hub to load; its graph up to the levels does not.
    pyramid = keras.Model(backbone.inputs, backbone.pyramid_outputs, name=spec.name)
    rename_auto_named(pyramid, spec.name)
    levels = pyramid(x)
    return Features({key: levels[key] for key in sorted(levels)})


ENCODERS = [
    Encoder(
        spec.name,
        functools.partial(_build, spec=spec),
        lambda options: 32,
        spec.family,
        keras_hub_module,
        weights_from="keras-hub",
    )
    for spec in _BACKBONES
]


def is_hub_encoder(encoder: Encoder) -> bool:
    """Whether ``encoder`` is one of these (its weights may be a keras-hub preset folder)."""
    return encoder.weights_from == "keras-hub"


__all__ = ["ENCODERS", "INSTALL_HINT", "keras_hub_module", "is_hub_encoder"]
