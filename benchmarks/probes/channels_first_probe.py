"""Does building the model channels_first close Keras-on-PyTorch's gap to native PyTorch?

Keras's torch backend stores channels-last tensors and, in ``keras/src/backend/torch/nn.py``
``conv()``, permutes each input to channels-first (with a copy) and the result back. A model built
with ``data_format="channels_first"`` skips those permutes. This probe builds the seed U-Net's graph
(kseg's conv block: conv 3x3 -> ReLU -> BatchNorm, two per level, max-pool down, nearest up,
concatenation) once per data format from Keras layers, and times ``train_on_batch`` and
``predict_on_batch`` under ``KERAS_BACKEND=torch`` beside the native twin
(``torch_twin.py``, bf16 channels-last, the benchmark's reference) in the same process.

    KERAS_BACKEND=torch python benchmarks/probes/channels_first_probe.py --steps 8 --warmup 3

Prints one JSON object: img/s per variant and each as a ratio to the native twin.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import keras
import numpy as np
from keras import layers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/: _timing, torch_twin
from _timing import median_seconds  # noqa: E402


def unet(size: int, base: int, depth: int, data_format: str) -> keras.Model:
    """The seed U-Net (kseg.models.build("unet")) from Keras layers, in either data format."""
    axis = 1 if data_format == "channels_first" else -1
    shape = (3, size, size) if axis == 1 else (size, size, 3)

    def block(x, filters, name):
        x = layers.Conv2D(filters, 3, padding="same", data_format=data_format, name=f"{name}_conv")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        return layers.BatchNormalization(axis=axis, momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)

    inputs = keras.Input(shape)
    x, skips = inputs, []
    for level in range(depth):
        x = block(block(x, base * 2**level, f"enc{level}_block0"), base * 2**level, f"enc{level}_block1")
        skips.append(x)
        x = layers.MaxPooling2D(2, data_format=data_format, name=f"enc{level}_pool")(x)
    x = block(block(x, base * 2**depth, "bottom_block0"), base * 2**depth, "bottom_block1")
    for level in reversed(range(depth)):
        x = layers.UpSampling2D(2, data_format=data_format, name=f"dec{level}_up")(x)
        x = layers.Concatenate(axis=axis, name=f"dec{level}_concat")([x, skips[level]])
        x = block(block(x, base * 2**level, f"dec{level}_block0"), base * 2**level, f"dec{level}_block1")
    outputs = layers.Conv2D(1, 1, data_format=data_format, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=f"unet_{data_format}")


def time_keras(args, data_format: str) -> dict:
    keras.utils.set_random_seed(0)
    model = unet(args.image_size, args.base, args.depth, data_format)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    shape = (args.batch, args.image_size, args.image_size)
    x = rng.random((*shape, 3), dtype="float32")
    y = (rng.random((*shape, 1)) > 0.5).astype("float32")
    if data_format == "channels_first":
        x, y = x.transpose(0, 3, 1, 2).copy(), y.transpose(0, 3, 1, 2).copy()
    train_s, _ = median_seconds(lambda: model.train_on_batch(x, y), args.warmup, args.steps)
    infer_s, _ = median_seconds(lambda: model.predict_on_batch(x), args.warmup, args.steps)
    return {"params": model.count_params(), "train_img_s": args.batch / train_s, "infer_img_s": args.batch / infer_s}


def time_native(args) -> dict:
    import torch_twin

    row = torch_twin.time_mode(
        argparse.Namespace(
            model="unet",
            base=args.base,
            depth=args.depth,
            image_size=args.image_size,
            batch=args.batch,
            warmup=args.warmup,
            steps=args.steps,
            budget=0,
        ),
        "bf16-cl",
    )
    return {key: row[key] for key in ("params", "train_img_s", "infer_img_s")}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", default="mixed_bfloat16", choices=["mixed_bfloat16", "float32"])
    args = p.parse_args(argv)
    if keras.backend.backend() != "torch":
        raise SystemExit("run with KERAS_BACKEND=torch: the probe measures Keras's torch backend")
    keras.config.set_dtype_policy(args.precision)
    result = {"native bf16-cl": time_native(args)}
    for data_format in ("channels_last", "channels_first"):
        result[f"keras {data_format}"] = time_keras(args, data_format)
    native = result["native bf16-cl"]
    for row in result.values():
        row["train_x_native"] = row["train_img_s"] / native["train_img_s"]
        row["infer_x_native"] = row["infer_img_s"] / native["infer_img_s"]
    report = {"shape": vars(args), "results": result}
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
