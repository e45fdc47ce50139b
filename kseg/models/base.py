"""The two halves every kseg model is made of, and what passes between them.

An encoder turns the (preprocessed) image into feature maps by level, keras-hub's
``pyramid_outputs``: ``"P{k}"`` is the map at stride ``2**k``. A decoder turns those maps into
one channel of logits at the input's resolution. Both act on Keras tensors, not on nested models,
so a model is one flat functional graph whose layer names are those of the seed networks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import keras


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """The knobs a builder may read; each encoder and decoder documents the ones it uses.

    Args:
        base_filters: width of kseg's own encoders' first level; decoders scale their widths by it.
        depth: number of down-sampling levels of kseg's own encoders (pretrained encoders have
            their fixed five).
        bn_momentum: BatchNormalization momentum of kseg's blocks (0.9, PyTorch's default).
        batch_norm: "keras" or "fast" (``kseg.layers.FastBatchNormalization``).
        encoder_weights: a pretrained encoder's weights: None (random), "imagenet" (the
            library's download) or the path of a local weights file.
    """

    base_filters: int = 64
    depth: int = 4
    bn_momentum: float = 0.9
    batch_norm: str = "keras"
    encoder_weights: str | None = None


@dataclasses.dataclass
class Features:
    """An encoder's output.

    Attributes:
        pyramid_outputs: ``{"P{k}": map at stride 2**k}``; an encoder gives the levels it has
            (ConvNeXt has no P1), the deepest last.
        pooling_positions: SegNet's max-pooling positions, shallowest level first; None for
            every other encoder.
        extra: maps a network's own decoder needs beside the pyramid, by name (a light
            network's stage output that shares a stride with a deeper one); empty for most.
    """

    pyramid_outputs: dict[str, Any]
    pooling_positions: list | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def level(self, k: int):
        return self.pyramid_outputs.get(f"P{k}")

    @property
    def levels(self) -> list[int]:
        return sorted(int(key[1:]) for key in self.pyramid_outputs)


@dataclasses.dataclass(frozen=True)
class Encoder:
    """An entry of the encoder registry.

    Attributes:
        name: the registry name (``--models DECODER:ENCODER``).
        build: ``build(image, options) -> Features``.
        total_stride: ``total_stride(options)``: what the input's height and width must divide by.
        family: what the encoder table of docs/models.md groups it under (a label only).
        check_installed: raises ImportError, saying what to install, where the encoder needs an
            optional package that is missing.
        weights_from: where ``encoder_weights`` come from, ``"keras.applications"`` or
            ``"keras-hub"``; empty for kseg's own encoders, which start from random weights.
    """

    name: str
    build: Callable[[keras.KerasTensor, ModelOptions], Features]
    total_stride: Callable[[ModelOptions], int]
    family: str
    check_installed: Callable[[], object] = lambda: None
    weights_from: str = ""

    @property
    def pretrained(self) -> bool:
        """Whether it can start from published weights (``encoder_weights``)."""
        return bool(self.weights_from)


@dataclasses.dataclass(frozen=True)
class Decoder:
    """An entry of the decoder registry.

    Attributes:
        name: the registry name.
        build: ``build(features, options) -> features at stride 1`` (the shared 1x1 logit head
            follows).
        default_encoder: the encoder ``build(name)`` pairs it with when none is named.
        summary: one line for the decoder table of docs/models.md.
        encoders: the only encoders it pairs with (SegNet's needs pooling positions; a light
            network's decoder, its own encoder's widths); empty: any encoder.
        side_outputs: ``side_outputs(model) -> {name: tensor}``, the side outputs a deeply
            supervised model adds a loss on (features, or 1-channel logits, at any stride), in
            the order of ``side_weights``; None: the decoder has none.
        side_weights: each side output's loss weight, the final output's being 1; empty: 1 each.
    """

    name: str
    build: Callable[[Features, ModelOptions], keras.KerasTensor]
    default_encoder: str
    summary: str
    encoders: tuple[str, ...] = ()
    side_outputs: Callable[[keras.Model], dict[str, Any]] | None = None
    side_weights: tuple[float, ...] = ()

    def pairs_with(self, encoder: str) -> bool:
        return not self.encoders or encoder in self.encoders

    @property
    def test_encoder(self) -> str:
        """The cheapest encoder it pairs with: kseg's U-Net encoder, or its own."""
        return self.encoders[0] if self.encoders else "unet"


__all__ = ["ModelOptions", "Features", "Encoder", "Decoder"]
