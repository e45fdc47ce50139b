"""Light networks: whole segmentation networks (an encoder and its own decoder) from one paper each."""
