"""Optimizers that let a pretrained encoder learn slower than the decoder, or not at all at first.

The transfer recipe of keras-hub and segmentation_models freezes a pretrained encoder while the
fresh decoder settles, then fine-tunes it at a smaller rate. Keras's optimizers take one learning
rate for every variable, so kseg scales the rate per variable inside ``update_step``:

    lr_v(t) = lr(t) * (0 if t < freeze_steps else encoder_lr_factor)   for the encoder's variables
    lr_v(t) = lr(t)                                                    for every other variable

One optimizer and one ``fit`` throughout, so the schedule, the checkpoints and the early stop see
a single run. The frozen variables still get their gradients computed, and Adam's moments follow
them, so at ``freeze_steps`` the encoder starts with warm moments; its BatchNormalization
statistics keep adapting too (unlike Keras's ``trainable = False``, which would also fix them).
"""

from __future__ import annotations

from typing import Iterable

import keras
from keras import ops


class _EncoderRate:
    """The per-variable rate, shared by the Adam and AdamW variants below."""

    def __init__(
        self,
        *args,
        encoder_variables: Iterable[str] = (),
        encoder_lr_factor: float = 1.0,
        freeze_steps: int = 0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.encoder_variables = sorted(encoder_variables)
        self.encoder_lr_factor = float(encoder_lr_factor)
        self.freeze_steps = int(freeze_steps)

    def build(self, variables):
        super().build(variables)
        # By index, which every backend's optimizer resolves for its own variable type.
        paths = set(self.encoder_variables)
        self._scaled = [variable.path in paths for variable in variables]

    def update_step(self, gradient, variable, learning_rate):
        if self._scaled[self._get_variable_index(variable)]:
            factor = ops.where(ops.less(self.iterations, self.freeze_steps), 0.0, self.encoder_lr_factor)
            learning_rate = ops.multiply(learning_rate, ops.cast(factor, learning_rate.dtype))
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {
            **super().get_config(),
            "encoder_variables": list(self.encoder_variables),
            "encoder_lr_factor": self.encoder_lr_factor,
            "freeze_steps": self.freeze_steps,
        }


@keras.saving.register_keras_serializable(package="kseg")
class EncoderRateAdam(_EncoderRate, keras.optimizers.Adam):
    """Adam whose ``encoder_variables`` (variable paths) learn at ``encoder_lr_factor`` times the
    learning rate, and not at all for the first ``freeze_steps`` steps.

    Args:
        encoder_variables: the paths (``variable.path``) of the variables to scale.
        encoder_lr_factor: their rate relative to ``learning_rate`` after the freeze.
        freeze_steps: optimizer steps during which they do not move.
        *args, **kwargs: those of ``keras.optimizers.Adam``.

    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="head")])
    >>> optimizer = EncoderRateAdam(1e-3, encoder_variables=["head/kernel"], freeze_steps=10)
    """


@keras.saving.register_keras_serializable(package="kseg")
class EncoderRateAdamW(_EncoderRate, keras.optimizers.AdamW):
    """AdamW with :class:`EncoderRateAdam`'s per-variable rate (decoupled weight decay stays
    at the optimizer's rate for every variable)."""


def encoder_variable_paths(model: keras.Model, encoder_layers: Iterable[str]) -> list[str]:
    """The paths of the trainable variables of ``model``'s layers named in ``encoder_layers``."""
    names = set(encoder_layers)
    return [variable.path for layer in model.layers if layer.name in names for variable in layer.trainable_weights]


__all__ = ["EncoderRateAdam", "EncoderRateAdamW", "encoder_variable_paths"]
