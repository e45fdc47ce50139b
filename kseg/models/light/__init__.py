"""Light lesion-segmentation networks, each a whole network (its own encoder and decoder) in one module;
the registries of kseg.models.backbones and kseg.models.decoders list them."""

__all__ = []  # the networks are its modules
