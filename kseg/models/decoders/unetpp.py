"""The U-Net++ decoder (Zhou et al., "UNet++: A Nested U-Net Architecture for Medical Image
Segmentation", DLMIA 2018), for any encoder: U-Net's skips replaced by nested, dense skip
pathways.

Node X^{i,j} (level i, at stride 2**i; column j) is the encoder's map P_i for j = 0 and, for
j >= 1,

    X^{i,j} = H([X^{i,0}, ..., X^{i,j-1}, U(X^{i+1,j-1})])

with [...] the concatenation, U nearest 2x up-sampling, and H two conv blocks of width
f_i = base_filters * 2**i (the unet decoder's widths). Its layers are "x{i}_{j}_up",
"x{i}_{j}_concat" and "x{i}_{j}_block0/1". With the deepest level L, the decoder's output is
X^{0,L}; the top row's X^{0,j} are the paper's side outputs, each the output of the layer
"x0_{j}_block1_bn": :func:`side_outputs` finds them in a built model.

A level the encoder lacks (P0 of keras.applications' encoders, P0 and P1 of ConvNeXt's) has no
X^{i,0}: its nodes take the other inputs, and exist where their up-sampled input does (i + j at
least the encoder's finest level). Below the finest level the decoder thus up-samples without a
skip, as the unet decoder does, and the top row starts at that column.

Departures from the paper:
    - Nearest up-sampling and kseg's conv block (conv, ReLU, BN), as the unet decoder has them
      (the paper's code: transposed convolutions, two 3x3 conv-ReLU units with dropout).
    - Deep supervision is a training option (``--deep-supervision``,
      :mod:`kseg.models.deep_supervision`): a 1x1 logit head on each X^{0,j}, j < L, each with
      the run's loss at weight 1, and at inference the final head or the heads' mean ("accurate"
      mode), chosen on validation. The paper's pruning to an earlier column is not offered.
"""

from __future__ import annotations

import functools
import re

import keras
from keras import layers

from kseg.layers import conv_block
from kseg.models.base import Decoder, Features, ModelOptions


def _decoder(features: Features, options: ModelOptions):
    block = functools.partial(conv_block, bn_momentum=options.bn_momentum, batch_norm=options.batch_norm)
    deepest = features.levels[-1]
    nodes = {(i, 0): features.level(i) for i in features.levels}
    for j in range(1, deepest + 1):
        for i in range(deepest - j + 1):
            below = nodes.get((i + 1, j - 1))
            if below is None:  # under the encoder's finest level: no input yet
                continue
            name = f"x{i}_{j}"
            inputs = [nodes[(i, k)] for k in range(j) if (i, k) in nodes]
            inputs.append(layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up")(below))
            x = layers.Concatenate(name=f"{name}_concat")(inputs) if len(inputs) > 1 else inputs[0]
            x = block(x, options.base_filters * 2**i, f"{name}_block0")
            nodes[(i, j)] = block(x, options.base_filters * 2**i, f"{name}_block1")
    return nodes[(0, deepest)]


def side_outputs(model: keras.Model) -> dict[str, keras.KerasTensor]:
    """The top row of a model with the unetpp decoder, ``{"x0_{j}": X^{0,j}}`` by column, the
    last being the decoder's output: the features a deep-supervision head would read.

    >>> from kseg import models
    >>> sorted(side_outputs(models.build("unetpp", (32, 32, 3), base_filters=4, depth=2)))
    ['x0_1', 'x0_2']
    """
    found = {}
    for layer in model.layers:
        match = re.fullmatch(r"(x0_(\d+))_block1_bn", layer.name)
        if match:
            found[int(match[2])] = (match[1], layer.output)
    if not found:
        raise ValueError(f"Expected a model with the unetpp decoder. Received: model {model.name!r}")
    return dict(found[j] for j in sorted(found))


def _supervised_columns(model: keras.Model) -> dict[str, keras.KerasTensor]:
    """The top row but its last column (the final output): what deep supervision adds heads to."""
    columns = side_outputs(model)
    return dict(list(columns.items())[:-1])


DECODERS = [
    Decoder(
        "unetpp",
        _decoder,
        "unet",
        "U-Net++: nested dense skip pathways X^{i,j}, two conv blocks per node, output X^{0,L}",
        side_outputs=_supervised_columns,  # Zhou et al. average the heads' losses: each weighs 1
    ),
]

__all__ = ["DECODERS", "side_outputs"]
