"""U-Net (Ronneberger et al., 2015) and U-Net-2, its variant with learned resampling: strided
convolutions down and transposed convolutions up instead of max-pooling and nearest up-sampling."""

from __future__ import annotations

import functools

import keras
from keras import layers

from kseg.layers import conv_block
from kseg.models._common import colour_constancy_stem, logit_head, segmentation_input


def _unet(
    input_shape, base_filters, depth, bn_momentum, learned_resampling, name, colour_constancy, batch_norm
) -> keras.Model:
    widths = [base_filters * 2**i for i in range(depth)]
    block = functools.partial(conv_block, bn_momentum=bn_momentum, batch_norm=batch_norm)
    inputs = segmentation_input(input_shape, depth)

    x, skips = colour_constancy_stem(inputs, colour_constancy), []
    for level, filters in enumerate(widths):
        x = block(x, filters, f"enc{level}_block0")
        x = block(x, filters, f"enc{level}_block1")
        skips.append(x)
        if learned_resampling:
            x = layers.Conv2D(filters, 2, strides=2, name=f"enc{level}_down")(x)
        else:
            x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)

    bottleneck = base_filters * 2**depth
    x = block(x, bottleneck, "bottleneck_block0")
    x = block(x, bottleneck, "bottleneck_block1")

    for level in reversed(range(depth)):
        filters = widths[level]
        if learned_resampling:
            x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"dec{level}_up")(x)
        else:
            x = layers.UpSampling2D(2, interpolation="nearest", name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = block(x, filters, f"dec{level}_block0")
        x = block(x, filters, f"dec{level}_block1")

    return keras.Model(inputs, logit_head(x), name=name)


def unet(
    input_shape: tuple[int, int, int] = (256, 256, 3),
    base_filters: int = 64,
    depth: int = 4,
    bn_momentum: float = 0.9,
    name: str = "unet",
    colour_constancy: bool = False,
    batch_norm: str = "keras",
) -> keras.Model:
    """Builds U-Net with ``depth`` levels of widths f_i = base_filters * 2**i.

    encoder level i:  block(f_i), block(f_i) -> skip_i, 2x2 max-pool
    bottleneck:       two blocks of base_filters * 2**depth
    decoder level i:  nearest 2x up-sampling, concat skip_i, block(f_i), block(f_i) (deepest first)
    head:             1x1 conv to one logit per pixel (float32)

    Args:
        input_shape: (height, width, channels); height and width divisible by 2**depth.
        base_filters: width of the first level.
        depth: number of down-sampling levels.
        bn_momentum: BatchNormalization momentum (0.9, PyTorch's default).
        name: model name.
        colour_constancy: apply ``kseg.layers.ShadesOfGray`` (layer "shades_of_gray") to the
            input first; no weights, and False (the default) builds exactly the model without it.
        batch_norm: "keras" (``keras.layers.BatchNormalization``) or "fast"
            (``kseg.layers.FastBatchNormalization``: the same function and weights, faster).

    Returns:
        A ``keras.Model`` mapping images (B, H, W, C) to logits (B, H, W, 1).
    """
    return _unet(input_shape, base_filters, depth, bn_momentum, False, name, colour_constancy, batch_norm)


def unet2(
    input_shape: tuple[int, int, int] = (256, 256, 3),
    base_filters: int = 64,
    depth: int = 4,
    bn_momentum: float = 0.9,
    name: str = "unet2",
    colour_constancy: bool = False,
    batch_norm: str = "keras",
) -> keras.Model:
    """Builds U-Net-2: U-Net with learned resampling.

    As ``unet``, but down-sampling is Conv2D(f_i, kernel 2, stride 2) and up-sampling is
    Conv2DTranspose(f_i, kernel 2, stride 2) before the concatenation, neither followed by
    BatchNorm or ReLU. Arguments as for ``unet``.
    """
    return _unet(input_shape, base_filters, depth, bn_momentum, True, name, colour_constancy, batch_norm)


__all__ = ["unet", "unet2"]
