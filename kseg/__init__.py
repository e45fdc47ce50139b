"""kseg: binary image segmentation with Keras 3 on TensorFlow, JAX or PyTorch.

Importing kseg makes every public module reachable (``kseg.data.load_ph2``,
``kseg.models.build``, ``kseg.refine.tta_predict_logits``, ...) and registers every layer, loss
and metric under the ``kseg`` package, so ``keras.saving.load_model`` reads kseg models without
``custom_objects``.
"""

import contextlib
import os
import sys

# Before the imports: kseg.config reads it into every run's identity.
__version__ = "0.3.0"


@contextlib.contextmanager
def _quiet_native_start_up():
    """TensorFlow's C++ start-up lines (oneDNN, CPU features: absl logs written before logging is
    initialised, which TF_CPP_MIN_LOG_LEVEL no longer stops) say nothing about kseg's work. They
    are dropped while Keras first imports its backend, unless the user set TF_CPP_MIN_LOG_LEVEL:
    then they show as TensorFlow decides."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "keras" in sys.modules:
        yield
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import keras  # noqa: F401
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
        del os.environ["TF_CPP_MIN_LOG_LEVEL"]
    yield


with _quiet_native_start_up():
    pass

from kseg import (  # noqa: E402
    cli, config, data, ensemble, evaluation, executors, export, grid, layers, leaderboard, losses, metrics, models, predict,
    refine, run, stats, training, transfer, visualize,
)

__all__ = [
    "cli", "config", "data", "ensemble", "evaluation", "executors", "export", "grid", "layers", "leaderboard", "losses", "metrics", "models",
    "predict", "refine", "run", "stats", "training", "transfer", "visualize", "__version__",
]
