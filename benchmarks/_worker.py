"""One (backend, precision, jit) benchmark configuration in its own process: for each model,
build, time training and inference, report.

Run by ``benchmarks/bench.py`` as ``python benchmarks/_worker.py '<json config>'`` with
``KERAS_BACKEND`` set in the environment (the backend is fixed once Keras is imported, so each
backend needs its own process). Prints one JSON object per model, each on its own stdout line.

Config keys: models (a list; or model, one name), image_size, base, depth, batch, precision,
jit_compile, steps, warmup, seed, budget_s (optional cap on each phase's seconds).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

# Quiet TensorFlow's C++ start-up chatter; it would drown the JSON line in the logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# Runnable from a source checkout without installation, and loadable by path (its siblings too).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import median_seconds  # noqa: E402


def forward_gflops(model) -> float:
    """FLOPs (2 x multiply-adds) of one image's forward pass: ``kseg.models.cost.forward_gflops``,
    the convention of torch_twin.forward_flops and torch's FlopCounterMode."""
    from kseg.models.cost import forward_gflops as count

    return count(model)


def _reset_peak_rss() -> None:
    """Linux: make the kernel's peak-RSS mark (VmHWM) restart from the current RSS, so the next
    reading is the peak of what ran since. Elsewhere a no-op (the peak then covers the process)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    """VmHWM since the last reset where /proc has it; else the process's ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return maxrss / (2**20 if platform.system() == "Darwin" else 2**10)


def run(config: dict[str, Any]) -> dict[str, Any]:
    """Times one model in one (backend, precision, jit) configuration; returns the result row."""
    import keras

    from kseg import losses, models

    # Free the previous model's graph and buffers first, then restart the peak-RSS mark: the
    # peak reported is this model's (plus whatever the allocator kept from earlier ones).
    keras.backend.clear_session()
    gc.collect()
    _reset_peak_rss()
    backend = keras.backend.backend()
    jit = bool(config["jit_compile"])
    if backend == "jax":
        jit = True  # Keras on JAX always traces and compiles with XLA.

    keras.utils.set_random_seed(config.get("seed", 0))
    keras.config.set_dtype_policy(config["precision"])
    size, batch = config["image_size"], config["batch"]
    build_start = time.perf_counter()
    model = models.build(
        config["model"],
        input_shape=(size, size, 3),
        base_filters=config["base"],
        depth=config["depth"],
        batch_norm=config.get("batch_norm", "keras"),
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),  # 1e-4: torch_twin's learning rate
        loss=losses.BCE(),
        jit_compile=jit,
    )
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 3), dtype=np.float32)
    y = (rng.random((batch, size, size, 1)) > 0.5).astype(np.float32)
    gflops = forward_gflops(model)

    # The first call traces/compiles; time it separately so compilation cost is visible.
    first = time.perf_counter()
    model.train_on_batch(x, y)
    first_train_s = time.perf_counter() - first
    # The first call counts as one of the ``warmup`` untimed calls, as in torch_twin.
    more_warmup = max(config["warmup"] - 1, 0)
    budget = float(config.get("budget_s") or float("inf"))
    train_s, train_times = median_seconds(lambda: model.train_on_batch(x, y), more_warmup, config["steps"], budget)

    first = time.perf_counter()
    model.predict_on_batch(x)
    first_infer_s = time.perf_counter() - first
    infer_s, infer_times = median_seconds(lambda: model.predict_on_batch(x), more_warmup, config["steps"], budget)

    exported = _exported_inference(model, x, more_warmup, config, budget) if config.get("onnx") else {}
    peak_mb = _peak_rss_mb()
    return {
        **exported,
        "backend": backend,
        "keras": keras.__version__,
        "model": config["model"],
        "precision": config["precision"],
        "jit": jit,
        "batch_norm": config.get("batch_norm", "keras"),
        "image_size": size,
        "base": config["base"],
        "depth": config["depth"],
        "batch": batch,
        "steps": config["steps"],
        "train_steps_timed": len(train_times),
        "infer_steps_timed": len(infer_times),
        "warmup": config["warmup"],
        # Trainable only: torch counts BN running stats as buffers, not parameters.
        "params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "gflops_fwd_per_image": gflops,
        "train_step_s": train_s,
        "infer_step_s": infer_s,
        "train_times_s": train_times,
        "infer_times_s": infer_times,
        "first_train_step_s": first_train_s,
        "first_infer_step_s": first_infer_s,
        "setup_s": time.perf_counter() - build_start,
        "train_img_s": batch / train_s,
        "infer_img_s": batch / infer_s,
        "train_gflop_s": 3 * gflops * batch / train_s,  # fwd + ~2x fwd for backward
        "peak_rss_mb": peak_mb,
    }


def _exported_inference(model, x, warmup: int, config: dict[str, Any], budget: float) -> dict[str, Any]:
    """Inference of ``model`` exported to ONNX and run by ONNX Runtime and by OpenVINO, timed by
    the same rule as ``predict_on_batch``: the path of ``python -m kseg export`` then ``predict
    --engine onnx|openvino``. Both steps run in processes of their own: tf2onnx's conversion, run
    in this one, slowed the next model's bfloat16 training here by a third (45 -> 32 img/s for
    unet2), and the runtimes are timed without a TensorFlow thread pool beside them (_engines.py).
    Without the row's figures where this backend cannot export or a step fails (``<engine>_error``)."""
    import subprocess
    import tempfile

    from kseg import export

    def failed(message: str) -> dict[str, str]:
        return {"onnx_error": message[:300], "openvino_error": message[:300]}

    reason = export.unsupported_reason("onnx")
    if reason:
        return failed(reason)
    with tempfile.TemporaryDirectory() as folder:
        keras_file, onnx_file = Path(folder) / "model.keras", Path(folder) / "model.onnx"
        model.save(keras_file)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "kseg",
                "export",
                "--model",
                str(keras_file),
                "--format",
                "onnx",
                "--output",
                str(onnx_file),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            return failed(f"kseg export exited {done.returncode}: {done.stderr.strip()[-300:]}")
        engine_config = {
            "path": str(onnx_file),
            "image_size": x.shape[1],
            "batch": len(x),
            "steps": config["steps"],
            "warmup": warmup,
            "budget_s": budget if budget != float("inf") else None,
        }
        done = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("_engines.py")), json.dumps(engine_config)],
            capture_output=True,
            text=True,
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return failed(f"_engines.py exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return json.loads(lines[-1])


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: _worker.py '<json config>'  (KERAS_BACKEND in the environment)")
    config = json.loads(argv[0])
    for model in config.pop("models", None) or [config.pop("model")]:
        print(json.dumps(run({**config, "model": model})), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
