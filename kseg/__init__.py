"""kseg: binary image segmentation with Keras 3 on TensorFlow, JAX or PyTorch.

Importing kseg makes every public module reachable (``kseg.data.load_ph2``,
``kseg.models.build``, ``kseg.refine.tta_predict_logits``, ...) and registers every layer, loss
and metric under the ``kseg`` package, so ``keras.saving.load_model`` reads kseg models without
``custom_objects``.
"""

import contextlib
import glob
import os
import sys

from kseg._version import __version__


@contextlib.contextmanager
def _quiet_native_start_up():
    """TensorFlow's C++ start-up lines (oneDNN, CPU features: absl logs written before logging is
    initialised, which TF_CPP_MIN_LOG_LEVEL no longer stops) say nothing about kseg's work. They
    are dropped while Keras first imports its backend, unless the user set TF_CPP_MIN_LOG_LEVEL:
    then they show as TensorFlow decides. Yields whether they are dropped."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "keras" in sys.modules:
        yield False
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield True  # the body imports Keras, and with it the backend
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
        del os.environ["TF_CPP_MIN_LOG_LEVEL"]


def _check_backend() -> None:
    """Keras imports its backend on first import; without one installed, say which extra brings it."""
    try:
        import keras  # noqa: F401
    except ImportError as error:
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        raise ImportError(
            f"kseg expects the Keras backend KERAS_BACKEND names to be installed. Received: KERAS_BACKEND={backend}, "
            f"which cannot be imported ({error}); install one with pip install 'kseg[tensorflow]', 'kseg[jax]' or "
            "'kseg[torch]' and set KERAS_BACKEND to match"
        ) from None


def _start_tensorflow_without_a_gpu() -> None:
    """TensorFlow probes CUDA at its first operation, and the full wheel (the one keras-hub's
    tensorflow-text needs, so every kseg extra's) logs ``failed call to cuInit`` on a machine
    without an NVIDIA GPU. Run here, while start-up lines are dropped, the probe says nothing.
    With a GPU present the runtime starts when the user's code first needs it, so options that
    must come before it (memory growth, visible devices) still apply."""
    import keras

    if keras.backend.backend() == "tensorflow" and not glob.glob("/dev/nvidia*"):
        keras.ops.convert_to_numpy(keras.ops.zeros(()))


with _quiet_native_start_up() as quiet:
    _check_backend()
    if quiet:
        _start_tensorflow_without_a_gpu()

from kseg import (  # noqa: E402
    batch_norm,
    boundary,
    calibration,
    cli,
    config,
    data,
    device,
    ensemble,
    evaluation,
    executors,
    export,
    grid,
    group_ensembles,
    layers,
    leaderboard,
    losses,
    metrics,
    models,
    optimizers,
    precision,
    predict,
    presets,
    pretrained,
    quantize,
    refine,
    run,
    stats,
    training,
    transfer,
    visualize,
)

__all__ = [
    "batch_norm",
    "boundary",
    "calibration",
    "cli",
    "config",
    "data",
    "device",
    "ensemble",
    "evaluation",
    "executors",
    "export",
    "grid",
    "group_ensembles",
    "layers",
    "leaderboard",
    "losses",
    "metrics",
    "models",
    "optimizers",
    "precision",
    "predict",
    "presets",
    "pretrained",
    "quantize",
    "refine",
    "run",
    "stats",
    "training",
    "transfer",
    "visualize",
    "__version__",
]
