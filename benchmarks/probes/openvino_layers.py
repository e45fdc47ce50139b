#!/usr/bin/env python3
"""Where OpenVINO's inference time goes, layer by layer: a trained run's bf16 engine against its
int8 engine (``kseg.quantize``), from OpenVINO's own per-node performance counters.

For each run folder: the int8 model as ``python -m kseg export --format openvino-int8`` writes it
(calibrated on the run's training cases, gated on its validation cases), and the float32 ONNX
export compiled in bf16 (OpenVINO's ``auto`` on a CPU with bf16 hardware). Both are compiled for
one batch of ``--batch`` with ``PERF_COUNT`` on and called ``--steps`` times after ``--warmup``;
each executed node's ``real_time`` is summed per layer kind (from the Keras layer name the node
carries: conv, batchnorm, pooling positions, unpooling, ...) and per OpenVINO node type.

    KSEG_PH2_DIR=../shared/data/ph2 python benchmarks/probes/openvino_layers.py \
        --runs runs/segnet-bce-seed0-532467d79187
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))  # benchmarks/: _hardware
sys.path.insert(0, str(HERE.parent))  # the repo: kseg

# Layer kind from the kseg layer scope inside an OpenVINO node name (tf2onnx and OpenVINO keep
# TensorFlow's: ``segnet_1/enc0_pool_1/MaxPool2d__44``); the first match wins. A pool layer's
# first MaxPool is the pooling; its other nodes compute the positions.
_SCOPE = r"(_\d+)?/"
LAYER_KINDS = [
    ("max pool", r"_pool" + _SCOPE + r"MaxPool2d(__\d+)?$"),
    ("pooling positions", r"_pool" + _SCOPE),
    ("unpooling", r"_unpool" + _SCOPE),
    ("conv", r"_conv" + _SCOPE + "|logits"),
    ("batchnorm", r"_bn" + _SCOPE),
    ("relu", r"_relu" + _SCOPE),
    ("up-sampling", r"_up" + _SCOPE),
    ("concat", r"_concat" + _SCOPE),
]


def layer_kind(node_name: str, node_type: str) -> str:
    if node_type in ("Parameter", "Result"):
        return "input/output"
    for kind, pattern in LAYER_KINDS:
        if re.search(pattern, node_name):
            return kind
    if node_type in ("Reorder", "Convert", "FakeQuantize", "Transpose"):
        return f"({node_type.lower()}, unnamed)"
    return "other"


def node_times(path: Path, batch: np.ndarray, config: dict, steps: int, warmup: int) -> dict:
    """Mean ms per call of each executed node of the model file at ``path`` (ONNX or OpenVINO IR)
    on ``batch``, compiled with ``config`` and OpenVINO's performance counters on."""
    import openvino

    core = openvino.Core()
    model = core.read_model(str(path))
    model.reshape(list(batch.shape))
    request = core.compile_model(model, "CPU", {**config, "PERF_COUNT": "YES"}).create_infer_request()
    for _ in range(warmup):
        request.infer({0: batch})
    totals: collections.Counter = collections.Counter()
    kinds: dict[str, tuple[str, str]] = {}
    for _ in range(steps):
        request.infer({0: batch})
        for info in request.profiling_info:
            if info.status.name != "EXECUTED":
                continue
            totals[info.node_name] += info.real_time.total_seconds() * 1000 / steps
            kinds[info.node_name] = (info.node_type, info.exec_type)
    return {"ms": totals, "types": kinds}


def summarise(times: dict) -> tuple[collections.Counter, collections.Counter]:
    by_kind, by_type = collections.Counter(), collections.Counter()
    for name, ms in times["ms"].items():
        node_type, exec_type = times["types"][name]
        by_kind[layer_kind(name, node_type)] += ms
        by_type[f"{node_type} ({exec_type})"] += ms
    return by_kind, by_type


def report_engines(name: str, batch: int, size: int, engines: dict, top: int) -> None:
    summaries = {engine: summarise(times) for engine, times in engines.items()}
    bf16, int8 = summaries["bf16"][0], summaries["int8"][0]
    print(f"\n{name}, batch {batch} at {size} px: ms per call, summed over executed nodes\n")
    print("| layer kind | bf16 ms | int8 ms | int8 / bf16 |\n|---|---|---|---|")
    for kind in sorted(set(bf16) | set(int8), key=lambda k: -int8[k]):
        ratio = f"{int8[kind] / bf16[kind]:.2f}" if bf16[kind] > 0.005 else ""
        print(f"| {kind} | {bf16[kind]:.2f} | {int8[kind]:.2f} | {ratio} |")
    total_bf16, total_int8 = sum(bf16.values()), sum(int8.values())
    print(f"| **sum** | {total_bf16:.2f} | {total_int8:.2f} | {total_int8 / total_bf16:.2f} |")
    for engine, (_, by_type) in summaries.items():
        print(f"\n{engine} by node type (ms): " + ", ".join(f"{t} {ms:.2f}" for t, ms in by_type.most_common(10)))
    costliest = engines["int8"]["ms"].most_common(top)
    print("\ncostliest int8 nodes (ms): " + ", ".join(f"{n} {ms:.2f}" for n, ms in costliest))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="run folders of the grid (model.keras, split.json)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--top", type=int, default=12, help="how many of the costliest int8 nodes to list")
    args = p.parse_args(argv)

    from _hardware import device

    from kseg import export, predict, quantize

    print(device.describe(device.machine_info()), flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for run in map(Path, args.runs):
            model_path = run / "model.keras"
            report = quantize.quantize_run(model_path, Path(scratch) / f"{run.name}.int8.xml")
            onnx_path = export.export_model(predict.load_trained_model(model_path), Path(scratch) / f"{run.name}.onnx")
            size = json.loads((run / "config.json").read_text())["image_size"]  # the size it trained and exported at
            batch = np.random.default_rng(0).random((args.batch, size, size, 3), dtype=np.float32)
            latency = {"PERFORMANCE_HINT": "LATENCY"}
            engines = {
                "bf16": node_times(
                    onnx_path, batch, {**latency, "INFERENCE_PRECISION_HINT": "bf16"}, args.steps, args.warmup
                ),
                "int8": node_times(report.output, batch, latency, args.steps, args.warmup),
            }
            report_engines(run.name, args.batch, size, engines, args.top)


if __name__ == "__main__":
    main()
