"""The command lines' start of the backend: TensorFlow's C++ start-up lines (oneDNN, CPU features:
absl logs written before logging is initialised, which TF_CPP_MIN_LOG_LEVEL no longer stops) and
its CUDA probe say nothing about kseg's work, so a command drops them while Keras first imports
its backend, unless the user set TF_CPP_MIN_LOG_LEVEL. A library user's ``import kseg`` leaves
the process as it is."""

from __future__ import annotations

import contextlib
import glob
import os
import sys

from kseg._lazy import check_backend


@contextlib.contextmanager
def _quiet_native_start_up():
    """Drops what the process writes to file descriptor 2 in the body, unless the user set
    TF_CPP_MIN_LOG_LEVEL (then the lines show as TensorFlow decides) or Keras is already
    imported. Yields whether they are dropped."""
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


def _start_tensorflow_without_a_gpu() -> None:
    """TensorFlow probes CUDA at its first operation, and the full wheel (the one keras-hub's
    tensorflow-text needs, so every kseg extra's) logs ``failed call to cuInit`` on a machine
    without an NVIDIA GPU. Run while start-up lines are dropped, the probe says nothing. With a
    GPU present the runtime starts when the command first needs it, so options that must come
    before it (memory growth, visible devices) still apply."""
    import keras

    if keras.backend.backend() == "tensorflow" and not glob.glob("/dev/nvidia*"):
        keras.ops.convert_to_numpy(keras.ops.zeros(()))


def start_backend() -> None:
    """Imports Keras and its backend quietly, once the command line has parsed (``--help`` and
    argument errors need no backend). A missing backend raises an ImportError naming kseg's extras."""
    with _quiet_native_start_up() as quiet:
        check_backend()
        if quiet:
            _start_tensorflow_without_a_gpu()


__all__ = ["start_backend"]
