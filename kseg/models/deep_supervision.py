"""Deep supervision: a loss on a decoder's side outputs as well as on its final logits, and at
inference the final logits or the mean of every head's, chosen on validation.

A decoder with side outputs declares them (:attr:`kseg.models.base.Decoder.side_outputs`, with
their loss weights ``side_weights``): U-Net++'s top-row nodes X^{0,j}, EGE-UNet's side masks.
``training_model`` gives each a head (a float32 1x1 convolution to one logit where the side output
is a feature map, nothing where it is already one channel of logits), up-samples it bilinearly to
the input's size and stacks the heads after the final logits on the last axis:

    image -> model -> [z_0 (final logits), z_1, ..., z_S]  (B, H, W, 1 + S)

so one output carries them all: :class:`kseg.losses.DeepSupervision` puts the base loss on each
channel with the declared weights, and kseg's IoU and Dice read the first channel. The heads
share every other layer with the model. ``inference_model`` turns the trained graph back into a
one-output :class:`~kseg.models.SegmentationModel`: ``final`` (z_0) or ``mean`` (the mean of
z_0..z_S, Zhou et al.'s "accurate" mode), which a run chooses by validation IoU
(:func:`kseg.experiment.training.fit`).
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.models import decoders
from kseg.models._common import bilinear_upsampling
from kseg.models.segmentation_model import SegmentationModel

#: What a deeply supervised model predicts with at inference.
MODES = ("final", "mean")
#: The name of the training model's stacked output.
STACKED = "ds_stacked"


def side_weights(model: keras.Model) -> tuple[float, ...]:
    """The loss weight of each of ``model``'s side outputs (its decoder's ``side_weights``, else 1 each)."""
    decoder, sides = _decoder_and_sides(model)
    weights = decoder.side_weights or (1.0,) * len(sides)
    if len(weights) != len(sides):
        raise ValueError(
            f"The {decoder.name} decoder declares {len(weights)} side weights for {len(sides)} side outputs"
        )
    return tuple(weights)


def training_model(model: keras.Model) -> keras.Model:
    """``model`` with a head on each side output, stacked after its logits (the module's diagram).

    Raises ValueError, naming the decoders that have side outputs, for a model whose decoder has none.
    """
    _, sides = _decoder_and_sides(model)
    size = model.output.shape[1:3]
    heads = [model.output]
    for name, tensor in sides.items():
        x = tensor
        if x.shape[-1] != 1:
            x = layers.Conv2D(1, 1, dtype="float32", name=f"ds_{name}_logits")(x)
        factor = size[0] // x.shape[1]
        if factor > 1:
            x = bilinear_upsampling(factor, f"ds_{name}_up")(x)
        heads.append(layers.Activation("linear", dtype="float32", name=f"ds_{name}")(x))
    stacked = layers.Concatenate(axis=-1, dtype="float32", name=STACKED)(heads)
    return keras.Model(model.input, stacked, name=f"{model.name}_ds")  # inference_model drops "_ds"


def inference_model(trained: keras.Model, mode: str, architecture: str) -> SegmentationModel:
    """The one-output model of a trained ``training_model``: its final logits (``final``) or the
    mean of every head's (``mean``), named as the model it was made from (``architecture``:
    its canonical name, e.g. "unetpp:unet")."""
    if mode not in MODES:
        raise ValueError(f"Unknown deep-supervision mode {mode!r}. Expected one of: {', '.join(MODES)}")
    heads = trained.get_layer(STACKED).input
    output = heads[0] if mode == "final" else layers.Average(dtype="float32", name="ds_mean")(heads)
    name = trained.name.removesuffix("_ds")
    return SegmentationModel(trained.input, output, name=name, architecture=architecture)


def check_decoder(decoder) -> None:
    """Raises ValueError, naming the decoders that have side outputs, for one that has none."""
    if decoder.side_outputs is None:
        supervised = [name for name, entry in decoders.REGISTRY.items() if entry.side_outputs is not None]
        raise ValueError(
            f"Deep supervision needs a decoder with side outputs: {', '.join(supervised)}. "
            f"Received: a model with the {decoder.name} decoder"
        )


def _decoder_and_sides(model: keras.Model):
    architecture = getattr(model, "architecture", "") or model.name
    decoder = decoders.get(architecture.partition(":")[0])
    check_decoder(decoder)
    return decoder, decoder.side_outputs(model)


__all__ = ["MODES", "STACKED", "check_decoder", "side_weights", "training_model", "inference_model"]
