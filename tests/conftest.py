"""Suite-wide test options.

``backend_independent``: a test whose outcome does not depend on the Keras backend (the
leaderboard file, data loading and splits, the README and docs/, numpy-only scores, the PyTorch twin).
CI runs the suite once per backend; such tests run only in the PyTorch pass (and when
``KERAS_BACKEND`` is unset: a plain ``pytest`` runs everything) and are deselected under
``KERAS_BACKEND=tensorflow`` or ``jax``, so they are not run three times. PyTorch, because its
eager steps make the small models these tests train cheapest: the subset took 225 s under
PyTorch against 322 s under TensorFlow on a 2-core CPU (``-m backend_independent -n 2``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# pytest -n N: N workers share the cores, and each backend would start a thread per core in every
# worker and in every process a test starts (grids, pools, subprocesses), several times the
# cores. Each worker, and what it starts, gets its share instead; set before any backend starts.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _variable in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(_variable, _threads)
    if _threads == "1":
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

# XLA compiles each op a JAX test runs eagerly (every weight initializer, once per shape: 0.9 s each
# on a 2-core AVX2 EPYC, 21 s to build a small U-Net) and every step it traces. The tests' models
# are tiny, so compile time is what counts: with LLVM's optimisation off that U-Net builds in 2.7 s
# and its first training step compiles in 4.6 s instead of 7.9 s (its step runs 0.018 s, not 0.011).
# Every pass: JAX subprocesses run under TensorFlow and PyTorch too.
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

# JAX compiles every model a test trains or calls; many tests build the same small models, so the
# pass shares one compilation cache, made here by the controller (workers and the processes tests
# start inherit it) and removed when the session ends (pytest_unconfigure).
if os.environ.get("KERAS_BACKEND") == "jax" and not os.environ.get("PYTEST_XDIST_WORKER"):
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="kseg-tests-jax-cache-")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import keras
import matplotlib
import pytest

from tests.harness import BACKEND_INDEPENDENT_PASS


def pytest_unconfigure(config):
    cache = Path(os.environ.get("JAX_COMPILATION_CACHE_DIR", ""))
    if cache.name.startswith("kseg-tests-jax-cache-") and not os.environ.get("PYTEST_XDIST_WORKER"):
        shutil.rmtree(cache, ignore_errors=True)


def _runs_backend_independent_tests() -> bool:
    return os.environ.get("KERAS_BACKEND", "") in ("", BACKEND_INDEPENDENT_PASS)


def pytest_collection_modifyitems(config, items):
    if _runs_backend_independent_tests():
        return
    kept, deselected = [], []
    for item in items:
        (deselected if item.get_closest_marker("backend_independent") else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture
def pdf_backend():
    """Switches matplotlib to another backend for a test that checks kseg leaves it alone."""
    previous = matplotlib.get_backend()
    matplotlib.use("pdf")
    yield "pdf"
    matplotlib.use(previous)


@pytest.fixture
def mixed_bfloat16():
    """Runs the test under the mixed_bfloat16 dtype policy and always restores float32."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")
