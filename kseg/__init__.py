"""kseg: binary image segmentation with Keras 3 on TensorFlow, JAX or PyTorch.

Importing kseg registers every layer, loss and metric under the ``kseg`` package, so
``keras.saving.load_model`` reads kseg models without ``custom_objects``.
"""

from kseg import layers, losses, metrics, models

__version__ = "0.1.0"
__all__ = ["layers", "losses", "metrics", "models", "__version__"]
