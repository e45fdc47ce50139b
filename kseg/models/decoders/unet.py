"""The U-Net decoder (Ronneberger et al., 2015), for any encoder: from the deepest level up,
double the resolution, concatenate the encoder's map of that stride where it has one, and apply
two conv blocks of width f_k = base_filters * 2**k, down to stride 1.

    unet:  nearest 2x up-sampling                                    ("dec{k}_up")
    unet2: Conv2DTranspose(f_k, kernel 2, stride 2), no norm or ReLU  (learned resampling)

On kseg's own encoders this is the seed networks' decoder, layer for layer.
"""

from __future__ import annotations

import functools
from typing import Callable

from keras import layers

from kseg.layers import conv_block
from kseg.models.base import Decoder, Features, ModelOptions


def decode(features: Features, options: ModelOptions, learned_upsampling: bool = False, gate: Callable | None = None):
    """The decoder's graph; ``gate(skip, coarser, filters, name) -> skip`` filters each skip by the
    decoder's coarser map before its up-sampling (Attention U-Net's gates), None: skips as they are."""
    block = functools.partial(conv_block, bn_momentum=options.bn_momentum, batch_norm=options.batch_norm)
    deepest = features.levels[-1]
    x = features.level(deepest)
    for level in reversed(range(deepest)):
        filters = options.base_filters * 2**level
        skip = features.level(level)
        if skip is not None and gate is not None:
            skip = gate(skip, x, max(1, filters // 2), f"dec{level}_att")
        if learned_upsampling:
            x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"dec{level}_up")(x)
        else:
            x = layers.UpSampling2D(2, interpolation="nearest", name=f"dec{level}_up")(x)
        if skip is not None:
            x = layers.Concatenate(name=f"dec{level}_concat")([x, skip])
        x = block(x, filters, f"dec{level}_block0")
        x = block(x, filters, f"dec{level}_block1")
    return x


DECODERS = [
    Decoder(
        "unet",
        functools.partial(decode, learned_upsampling=False),
        "unet",
        "nearest up-sampling, skip concatenation, two conv blocks per level",
    ),
    Decoder(
        "unet2",
        functools.partial(decode, learned_upsampling=True),
        "unet2",
        "as unet with transposed-convolution up-sampling",
    ),
]

__all__ = ["DECODERS", "decode"]
