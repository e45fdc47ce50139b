"""The DeepLabV3+ decoder (Chen et al., 2018), for any encoder with the level P2 and a deeper one.

    ASPP on the encoder's map at stride 16 (its deepest if shallower), width d = 8 * base_filters:
        a 1x1 block, 3x3 atrous blocks at ``ATROUS_RATES``, and global average pooling -> 1x1
        block -> broadcast back; concatenated and projected by a 1x1 block
    low level:  1x1 block of P2 to 3 * base_filters channels (DeepLab's 48 at base 16)
    decoder:    bilinear up-sampling of the ASPP map to stride 4, concatenated with the low
                level, two 3x3 blocks of width d, bilinear up-sampling to stride 1

keras.applications' encoders cannot dilate their last stage, so the ASPP reads P4 and ignores
P5: DeepLab's output stride 16.
"""

from __future__ import annotations

import functools

from keras import layers

from kseg.layers import conv_block
from kseg.models._common import bilinear_upsampling
from kseg.models.base import Decoder, Features, ModelOptions

# DeepLab's (6, 12, 18) assume 33x33 maps at stride 16 (513 px); at kseg's 128-256 px the maps are
# 8x8-16x16, where those rates would read mostly padding.
ATROUS_RATES = (2, 4, 6)
_LOW, _ASPP = 2, 4  # strides 4 and 16


def _aspp(x, filters: int, block):
    height, width = x.shape[1], x.shape[2]
    branches = [block(x, filters, "aspp_1x1", kernel_size=1)]
    branches += [block(x, filters, f"aspp_rate{rate}", dilation_rate=rate) for rate in ATROUS_RATES]
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_global_pool")(x)
    pooled = block(pooled, filters, "aspp_pool", kernel_size=1)
    branches.append(layers.UpSampling2D((height, width), interpolation="nearest", name="aspp_pool_up")(pooled))
    x = layers.Concatenate(name="aspp_concat")(branches)
    return block(x, filters, "aspp_project", kernel_size=1)


def _decoder(features: Features, options: ModelOptions):
    deep = min(_ASPP, features.levels[-1])
    if features.level(_LOW) is None or deep <= _LOW:
        raise ValueError(
            f"The deeplabv3plus decoder expects the encoder's levels P2 and at least one deeper. Received: levels "
            f"{['P%d' % k for k in features.levels]}"
        )
    block = functools.partial(conv_block, bn_momentum=options.bn_momentum, batch_norm=options.batch_norm)
    filters = 8 * options.base_filters
    x = _aspp(features.level(deep), filters, block)
    x = bilinear_upsampling(2 ** (deep - _LOW), "deeplab_up")(x)
    low = block(features.level(_LOW), 3 * options.base_filters, "deeplab_low", kernel_size=1)
    x = layers.Concatenate(name="deeplab_concat")([x, low])
    x = block(x, filters, "deeplab_block0")
    x = block(x, filters, "deeplab_block1")
    return bilinear_upsampling(2**_LOW, "deeplab_upsample")(x)


DECODERS = [Decoder("deeplabv3plus", _decoder, "resnet50", "atrous spatial pyramid pooling at stride 16, P2 skip")]

__all__ = ["DECODERS", "ATROUS_RATES"]
