"""Light lesion-segmentation networks, each a whole network (its own encoder and decoder) in one module."""
