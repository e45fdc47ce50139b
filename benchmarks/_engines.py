"""Inference of an exported ``.onnx`` kseg model on each runtime that ``python -m kseg predict``
offers for it, in a process of its own: no TensorFlow thread pool beside the runtime's (a
deployed engine runs without one; in the Keras worker's process OpenVINO ran up to 1.6x slower).

Run by ``benchmarks/_worker.py`` as ``python benchmarks/_engines.py '<json config>'`` with config
keys path, image_size, batch, steps, warmup, budget_s (optional). Prints one JSON object:
``<engine>_infer_img_s`` and ``<engine>_infer_times_s`` per runtime installed (onnx: ONNX Runtime,
CPU provider; openvino: OpenVINO, precision auto), ``openvino_precision`` (what OpenVINO chose)
and ``<engine>_error`` where one failed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "numpy"  # kseg.export imports Keras; no framework runtime is needed here

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import median_seconds  # noqa: E402


def main(argv: list[str]) -> None:
    from kseg import export

    config = json.loads(argv[0])
    size, batch = config["image_size"], config["batch"]
    x = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
    budget = float(config.get("budget_s") or float("inf"))
    engines = {
        "onnx": lambda: export.OnnxEngine(config["path"], providers=["CPUExecutionProvider"]),
        "openvino": lambda: export.OpenVinoEngine(config["path"]),
    }
    result = {}
    for name, load in engines.items():
        try:
            engine = load()
            engine.predict(x, batch_size=batch)  # compiles (OpenVINO: for this batch size)
        except Exception as error:  # a missing runtime or a failed compile is a row note
            result[f"{name}_error"] = f"{type(error).__name__}: {error}"[:300]
            continue
        if name == "openvino":
            result["openvino_precision"] = engine.inference_precision(batch)
        seconds, times = median_seconds(
            lambda: engine.predict(x, batch_size=batch), config["warmup"], config["steps"], budget
        )
        result[f"{name}_infer_img_s"] = batch / seconds
        result[f"{name}_infer_times_s"] = times
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
