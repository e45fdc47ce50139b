"""Light networks: whole published lesion-segmentation networks, each an encoder and a decoder of one name."""
