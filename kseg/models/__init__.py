"""Segmentation models as an encoder plus a decoder, by name.

``build("unet")`` is the seed U-Net; ``build("fpn:efficientnetv2b0")`` (or ``build("fpn",
encoder="efficientnetv2b0")``) puts the FPN decoder on a ``keras.applications`` EfficientNetV2-B0.
``available()`` lists the decoders, ``encoders()`` the encoders. The seed networks keep their
names: "segnet", "unet" and "unet2" are those decoders on kseg's encoder of the same name.

Add an architecture: a module in ``backbones/`` (encoders) or ``decoders/`` that defines its
:class:`~kseg.models.base.Encoder` or :class:`~kseg.models.base.Decoder` entries, and one line in
that package's registry.
"""

from __future__ import annotations

import keras

from kseg._lazy import loader
from kseg.models import backbones as _encoders
from kseg.models import decoders as _decoders
from kseg.models._common import check_input_shape, colour_constancy_stem, logit_head, segmentation_input
from kseg.models.base import Decoder, Encoder, ModelOptions
from kseg.models.segmentation_model import SegmentationModel, as_segmentation_model

# Modules no builder needs, loaded on first use: the cost count and deep supervision's heads.
__getattr__, __dir__ = loader(__name__, {name: f"kseg.models.{name}" for name in ("cost", "deep_supervision")})

# The grid's default models: the original notebook's three networks.
SEED_MODELS = ("segnet", "unet", "unet2")


def available() -> tuple[str, ...]:
    """The decoder names ``build`` accepts (alone, or as ``DECODER:ENCODER``)."""
    return tuple(_decoders.REGISTRY)


def encoders() -> tuple[str, ...]:
    """The encoder names ``build`` accepts."""
    return tuple(_encoders.REGISTRY)


def resolve(name: str, encoder: str | None = None) -> tuple[Decoder, Encoder]:
    """The decoder and encoder that ``name`` ("DECODER" or "DECODER:ENCODER") and ``encoder``
    name; unknown names raise with the choices."""
    decoder_name, _, named_encoder = name.lower().partition(":")
    if named_encoder and encoder and named_encoder != encoder.lower():
        raise ValueError(f"Expected one encoder. Received: name={name!r} and encoder={encoder!r}")
    decoder = _decoders.get(decoder_name)
    encoder_entry = _encoders.get(named_encoder or encoder or decoder.default_encoder)
    if not decoder.pairs_with(encoder_entry.name):
        raise ValueError(
            f"The {decoder.name} decoder pairs only with the {' or '.join(map(repr, decoder.encoders))} encoder. "
            f"Received: {decoder.name}:{encoder_entry.name}"
        )
    return decoder, encoder_entry


def canonical_name(name: str, encoder: str | None = None) -> str:
    """One spelling per model: a seed network is its decoder's name ("unet", also for
    "unet:unet"); every other model is "DECODER:ENCODER"."""
    decoder, encoder_entry = resolve(name, encoder)
    return decoder.name if encoder_entry.name == decoder.name else f"{decoder.name}:{encoder_entry.name}"


def total_stride(name: str, depth: int = 4, encoder: str | None = None) -> int:
    """What the model's input height and width must divide by."""
    return resolve(name, encoder)[1].total_stride(ModelOptions(depth=depth))


def build(
    name: str,
    input_shape: tuple[int, int, int] = (256, 256, 3),
    *,
    encoder: str | None = None,
    encoder_weights: str | None = None,
    base_filters: int = 64,
    depth: int = 4,
    bn_momentum: float = 0.9,
    colour_constancy: bool = False,
    batch_norm: str = "keras",
    model_name: str | None = None,
) -> keras.Model:
    """Builds ``image -> [Shades of Gray] -> encoder -> decoder -> 1x1 logit head``.

    Args:
        name: a decoder (``available()``), or "DECODER:ENCODER".
        input_shape: (height, width, channels); both sides divisible by the encoder's total
            stride (2**depth for kseg's encoders, 32 for keras.applications').
        encoder: an encoder (``encoders()``) when ``name`` names none; default: the decoder's
            own ("unet" for unet, attention_unet and unetpp) or resnet50 for fpn and deeplabv3plus. The
            ``hub_*`` encoders need the ``kseg[hub]`` extra (keras-hub).
        encoder_weights: None, "imagenet" (downloads, once) or a local weights file, for a
            keras.applications or keras-hub encoder; a keras-hub preset folder for the latter.
        base_filters, depth, bn_momentum, batch_norm: see :class:`kseg.models.base.ModelOptions`.
        colour_constancy: a ``kseg.layers.ShadesOfGray`` layer first (no weights).
        model_name: the Keras model's name; default the canonical name with "_" for ":".

    Returns:
        A :class:`~kseg.models.SegmentationModel` (a functional ``keras.Model``) mapping images
        (B, H, W, C) in [0, 1] to logits (B, H, W, 1).

    >>> build("unet", input_shape=(64, 64, 3), base_filters=8).output.shape
    (None, 64, 64, 1)
    """
    decoder, encoder_entry = resolve(name, encoder)
    options = _options(encoder_entry, input_shape, base_filters, depth, bn_momentum, batch_norm, encoder_weights)
    inputs = segmentation_input(input_shape)
    features = encoder_entry.build(colour_constancy_stem(inputs, colour_constancy), options)
    outputs = logit_head(decoder.build(features, options))
    architecture = canonical_name(decoder.name, encoder_entry.name)
    name = model_name or architecture.replace(":", "_")
    return SegmentationModel(inputs, outputs, name=name, architecture=architecture)


