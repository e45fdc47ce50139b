#!/usr/bin/env python3
"""SegNet's unpooling on TensorFlow, bf16: ``kseg.layers.MaxUnpooling2D``'s two formulations (the
values broadcast over their windows, its inference path; repeated over them, its training path)
against the one they replaced (kseg 0.3.0: a one-hot of the positions times the values, then a
6-D transpose back to an image), forward alone and forward + backward, each in a ``tf.function``.

    python benchmarks/probes/unpool_step.py

Shapes are the unpooled outputs of the ``cpu`` preset's first two levels (batch 8, base 16) and
of the default benchmark shape's first level (batch 16, base 32). Medians of 20 calls after 3
(``_timing.median_seconds``); both formulations are checked equal first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo: kseg
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _timing, _hardware

import numpy as np  # noqa: E402
from _timing import median_seconds  # noqa: E402

SHAPES = [(8, 128, 128, 16), (8, 64, 64, 32), (16, 128, 128, 32)]


def one_hot_unpooling(values, positions, pool_size: int = 2):
    """kseg 0.3.0's MaxUnpooling2D.call: (B, h, w, C, p*p) one-hot windows back to an image."""
    from keras import ops

    windows = ops.one_hot(positions, pool_size**2, dtype=values.dtype) * ops.expand_dims(values, -1)
    _, height, width, channels, _ = windows.shape
    windows = ops.reshape(windows, (-1, height, width, channels, pool_size, pool_size))
    windows = ops.transpose(windows, (0, 1, 4, 2, 5, 3))
    return ops.reshape(windows, (-1, height * pool_size, width * pool_size, channels))


def main() -> None:
    import tensorflow as tf
    from _hardware import device as hardware

    from kseg.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D

    print(hardware.describe(hardware.machine_info()))
    print("| unpooled shape | formulation | forward ms | forward + backward ms |\n|---|---|---|---|")
    layer = MaxUnpooling2D(dtype="mixed_bfloat16")  # as in a mixed_bfloat16 model: no cast to float32
    for shape in SHAPES:
        x = tf.cast(tf.random.normal(shape, seed=0), tf.bfloat16)
        pooled, positions = MaxPoolingWithArgmax2D()(x)
        variants = {
            "one-hot + 6-D transpose (0.3.0)": one_hot_unpooling,
            "MaxUnpooling2D, inference (broadcast)": lambda v, p: layer([v, p], training=False),
            "MaxUnpooling2D, training (repeat)": lambda v, p: layer([v, p], training=True),
        }
        outputs = [np.asarray(tf.cast(f(pooled, positions), tf.float32)) for f in variants.values()]
        for output in outputs[1:]:
            np.testing.assert_array_equal(output, outputs[0])
        for name, unpool in variants.items():
            forward = tf.function(lambda v, unpool=unpool: unpool(v, positions))

            @tf.function
            def forward_backward(v, unpool=unpool):
                with tf.GradientTape() as tape:
                    tape.watch(v)
                    loss = tf.reduce_sum(tf.cast(unpool(v, positions), tf.float32) ** 2)
                return tape.gradient(loss, v)

            fwd_s = median_seconds(lambda: forward(pooled).numpy(), 3, 20)[0]
            both_s = median_seconds(lambda: forward_backward(pooled).numpy(), 3, 20)[0]
            print(f"| {'x'.join(map(str, shape))} | {name} | {1e3 * fwd_s:.2f} | {1e3 * both_s:.2f} |")


if __name__ == "__main__":
    main()
