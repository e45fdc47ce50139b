"""The Attention U-Net decoder (Oktay et al., "Attention U-Net: Learning Where to Look for the
Pancreas", MIDL 2018), for any encoder: kseg's ``unet`` decoder with an additive attention gate
on every skip connection, gated by the decoder's map one level coarser.

For the level k from the deepest up, with g the decoder's map at level k + 1 (the encoder's
deepest map for the first) and x the encoder's skip P_k:

    alpha = resample(sigmoid(psi(relu(W_x(x) + W_g(g)))))    the attention gate, on g's grid
    x_hat = alpha * x                                        one coefficient per pixel
    level k: nearest 2x up-sampling of g, concatenated with x_hat, two conv blocks of width
             f_k = base_filters * 2**k (the unet decoder's, under its layer names "dec{k}_...")

W_x (no bias), W_g and psi (with biases b_g, b_psi) are the paper's linear maps, F_int =
max(1, f_k // 2) channels wide (its authors' ``inter_channels = in_channels // 2``); the
resampling is bilinear 2x up-sampling of the coefficients to the skip's size, the paper's grid
resampling. A level without a skip (P0 of keras.applications' encoders) up-samples and convolves
as in the unet decoder, with no gate.

Departures from the paper:
    - W_x is a 2x2 convolution with stride 2, which projects the skip onto the gating grid as the
      authors' code does (Attention-Gated-Networks, ``GridAttentionBlock`` with sub-sample
      factor 2: kernel = stride = 2); the paper's Fig. 2 draws a 1x1x1 convolution onto that
      grid, which taken literally would read one skip pixel in four.
    - No 1x1 "gating signal" block on the bottleneck, and no 1x1 conv + BN after the product
      (both in the authors' code, neither in the paper's equations): g is the decoder's map as
      it is, and the gated skip is alpha * x.
    - Nearest up-sampling and kseg's conv block (conv, ReLU, BN) as the unet decoder has them, so
      the gates are the only difference between ``unet`` and ``attention_unet`` on one encoder
      (the paper: trilinear up-sampling, conv-BN-ReLU blocks, 3D).
    - No deep supervision (the paper's auxiliary losses on the decoder's levels).
"""

from __future__ import annotations

import functools

import keras
from keras import layers

from kseg.models._common import bilinear_upsampling
from kseg.models.base import Decoder
from kseg.models.decoders import unet


def attention_gate(x: keras.KerasTensor, gate: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    """Oktay et al.'s additive attention gate: ``x`` scaled by one coefficient per pixel.

    ``alpha = up2(sigmoid(psi(relu(W_x(x) + W_g(gate)))))`` and the result ``alpha * x``, with
    ``W_x`` a 2x2 stride-2 convolution without bias (x onto the gate's grid), ``W_g`` and ``psi``
    1x1 convolutions with bias, and ``up2`` bilinear 2x up-sampling back to x's size.

    Args:
        x: the skip connection, (B, 2h, 2w, C).
        gate: the gating signal from the coarser level, (B, h, w, C_g).
        filters: F_int, the width of the gate's intermediate map.
        name: prefix of the gate's layers ("{name}_wx", ..., "{name}_multiply").

    Returns:
        ``alpha * x``, of x's shape.
    """
    theta = layers.Conv2D(filters, 2, strides=2, use_bias=False, name=f"{name}_wx")(x)
    phi = layers.Conv2D(filters, 1, name=f"{name}_wg")(gate)
    q = layers.ReLU(name=f"{name}_relu")(layers.Add(name=f"{name}_add")([theta, phi]))
    alpha = layers.Activation("sigmoid", name=f"{name}_sigmoid")(layers.Conv2D(1, 1, name=f"{name}_psi")(q))
    alpha = bilinear_upsampling(2, f"{name}_resample")(alpha)
    return layers.Multiply(name=f"{name}_multiply")([x, alpha])


DECODERS = [
    Decoder(
        "attention_unet",
        # Gated by the coarser map before its up-sampling: the gate works on that map's grid.
        functools.partial(unet.decode, gate=attention_gate),
        "unet",
        "as unet with an additive attention gate on each skip, gated by the coarser decoder level",
    ),
]

__all__ = ["DECODERS", "attention_gate"]
