"""What a model costs, read from its layers' static shapes: parameters and the multiply-
accumulates (MACs) of one image's forward pass.

Two conventions meet here. kseg's benchmarks, torch's ``FlopCounterMode`` and the torch twin count
FLOPs = 2 x MACs; the light lesion networks' papers (EGE-UNet, MALUNet, UNeXt) print thop's or
ptflops' count, which is MACs under the name "GFLOPs". ``forward_gflops`` is the first,
``forward_macs`` the second, so a test can hold a network against its paper's table.

Counted: Conv1D and Conv2D (grouped included), Conv2DTranspose, DepthwiseConv2D, SeparableConv2D
and Dense (on any rank), once per call: a layer shared by several inputs (MALUNet's spatial
attention convolution, applied to five maps) costs each call, as thop and ptflops count a module
called several times. Not counted, as in both counters' defaults: bias, normalisation,
activations, pooling, resampling and element-wise products.
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
    return sum(_call_macs(layer, input_shape, output_shape) for layer, input_shape, output_shape in _calls(model))


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


def _call_macs(layer, input_shape, output_shape) -> int:
    """MACs of one call of ``layer`` from ``input_shape`` to ``output_shape`` (batch first)."""
    if isinstance(layer, layers.Conv2DTranspose):
        # torch's counters: input elements x out channels x kernel area.
        return _elements(input_shape) * layer.filters * math.prod(layer.kernel_size)
    if isinstance(layer, (layers.Conv1D, layers.Conv2D)):
        groups = getattr(layer, "groups", 1) or 1
        return _elements(output_shape) * input_shape[-1] * math.prod(layer.kernel_size) // groups
    if isinstance(layer, layers.DepthwiseConv2D):
        return _elements(output_shape) * math.prod(layer.kernel_size)
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        depthwise_elements = _elements(output_shape) // output_shape[-1] * input_shape[-1] * layer.depth_multiplier
        return depthwise_elements * kh * kw + _elements(output_shape) * input_shape[-1] * layer.depth_multiplier
    if isinstance(layer, layers.Dense):
        return _elements(output_shape) * input_shape[-1]
    return 0


def _elements(shape) -> int:
    """Elements of one sample of a (None, ...) shape."""
    return int(math.prod(shape[1:]))


def _calls(model):
    """``(layer, input shape, output shape)`` for each call of a layer in ``model``'s graph (its
    first input's and output's shapes), a nested model's calls in its place (kseg's builders are
    flat; keras-hub's are not). Inputs, which make no call, are left out."""
    graph = getattr(model, "_functional", None) or model  # a Sequential keeps its graph there
    for depth in sorted(graph._nodes_by_depth, reverse=True):  # inputs first
        for node in graph._nodes_by_depth[depth]:
            if isinstance(node.operation, keras.Model):
                yield from _calls(node.operation)
            elif node.input_tensors:
                yield node.operation, node.input_tensors[0].shape, node.output_tensors[0].shape


__all__ = ["forward_macs", "forward_gflops", "parameter_count", "trainable_parameter_count"]
