"""The decoder registry. A new decoder is a module that defines
:class:`kseg.models.base.Decoder` entries, plus its line below."""

from __future__ import annotations

from kseg._errors import unknown_name
from kseg.models.base import Decoder
from kseg.models.decoders import attention_unet, deeplabv3plus, fpn, segnet, unet, unetpp
from kseg.models.light import egeunet, malunet, unext

REGISTRY: dict[str, Decoder] = {
    decoder.name: decoder
    for decoder in [
        *segnet.DECODERS,
        *unet.DECODERS,
        *fpn.DECODERS,
        *deeplabv3plus.DECODERS,
        *attention_unet.DECODERS,
        *unetpp.DECODERS,
        *egeunet.DECODERS,
        *malunet.DECODERS,
        *unext.DECODERS,
    ]
}


def get(name: str) -> Decoder:
    """The registered decoder called ``name``."""
    try:
        return REGISTRY[name.lower()]
    except KeyError:
        raise unknown_name("decoder", name, tuple(REGISTRY)) from None


__all__ = ["REGISTRY", "get"]
