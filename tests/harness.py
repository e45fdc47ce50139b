"""The checks every kseg layer, loss and metric repeats, in one place (as keras-hub's
``run_layer_test``): the config round trip, the registered serialization, the ``.keras`` round
trip inside a model, and the output dtype under mixed bfloat16; and the skip of tests that need
keras-hub (the optional ``kseg[hub]`` extra) where it is missing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import pytest

from kseg.models.backbones import hub

# The pass that runs the backend_independent tests (tests/conftest.py says why PyTorch).
BACKEND_INDEPENDENT_PASS = "torch"
KERAS_HUB_MISSING = importlib.util.find_spec("keras_hub") is None
needs_keras_hub = pytest.mark.skipif(KERAS_HUB_MISSING, reason=f"keras-hub is not installed ({hub.INSTALL_HINT})")


def assert_config_round_trip(obj: Any) -> Any:
    """``from_config(get_config())`` gives the same config, the config is plain JSON, and
    ``keras.saving`` (de)serializes the object by its registered name. Returns the clone."""
    config = obj.get_config()
    json.dumps(config)  # .keras files hold JSON
    clone = type(obj).from_config(config)
    assert clone.get_config() == config
    blob = json.loads(json.dumps(keras.saving.serialize_keras_object(obj)))
    assert blob["registered_name"].startswith("kseg>"), blob["registered_name"]
    restored = keras.saving.deserialize_keras_object(blob)
    assert type(restored) is type(obj) and restored.get_config() == config
    return clone


def assert_layer_round_trip(
    make: Callable[[], keras.layers.Layer],
    x: np.ndarray,
    tmp_path: Path,
    bf16_output_dtype: str = "bfloat16",
    atol: float = 0.0,
) -> None:
    """For the layer ``make()`` builds: its config round trip; a model holding it saved to
    ``.keras`` and loaded without custom objects predicts the same on ``x``; and built under the
    mixed_bfloat16 policy its output has ``bf16_output_dtype``."""
    layer = make()
    layer(x)
    assert_config_round_trip(layer)
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, make()(inputs))
    path = tmp_path / f"{layer.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=atol, rtol=0
    )
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        out = make()(keras.ops.convert_to_tensor(x))
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.backend.standardize_dtype(out.dtype) == bf16_output_dtype
