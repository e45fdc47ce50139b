"""Precise BatchNorm statistics: recompute every BatchNorm layer's moving mean and variance from
the training images once training is done (Wu and Johnson, "Rethinking 'Batch' in BatchNorm", 2021).

A moving average with momentum ``m`` keeps ``m**k`` of its initial value after ``k`` steps: 0.9
(kseg's) after the 6 steps of the smoke preset keeps 53% of the initial mean 0 and variance 1,
so a briefly trained model predicts in inference mode with statistics far from those it trained
with, and a run that learned something scores IoU 0 (issue 40: the quickstart notebook and the
smoke grid). ``recalibrate`` replaces them with the mean over the images' batches of each batch's
statistics, the weights of the last step left as they are:

    moving_mean = mean_b mean(x_b),   moving_variance = mean_b var(x_b)

(each layer seeing the inputs the recalibrated layers before it give, batch by batch).

>>> import keras, numpy as np
>>> model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.BatchNormalization()])
>>> recalibrate(model, np.ones((8, 4, 4, 2), "float32") * 3.0, batch_size=4)
1
>>> keras.ops.convert_to_numpy(model.layers[0].moving_mean).tolist()
[3.0, 3.0]
"""

from __future__ import annotations

import keras
import numpy as np

from kseg.layers import FastBatchNormalization

_BATCH_NORMS = (keras.layers.BatchNormalization, FastBatchNormalization)


def batch_norm_layers(model: keras.Model) -> list:
    """The BatchNorm layers of ``model`` (Keras's and kseg's), nested models' included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += batch_norm_layers(layer)
        elif isinstance(layer, _BATCH_NORMS):
            found.append(layer)
    return found


def recalibrate(model: keras.Model, images: np.ndarray, batch_size: int = 8) -> int:
    """Sets every BatchNorm layer's moving statistics of ``model`` to the mean of its batch
    statistics over ``images`` (the module's formula) and returns how many layers it set. Only
    the moving statistics change; the layers' momentum is restored."""
    norms = batch_norm_layers(model)
    if not norms or not len(images):
        return len(norms)
    momenta = [layer.momentum for layer in norms]
    try:
        for k, start in enumerate(range(0, len(images), batch_size)):
            for layer in norms:  # moving = moving * k / (k + 1) + batch / (k + 1): the running mean
                layer.momentum = k / (k + 1)
            model(np.asarray(images[start : start + batch_size]), training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return len(norms)


__all__ = ["batch_norm_layers", "recalibrate"]
