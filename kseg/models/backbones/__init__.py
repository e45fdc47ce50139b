"""The encoder registry (keras-hub calls an encoder a backbone): kseg's own, keras.applications'
and keras-hub's (the optional ``kseg[hub]`` extra).

A new encoder is a module that defines :class:`kseg.models.base.Encoder` entries, plus its
line below.
"""

from __future__ import annotations

from kseg._errors import unknown_name
from kseg.models.backbones import applications, convolutional, hub
from kseg.models.base import Encoder
from kseg.models.light import egeunet, malunet, unext

REGISTRY: dict[str, Encoder] = {
    encoder.name: encoder
    for encoder in [
        *convolutional.ENCODERS,
        *applications.ENCODERS,
        *hub.ENCODERS,
        *egeunet.ENCODERS,
        *malunet.ENCODERS,
        *unext.ENCODERS,
    ]
}


def get(name: str) -> Encoder:
    """The registered encoder called ``name``."""
    try:
        return REGISTRY[name.lower()]
    except KeyError:
        raise unknown_name("encoder", name, tuple(REGISTRY)) from None


__all__ = ["REGISTRY", "get"]
