"""The FPN decoder (Lin et al., 2017; the semantic-segmentation head of Kirillov et al., 2019,
as in segmentation_models.pytorch), for any encoder with the level P2 and a deeper one.

    lateral_k:  1x1 conv of P_k to p = 8 * base_filters channels, for every level k >= 2
    top-down:   m_deepest = lateral_deepest; m_k = lateral_k + 2x nearest up-sampling of m_{k+1}
    segment_k:  block(s = 4 * base_filters) of m_k, bilinear up-sampling to stride 4
    out:        the sum of the segment maps, bilinear up-sampling to stride 1

(Bilinear up-sampling and the 1x1 logit head that follows commute, so up-sampling the features
gives the logits SMP gets by up-sampling them.)
"""

from __future__ import annotations

import functools

from keras import layers

from kseg.layers import conv_block
from kseg.models._common import bilinear_upsampling
from kseg.models.base import Decoder, Features, ModelOptions

_FINEST = 2  # the finest level used: stride 4


def _decoder(features: Features, options: ModelOptions):
    levels = [k for k in features.levels if k >= _FINEST]
    if levels[:1] != [_FINEST] or len(levels) < 2:
        raise ValueError(
            f"The fpn decoder expects the encoder's levels P2 and at least one deeper. Received: levels "
            f"{['P%d' % k for k in features.levels]}"
        )
    block = functools.partial(conv_block, bn_momentum=options.bn_momentum, batch_norm=options.batch_norm)
    pyramid_filters, segment_filters = 8 * options.base_filters, 4 * options.base_filters

    merged = {}
    for k in reversed(levels):
        lateral = layers.Conv2D(pyramid_filters, 1, name=f"fpn_lateral{k}")(features.level(k))
        if k + 1 in merged:
            upsampled = layers.UpSampling2D(2, interpolation="nearest", name=f"fpn_topdown{k}")(merged[k + 1])
            lateral = layers.Add(name=f"fpn_merge{k}")([lateral, upsampled])
        merged[k] = lateral

    segments = []
    for k in levels:
        x = block(merged[k], segment_filters, f"fpn_segment{k}")
        if k > _FINEST:
            x = bilinear_upsampling(2 ** (k - _FINEST), f"fpn_segment{k}_up")(x)
        segments.append(x)
    x = layers.Add(name="fpn_sum")(segments)
    return bilinear_upsampling(2**_FINEST, "fpn_upsample")(x)


DECODERS = [Decoder("fpn", _decoder, "resnet50", "feature pyramid (P2-P5) summed at stride 4")]

__all__ = ["DECODERS"]
