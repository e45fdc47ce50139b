"""kseg: binary image segmentation with Keras 3 on TensorFlow, JAX or PyTorch.

``import kseg`` defines names and loads nothing else (no Keras, no backend): each module loads on
first use, so ``kseg.models.build(...)``, ``kseg.data.load_ph2(...)`` or
``kseg.refine.tta_predict_logits(...)`` work after a plain ``import kseg``, as does
``import kseg.models``. The library is this top level; :mod:`kseg.experiment` is the harness that
runs and ranks grids of runs (``kseg.experiment.run.run_one``, ``kseg.experiment.leaderboard``);
:mod:`kseg.cli` holds the command lines.

Loading a saved model: kseg's layers, losses, metrics and optimizer register under the ``kseg``
package when their module is imported, so ``keras.saving.load_model`` reads a kseg model without
``custom_objects`` once ``kseg.models`` is imported (it imports every layer and the model class;
:func:`kseg.predict.load_trained_model` and :func:`kseg.refine.load_model_with_refinement` do it).
A model saved compiled by kseg loads with ``compile=True`` after ``import kseg.losses,
kseg.metrics, kseg.optimizers`` too.
"""

from kseg._lazy import loader
from kseg._version import __version__

# The modules and packages ``kseg.NAME`` loads on first use, and the version.
__all__ = [
    "batch_norm",
    "bootstrap",
    "boundary",
    "calibration",
    "cli",
    "data",
    "device",
    "ensemble",
    "evaluation",
    "experiment",
    "export",
    "layers",
    "losses",
    "metrics",
    "models",
    "optimizers",
    "precision",
    "predict",
    "pretrained",
    "quantize",
    "refine",
    "visualize",
    "__version__",
]
__getattr__, __dir__ = loader(__name__, {name: f"kseg.{name}" for name in __all__ if name != "__version__"})
