"""Layers the light networks share: LayerNorm and the exact GELU, written so that every backend's
ONNX exporter converts them (the same functions as Keras's own)."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="kseg")
class ChannelLayerNormalization(layers.LayerNormalization):
    """``keras.layers.LayerNormalization`` over the last (channel) axis, written with plain
    reductions so that every exporter converts it.

        y = (x - mean(x)) / sqrt(var(x) + epsilon) * gamma + beta

    with the biased mean and variance over the channels of each pixel (the authors'
    "channels_first" LayerNorm of an NCHW map), computed in float32. Same arguments, weights and
    config as Keras' layer, which on the PyTorch backend calls ``F.layer_norm`` with a
    ``normalized_shape`` read from the traced input, which torch.onnx's exporter refuses. Only
    ``axis=-1`` and ``rms_scaling=False``.

    Example:
    >>> y = ChannelLayerNormalization(epsilon=1e-6)(keras.ops.convert_to_tensor([[1.0, 3.0]]))
    >>> keras.ops.convert_to_numpy(y).round(4)
    array([[-1.,  1.]], dtype=float32)
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(axis=axis, **kwargs)
        if axis not in (-1, [-1], (-1,)) or self.rms_scaling:
            raise ValueError(
                f"{type(self).__name__} normalises the last axis without rms_scaling. "
                f"Received: axis={axis}, rms_scaling={self.rms_scaling}"
            )

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        mean = ops.mean(x, axis=-1, keepdims=True)
        centred = ops.subtract(x, mean)
        variance = ops.mean(ops.square(centred), axis=-1, keepdims=True)
        y = ops.multiply(centred, ops.rsqrt(ops.add(variance, self.epsilon)))
        if self.gamma is not None:
            y = ops.multiply(y, ops.cast(self.gamma, "float32"))
        if self.beta is not None:
            y = ops.add(y, ops.cast(self.beta, "float32"))
        return ops.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package="kseg")
class ExactGELU(layers.Layer):
    """The exact GELU (PyTorch's ``nn.GELU()``), written with ``erf``:

        y = 0.5 * x * (1 + erf(x / sqrt(2)))

    computed in float32. Keras' exact ``gelu`` is the same function, but on TensorFlow it is
    ``tf.nn.gelu``, written with ``erfc``, which tf2onnx does not convert; ``erf`` every exporter
    converts (ONNX ``Erf``). No weights.

    Example:
    >>> keras.ops.convert_to_numpy(ExactGELU()(keras.ops.convert_to_tensor([-1.0, 0.0, 1.0]))).round(4)
    array([-0.1587,  0.    ,  0.8413], dtype=float32)
    """

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        y = ops.multiply(ops.multiply(x, 0.5), ops.add(ops.erf(ops.multiply(x, 0.5**0.5)), 1.0))
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


__all__ = ["ChannelLayerNormalization", "ExactGELU"]
