"""SegNet (Badrinarayanan et al., 2017): an encoder that remembers its max-pooling positions and a
decoder that unpools by them instead of learning its up-sampling."""

from __future__ import annotations

import functools

import keras

from kseg.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D, conv_block
from kseg.models._common import colour_constancy_stem, logit_head, segmentation_input


def segnet(
    input_shape: tuple[int, int, int] = (256, 256, 3),
    base_filters: int = 64,
    depth: int = 4,
    bn_momentum: float = 0.9,
    name: str = "segnet",
    colour_constancy: bool = False,
    batch_norm: str = "keras",
) -> keras.Model:
    """Builds SegNet with ``depth`` pooling levels of widths f_i = base_filters * 2**i.

    encoder level i:  block(f_i), block(f_i), 2x2 max-pool keeping positions
    bottleneck:       block(2 * f_last), block(f_last)
    decoder level i:  unpool with level i's positions, block(f_i), block(f_{i-1}),
                      deepest first, with f_{-1} = base_filters // 2
    head:             1x1 conv to one logit per pixel (float32)

    Args:
        input_shape: (height, width, channels); height and width divisible by 2**depth.
        base_filters: width of the first level.
        depth: number of pooling levels.
        bn_momentum: BatchNormalization momentum (0.9, PyTorch's default).
        name: model name.
        colour_constancy: apply ``kseg.layers.ShadesOfGray`` (layer "shades_of_gray") to the
            input first; no weights, and False (the default) builds exactly the model without it.
        batch_norm: "keras" (``keras.layers.BatchNormalization``) or "fast"
            (``kseg.layers.FastBatchNormalization``: the same function and weights, faster).

    Returns:
        A ``keras.Model`` mapping images (B, H, W, C) to logits (B, H, W, 1).
    """
    widths = [base_filters * 2**i for i in range(depth)]
    block = functools.partial(conv_block, bn_momentum=bn_momentum, batch_norm=batch_norm)
    inputs = segmentation_input(input_shape, depth)

    x, positions = colour_constancy_stem(inputs, colour_constancy), []
    for level, filters in enumerate(widths):
        x = block(x, filters, f"enc{level}_block0")
        x = block(x, filters, f"enc{level}_block1")
        x, level_positions = MaxPoolingWithArgmax2D(name=f"enc{level}_pool")(x)
        positions.append(level_positions)

    x = block(x, 2 * widths[-1], "bottleneck_block0")
    x = block(x, widths[-1], "bottleneck_block1")

    out_widths = [base_filters // 2] + widths[:-1]
    for level in reversed(range(depth)):
        x = MaxUnpooling2D(name=f"dec{level}_unpool")([x, positions[level]])
        x = block(x, widths[level], f"dec{level}_block0")
        x = block(x, out_widths[level], f"dec{level}_block1")

    return keras.Model(inputs, logit_head(x), name=name)


__all__ = ["segnet"]
