#!/usr/bin/env python3
"""One 3x3 convolution's forward, weight-gradient and input-gradient op, timed alone in
TensorFlow and in PyTorch (bf16, channels-last), at the levels of kseg's ``cpu``-preset U-Net.

    python benchmarks/probes/conv_kernels.py            # runs itself once per framework, one process each

Separates what the per-layer profile cannot: whether TensorFlow's convolution ops are slower on
their own, or only when it runs two ops at once. Each figure is the median of 20 calls after 3
(``_timing.median_seconds``); TensorFlow's include a ``tf.function`` call and a ``.numpy()``
fetch, whose cost alone (a one-element op) is printed as ``call_overhead_ms``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # benchmarks/: _timing, _hardware
sys.path.insert(0, str(HERE))

#: (batch, height = width, in channels = out channels): the cpu preset's levels at batch 8.
LEVELS = [(8, 128, 16), (8, 64, 32), (8, 32, 64), (8, 16, 128)]


def time_tensorflow() -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from _timing import median_seconds

    result = {}
    for batch, side, channels in LEVELS:
        x = tf.cast(tf.random.normal((batch, side, side, channels)), tf.bfloat16)
        kernel = tf.cast(tf.random.normal((3, 3, channels, channels)), tf.bfloat16)
        dy = tf.cast(tf.random.normal((batch, side, side, channels)), tf.bfloat16)
        ops = {
            "fwd": tf.function(lambda: tf.nn.conv2d(x, kernel, 1, "SAME")),
            "bwd_w": tf.function(
                lambda: tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=tf.shape(kernel), out_backprop=dy, strides=[1, 1, 1, 1], padding="SAME"
                )
            ),
            "bwd_d": tf.function(
                lambda: tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(x), filter=kernel, out_backprop=dy, strides=[1, 1, 1, 1], padding="SAME"
                )
            ),
            "call_overhead": tf.function(lambda: x[:1, :1, :1, :1] + 1),
        }
        result[f"{side}x{side}x{channels}"] = {
            f"{name}_ms": 1e3 * median_seconds(lambda op=op: op().numpy(), 3, 20)[0] for name, op in ops.items()
        }
    return result


def time_torch() -> dict:
    import torch
    from _timing import median_seconds

    result = {}
    with torch.no_grad():
        for batch, side, channels in LEVELS:

            def tensor(*shape):
                return torch.randn(*shape).to(torch.bfloat16).to(memory_format=torch.channels_last)

            x, kernel, dy = (
                tensor(batch, channels, side, side),
                tensor(channels, channels, 3, 3),
                tensor(batch, channels, side, side),
            )

            def backward(mask):
                return torch.ops.aten.convolution_backward(
                    dy, x, kernel, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask
                )

            ops = {
                "fwd": lambda: torch.nn.functional.conv2d(x, kernel, padding=1),
                "bwd_w": lambda: backward([False, True, False]),
                "bwd_d": lambda: backward([True, False, False]),
            }
            result[f"{side}x{side}x{channels}"] = {
                f"{name}_ms": 1e3 * median_seconds(op, 3, 20)[0] for name, op in ops.items()
            }
    return result


def main() -> None:
    if len(sys.argv) > 1:
        print(json.dumps({"tensorflow": time_tensorflow, "torch": time_torch}[sys.argv[1]]()))
        return
    from _hardware import device as hardware

    print(hardware.describe(hardware.machine_info()))
    times = {}
    for framework in ("tensorflow", "torch"):
        done = subprocess.run([sys.executable, __file__, framework], capture_output=True, text=True, check=True)
        times[framework] = json.loads(done.stdout.strip().splitlines()[-1])
    print("| level | op | TensorFlow ms | PyTorch ms | TF / torch |\n|---|---|---|---|---|")
    for level, tf_ops in times["tensorflow"].items():
        print(f"| {level} | call overhead (TF) | {tf_ops['call_overhead_ms']:.2f} | | |")
        for op in ("fwd", "bwd_w", "bwd_d"):
            tf_ms, torch_ms = tf_ops[f"{op}_ms"], times["torch"][level][f"{op}_ms"]
            print(f"| {level} | {op} | {tf_ms:.2f} | {torch_ms:.2f} | {tf_ms / torch_ms:.2f} |")


if __name__ == "__main__":
    main()
