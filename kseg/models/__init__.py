"""Model builders: ``segnet``, ``unet``, ``unet2``, and ``build(name, **kwargs)`` by name."""

from __future__ import annotations

from typing import Callable

import keras

from kseg._errors import unknown_name
from kseg.models.segnet import segnet
from kseg.models.unet import unet, unet2

_BUILDERS: dict[str, Callable[..., keras.Model]] = {"segnet": segnet, "unet": unet, "unet2": unet2}


def available() -> tuple[str, ...]:
    """The names ``build`` accepts."""
    return tuple(_BUILDERS)


def build(name: str, **kwargs) -> keras.Model:
    """Builds the model called ``name`` (see ``available()``) with the builder's keyword arguments.

    >>> build("unet", input_shape=(64, 64, 3), base_filters=8).output.shape
    (None, 64, 64, 1)
    """
    try:
        builder = _BUILDERS[name.lower()]
    except KeyError:
        raise unknown_name("model", name, available()) from None
    return builder(**kwargs)


__all__ = ["available", "build", "segnet", "unet", "unet2"]