def build_encoder(
    name: str,
    input_shape: tuple[int, int, int] = (256, 256, 3),
    *,
    encoder: str | None = None,
    encoder_weights: str | None = None,
    base_filters: int = 64,
    depth: int = 4,
    bn_momentum: float = 0.9,
    batch_norm: str = "keras",
) -> keras.Model:
    """An encoder alone, as keras-hub's backbones give it: a model from images to
    ``{"P{k}": feature map at stride 2**k}`` (its ``pyramid_outputs``), whose layers carry the
    names they have inside ``build`` (so their weights match by name).

    Args:
        name: an encoder (``encoders()``: ``build_encoder("mobilenetv2")``), or a model as
            ``build`` takes it ("DECODER:ENCODER", or a decoder: its default encoder).
        encoder: the encoder, where ``name`` is a decoder that names none.
        input_shape, encoder_weights, base_filters, depth, bn_momentum, batch_norm: as ``build``.

    >>> sorted(build_encoder("unet", input_shape=(64, 64, 3), base_filters=8).output)
    ['P0', 'P1', 'P2', 'P3', 'P4']
    >>> build_encoder("mobilenetv2", input_shape=(64, 64, 3)).name
    'mobilenetv2_encoder'
    """
    if ":" not in name and encoder is None and name.lower() in _encoders.REGISTRY:
        encoder_entry = _encoders.get(name)
    else:
        _, encoder_entry = resolve(name, encoder)
    options = _options(encoder_entry, input_shape, base_filters, depth, bn_momentum, batch_norm, encoder_weights)
    inputs = segmentation_input(input_shape)
    features = encoder_entry.build(inputs, options)
    return keras.Model(inputs, features.pyramid_outputs, name=f"{encoder_entry.name}_encoder")


def check_encoder_weights(encoder_entry: Encoder, encoder_weights: str | None) -> None:
    """Raises ValueError where ``encoder_weights`` are given for an encoder with no published
    weights (kseg's own: they start from random weights)."""
    if encoder_weights is not None and not encoder_entry.pretrained:
        raise ValueError(
            f"encoder_weights applies to keras.applications and keras-hub encoders; the "
            f"{encoder_entry.name} encoder starts from random weights (use --init-from for a kseg model's weights). "
            f"Received: encoder_weights={encoder_weights!r}"
        )


def _options(encoder_entry: Encoder, input_shape, base_filters, depth, bn_momentum, batch_norm, encoder_weights):
    """The builders' options, once the encoder is installed and accepts the weights and the input's size."""
    encoder_entry.check_installed()
    options = ModelOptions(base_filters, depth, bn_momentum, batch_norm, encoder_weights)
    check_encoder_weights(encoder_entry, encoder_weights)
    stride = encoder_entry.total_stride(options)
    if not encoder_entry.pretrained and stride == 2**depth:  # a light network has its own fixed stride
        stride_label = f"2**depth = {stride} (depth={depth})"
    else:
        stride_label = f"{stride} (the {encoder_entry.name} encoder's total stride)"
    check_input_shape(input_shape, stride, stride_label)
    return options


def segnet(input_shape=(256, 256, 3), base_filters=64, depth=4, bn_momentum=0.9, name="segnet", **kwargs):
    """SegNet: ``build("segnet", ...)`` (kseg's argmax-pooling encoder, the unpooling decoder)."""
    return build(
        "segnet",
        input_shape,
        base_filters=base_filters,
        depth=depth,
        bn_momentum=bn_momentum,
        model_name=name,
        **kwargs,
    )


def unet(input_shape=(256, 256, 3), base_filters=64, depth=4, bn_momentum=0.9, name="unet", **kwargs):
    """U-Net: ``build("unet", ...)`` (max-pooling encoder, nearest up-sampling decoder)."""
    return build(
        "unet", input_shape, base_filters=base_filters, depth=depth, bn_momentum=bn_momentum, model_name=name, **kwargs
    )


def unet2(input_shape=(256, 256, 3), base_filters=64, depth=4, bn_momentum=0.9, name="unet2", **kwargs):
    """U-Net-2: ``build("unet2", ...)`` (strided-conv encoder, transposed-conv decoder)."""
    return build(
        "unet2", input_shape, base_filters=base_filters, depth=depth, bn_momentum=bn_momentum, model_name=name, **kwargs
    )


__all__ = [
    "cost",
    "deep_supervision",
    "SEED_MODELS",
    "SegmentationModel",
    "as_segmentation_model",
    "available",
    "encoders",
    "resolve",
    "canonical_name",
    "total_stride",
    "build",
    "build_encoder",
    "check_encoder_weights",
    "segnet",
    "unet",
    "unet2",
]
