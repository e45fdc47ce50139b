#!/usr/bin/env python3
"""One training step with Keras' BatchNormalization against kseg's FastBatchNormalization.

Builds two copies of a small network at the U-Net's first-level shapes (128 px input, ``k`` times
Conv3x3 -> ReLU -> BN with ``base`` filters, then a 1x1 logit), identical but for the BN layer
and starting from the same weights, and times ``model.train_on_batch`` (forward, backward and
the optimizer; XLA as Keras' ``jit_compile="auto"`` picks it: off for TensorFlow on CPU and for
torch, on for JAX) alternately in one process, A B, B A, A B, ..., so that whatever else the
machine is doing slows both alike. Prints the median step time of each after warm-up and the
median of the per-pair ratios fast / keras (below 1: the fast layer is faster).

    python benchmarks/probes/bn_microbench.py                       # TensorFlow, bf16 and fp32
    python benchmarks/probes/bn_microbench.py --backend jax --steps 10
    python benchmarks/probes/bn_microbench.py --layers bn           # BN layers only, no convolutions

``--layers bn`` drops the convolutions (``k`` BN layers on a ``base``-channel input, then the
logit), so the ratio is BN's own; ``conv`` (the default) shows what it is worth in a network.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"), choices=("tensorflow", "jax", "torch")
    )
    parser.add_argument("--precisions", nargs="+", default=["mixed_bfloat16", "float32"])
    parser.add_argument("--bases", nargs="+", type=int, default=[16, 32])
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 16])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=2, help="conv blocks (or BN layers) k")
    parser.add_argument("--layers", choices=("conv", "bn"), default="conv")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    return parser.parse_args(argv)


def build(bn_class, args, base, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    channels = 3 if args.layers == "conv" else base
    inputs = keras.Input((args.size, args.size, channels))
    x = inputs
    for i in range(args.blocks):
        if args.layers == "conv":
            x = keras.layers.Conv2D(base, 3, padding="same", name=f"b{i}_conv")(x)
            x = keras.layers.ReLU(name=f"b{i}_relu")(x)
        x = bn_class(momentum=0.9, epsilon=1e-5, name=f"b{i}_bn")(x)
    outputs = keras.layers.Conv2D(1, 1, name="logits", dtype="float32")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        jit_compile="auto",
    )
    return model


def compare(args, precision, base, batch):
    import keras
    import numpy as np

    from kseg.layers import FastBatchNormalization

    keras.config.set_dtype_policy(precision)
    models = {
        "keras": build(keras.layers.BatchNormalization, args, base),
        "fast": build(FastBatchNormalization, args, base),
    }
    models["fast"].set_weights(models["keras"].get_weights())
    rng = np.random.default_rng(0)
    channels = 3 if args.layers == "conv" else base
    x = rng.uniform(size=(batch, args.size, args.size, channels)).astype("float32")
    y = (rng.uniform(size=(batch, args.size, args.size, 1)) > 0.5).astype("float32")
    first = {name: float(model.train_on_batch(x, y)) for name, model in models.items()}
    for _ in range(args.warmup - 1):
        for model in models.values():
            model.train_on_batch(x, y)
    times = {"keras": [], "fast": []}
    order = ["keras", "fast"]
    for step in range(args.steps):
        for name in order if step % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            models[name].train_on_batch(x, y)
            times[name].append(time.perf_counter() - start)
    ratios = [f / k for f, k in zip(times["fast"], times["keras"])]
    row = {
        "precision": precision,
        "base": base,
        "batch": batch,
        "keras_ms": 1e3 * statistics.median(times["keras"]),
        "fast_ms": 1e3 * statistics.median(times["fast"]),
        "ratio": statistics.median(ratios),
        "first_loss_diff": abs(first["fast"] - first["keras"]),
    }
    keras.config.set_dtype_policy("float32")
    return row


def main(argv=None):
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend
    sys.path.insert(0, str(REPO))
    import keras

    print(
        f"backend {keras.backend.backend()}, keras {keras.__version__}, layers {args.layers}, "
        f"k={args.blocks}, {args.size} px, {args.steps} timed steps each after {args.warmup} "
        f"warm-up, interleaved; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print("precision        base batch   keras ms    fast ms  fast/keras  |first loss diff|")
    rows = []
    for precision in args.precisions:
        for base in args.bases:
            for batch in args.batches:
                row = compare(args, precision, base, batch)
                rows.append(row)
                print(
                    f"{precision:15s} {base:5d} {batch:5d} {row['keras_ms']:10.1f} {row['fast_ms']:10.1f}"
                    f" {row['ratio']:11.3f}  {row['first_loss_diff']:.2e}",
                    flush=True,
                )
    return rows


if __name__ == "__main__":
    main()
