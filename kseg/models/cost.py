"""What a model costs, read from its layers' static shapes: parameters and the multiply-
accumulates (MACs) of one image's forward pass.

Two conventions meet here. kseg's benchmarks, torch's ``FlopCounterMode`` and the torch twin count
FLOPs = 2 x MACs; the light lesion networks' papers (EGE-UNet, MALUNet, UNeXt) print thop's or
ptflops' count, which is MACs under the name "GFLOPs". ``forward_gflops`` is the first,
``forward_macs`` the second, so a test can hold a network against its paper's table.

Counted: Conv2D (grouped included), Conv2DTranspose, DepthwiseConv2D, SeparableConv2D and Dense
(on any rank). Not counted, as in both counters' defaults: bias, normalisation, activations,
pooling, resampling and element-wise products.
"""

from __future__ import annotations

import math

import keras
from keras import layers


def forward_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one image's forward pass through ``model``'s counted layers.

    >>> import keras
    >>> image = keras.Input((8, 8, 5))
    >>> forward_macs(keras.Model(image, keras.layers.Conv2D(2, 2, padding="same")(image)))
    2560
    """
    return sum(_layer_macs(layer) for layer in _flat_layers(model))


def forward_gflops(model: keras.Model) -> float:
    """``2 * forward_macs(model) / 1e9``: the FLOPs convention of kseg's benchmarks."""
    return 2 * forward_macs(model) / 1e9


def parameter_count(model: keras.Model) -> int:
    """Every weight of ``model``, trainable or not (BatchNormalization's moving statistics included)."""
    return int(sum(math.prod(weight.shape) for weight in model.weights))


def trainable_parameter_count(model: keras.Model) -> int:
    """The trainable weights of ``model``: what papers print as "Params" (torch's
    ``sum(p.numel() for p in model.parameters())``, which leaves out BatchNorm's running statistics)."""
    return int(sum(math.prod(weight.shape) for weight in model.trainable_weights))


def _layer_macs(layer) -> int:
    if isinstance(layer, layers.Conv2DTranspose):
        # torch's counters: input elements x out channels x kernel area.
        kh, kw = layer.kernel_size
        return _elements(layer.input.shape) * layer.filters * kh * kw
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        groups = getattr(layer, "groups", 1) or 1
        return _elements(layer.output.shape) * layer.input.shape[-1] * kh * kw // groups
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return _elements(layer.output.shape) * kh * kw
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        out_shape = layer.output.shape
        depthwise_elements = _elements(out_shape) // out_shape[-1] * layer.input.shape[-1] * layer.depth_multiplier
        return depthwise_elements * kh * kw + _elements(out_shape) * layer.input.shape[-1] * layer.depth_multiplier
    if isinstance(layer, layers.Dense):
        return _elements(layer.output.shape) * layer.input.shape[-1]
    return 0


def _elements(shape) -> int:
    """Elements of one sample of a (None, ...) shape."""
    return int(math.prod(shape[1:]))


def _flat_layers(model) -> list:
    """``model``'s layers with nested models flattened (kseg's builders are flat; keras-hub's are not)."""
    found = []
    for layer in model.layers:
        found.extend(_flat_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return found


__all__ = ["forward_macs", "forward_gflops", "parameter_count", "trainable_parameter_count"]
