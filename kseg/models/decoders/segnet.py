"""The SegNet decoder (Badrinarayanan et al., 2017): unpool by the encoder's max-pooling
positions instead of learning the up-sampling.

    level k (deepest first): unpool with level k's positions, block(f_k), block(f_{k-1}),
                             with f_k = base_filters * 2**k and f_{-1} = base_filters // 2

It needs the positions, so it pairs only with the "segnet" encoder (``Decoder.encoders``).
"""

from __future__ import annotations

import functools

from kseg.layers import MaxUnpooling2D, conv_block
from kseg.models.base import Decoder, Features, ModelOptions


def _decoder(features: Features, options: ModelOptions):
    block = functools.partial(conv_block, bn_momentum=options.bn_momentum, batch_norm=options.batch_norm)
    depth = len(features.pooling_positions)
    widths = [options.base_filters * 2**k for k in range(depth)]
    out_widths = [options.base_filters // 2] + widths[:-1]
    x = features.level(features.levels[-1])
    for level in reversed(range(depth)):
        x = MaxUnpooling2D(name=f"dec{level}_unpool")([x, features.pooling_positions[level]])
        x = block(x, widths[level], f"dec{level}_block0")
        x = block(x, out_widths[level], f"dec{level}_block1")
    return x


DECODERS = [
    Decoder("segnet", _decoder, "segnet", "max-unpooling by the encoder's pooling positions", encoders=("segnet",))
]

__all__ = ["DECODERS"]
