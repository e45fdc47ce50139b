"""The benchmark worker on one tiny config of the current backend: fields, sanity, FLOP count."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "benchmarks" / "_worker.py"
TORCH_REFERENCE = REPO.parent / "shared" / "bench" / "torch_reference.py"
CONFIG = dict(model="unet", image_size=32, base=4, depth=4, batch=2, precision="float32",
              jit_compile=False, steps=1, warmup=1)


def _load_worker():
    spec = importlib.util.spec_from_file_location("kseg_bench_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def row() -> dict:
    """The worker's JSON row, from a subprocess exactly as bench.py runs it."""
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(WORKER), json.dumps(CONFIG)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_worker_row_fields(row):
    assert row["backend"] == keras.backend.backend()
    assert row["model"] == "unet" and row["image_size"] == 32 and row["batch"] == 2
    assert row["jit"] is (keras.backend.backend() == "jax")  # JAX always compiles
    for key in ("train_img_s", "infer_img_s", "train_gflop_s", "peak_rss_mb", "gflops_fwd_per_image"):
        assert isinstance(row[key], float) and row[key] > 0, key
    assert row["train_steps_timed"] == row["infer_steps_timed"] == 1
    assert row["train_img_s"] == pytest.approx(2 / row["train_step_s"])
    assert row["train_gflop_s"] == pytest.approx(3 * row["gflops_fwd_per_image"] * row["train_img_s"])


def test_gflops_of_a_single_conv_by_hand():
    """Conv2D 3->5, 3x3, same, on 8x8: 8*8*5 outputs x 3*3*3 MACs; Conv2DTranspose 5->2, k2 s2:
    8*8*5 inputs x 2*2*2 MACs; x2 for FLOPs."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(5, 3, padding="same")(inputs)
    x = keras.layers.Conv2DTranspose(2, 2, strides=2)(x)
    model = keras.Model(inputs, x)
    expected = 2 * (8 * 8 * 5 * 27 + 8 * 8 * 5 * 8) / 1e9
    assert _load_worker().forward_gflops(model) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["segnet", "unet", "unet2"])
def test_gflops_match_torch_reference(name):
    torch = pytest.importorskip("torch", reason="torch not installed: no native reference count")
    if not TORCH_REFERENCE.exists():
        pytest.skip(f"{TORCH_REFERENCE} not found (CI clones the repo next to shared/)")
    spec = importlib.util.spec_from_file_location("torch_reference", TORCH_REFERENCE)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    expected = reference.forward_gflops(reference.build(name, 4, 4), 32)
    from kseg import models

    model = models.build(name, input_shape=(32, 32, 3), base_filters=4, depth=4)
    assert _load_worker().forward_gflops(model) == pytest.approx(expected, rel=1e-12)
