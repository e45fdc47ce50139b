#!/usr/bin/env python3
"""What int8 would give the OpenVINO engine: a speed probe, not a feature.

Exports kseg's three networks (random weights, ``--base`` / ``--batch`` / 128 px, FastBN) to ONNX
as ``python -m kseg export`` does, quantises each with NNCF's post-training quantisation
(``nncf.quantize``, mixed preset, calibrated on ``--calibration`` random images) and times
OpenVINO on the float export (precision auto: bf16 on a CPU with bf16 hardware) against the int8
model, by the benchmark's timing rule, in this one process (TensorFlow exports in a subprocess).

    python benchmarks/probes/int8_probe.py --base 16 --batch 8

It measures speed only: with random weights and random calibration images it says nothing about
accuracy, which a real int8 engine would have to show on a labelled test split. Needs
``pip install nncf openvino``; prints one SKIP line without them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]  # benchmarks/: _timing, _hardware
sys.path.insert(0, str(HERE))

from _timing import median_seconds  # noqa: E402

EXPORT = """
import sys, keras
from kseg import export, models
name, base, size, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
keras.utils.set_random_seed(0)
model = models.build(name, input_shape=(size, size, 3), base_filters=base, depth=4, batch_norm="fast")
export.export_model(model, path)
"""


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["segnet", "unet", "unet2"])
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument(
        "--calibration", type=int, default=32, help="random images NNCF calibrates on (in batches of --batch)"
    )
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)
    missing = [m for m in ("nncf", "openvino") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"SKIP int8 probe: needs {', '.join(missing)} (pip install nncf openvino)")
        return []
    import nncf
    import openvino
    from _hardware import device as hardware

    print(hardware.describe(hardware.machine_info()), flush=True)
    core = openvino.Core()
    size, batch = args.image_size, args.batch
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 3), dtype=np.float32)
    # Calibration batches of the compiled batch size: the model is reshaped to it before quantising.
    batches = max(1, args.calibration // batch)
    calibration = nncf.Dataset([rng.random((batch, size, size, 3), dtype=np.float32) for _ in range(batches)])
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            path = Path(folder) / f"{name}.onnx"
            subprocess.run(
                [sys.executable, "-c", EXPORT, name, str(args.base), str(size), str(path)],
                check=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                capture_output=True,
            )
            model = core.read_model(str(path))
            model.reshape([batch, size, size, 3])
            quantised = nncf.quantize(model, calibration, subset_size=batches, preset=nncf.QuantizationPreset.MIXED)
            row = {"model": name, "base": args.base, "batch": batch, "image_size": size}
            for label, graph in (("float", model), ("int8", quantised)):
                compiled = core.compile_model(graph, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
                request = compiled.create_infer_request()
                seconds, _ = median_seconds(lambda: request.infer({0: x}), args.warmup, args.steps)
                row[f"{label}_img_s"] = batch / seconds
                row[f"{label}_precision"] = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
            row["int8_x_float"] = row["int8_img_s"] / row["float_img_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| model | OpenVINO float img/s | (runs in) | OpenVINO int8 img/s | int8 x float |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['float_img_s']:.1f} | {r['float_precision']} | {r['int8_img_s']:.1f} "
            f"| {r['int8_x_float']:.2f} |"
        )
    return rows


if __name__ == "__main__":
    main()
