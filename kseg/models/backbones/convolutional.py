"""kseg's own encoders, those of the seed networks: two conv blocks per level, widths
f_k = base_filters * 2**k, ``depth`` down-samplings, then a two-block bottleneck.

    segnet: 2x2 max-pool keeping its positions (for SegNet's unpooling decoder);
            bottleneck block(2 f_last), block(f_last)
    unet:   2x2 max-pool; bottleneck two blocks of base_filters * 2**depth
    unet2:  Conv2D(f_k, kernel 2, stride 2) (no norm, no ReLU); bottleneck as unet

``P{k}`` for k < depth is level k's second block (before its down-sampling), ``P{depth}`` the
bottleneck. Layer names are the seed networks' ("enc{k}_block0", "bottleneck_block1", ...), so
every model trained before the encoder/decoder split still loads.
"""

from __future__ import annotations

import functools

from keras import layers

from kseg.layers import MaxPoolingWithArgmax2D, conv_block
from kseg.models.base import Encoder, Features, ModelOptions


def _encoder(image, options: ModelOptions, downsampling: str) -> Features:
    widths = [options.base_filters * 2**k for k in range(options.depth)]
    block = functools.partial(conv_block, bn_momentum=options.bn_momentum, batch_norm=options.batch_norm)
    x, pyramid, positions = image, {}, []
    for level, filters in enumerate(widths):
        x = block(x, filters, f"enc{level}_block0")
        x = block(x, filters, f"enc{level}_block1")
        pyramid[f"P{level}"] = x
        if downsampling == "argmax":
            x, level_positions = MaxPoolingWithArgmax2D(name=f"enc{level}_pool")(x)
            positions.append(level_positions)
        elif downsampling == "strided":
            x = layers.Conv2D(filters, 2, strides=2, name=f"enc{level}_down")(x)
        else:
            x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)

    if downsampling == "argmax":
        bottleneck = (2 * widths[-1], widths[-1])
    else:
        bottleneck = (options.base_filters * 2**options.depth,) * 2
    x = block(x, bottleneck[0], "bottleneck_block0")
    x = block(x, bottleneck[1], "bottleneck_block1")
    pyramid[f"P{options.depth}"] = x
    return Features(pyramid, positions if downsampling == "argmax" else None)


def _stride(options: ModelOptions) -> int:
    return 2**options.depth


ENCODERS = [
    Encoder("segnet", functools.partial(_encoder, downsampling="argmax"), _stride, "kseg"),
    Encoder("unet", functools.partial(_encoder, downsampling="maxpool"), _stride, "kseg"),
    Encoder("unet2", functools.partial(_encoder, downsampling="strided"), _stride, "kseg"),
]

__all__ = ["ENCODERS"]
