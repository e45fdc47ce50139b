"""Training and inference speed of any kseg models at one shape, on the active Keras backend:
the speed table of docs/models.md. (``bench.py`` compares the seed networks with
native PyTorch across backends; this is the quick per-model view.)

    python benchmarks/model_speed.py unet fpn:mobilenetv2 --image-size 128 --base 16 --batch 8

Each model: built with ``batch_norm="fast"`` under the precision ``auto`` resolves to here,
compiled with Adam and BCE (jit as kseg resolves it), ``--warmup`` untimed steps, then the median
of ``--steps`` timed ``train_on_batch`` and ``predict_on_batch`` calls. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np

from kseg import device, models
from kseg.config import resolve_jit_compile, resolve_precision


def _median_seconds(step, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="DECODER or DECODER:ENCODER")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args(argv)

    precision = resolve_precision("auto")
    keras.config.set_dtype_policy(precision)
    print(f"{device.device_description()}, Keras {keras.version()} on {keras.backend.backend()}, {precision}")
    print("| model | params | train img/s | infer img/s |\n|---|---|---|---|")
    rng = np.random.default_rng(0)
    size = args.image_size
    images = rng.random((args.batch, size, size, 3), dtype=np.float32)
    masks = (rng.random((args.batch, size, size, 1)) > 0.5).astype(np.float32)
    for name in args.models:
        model = models.build(name, (size, size, 3), base_filters=args.base, batch_norm="fast")
        model.compile(optimizer="adam", loss="binary_crossentropy", jit_compile=resolve_jit_compile("auto"))
        train = _median_seconds(lambda: model.train_on_batch(images, masks), args.steps, args.warmup)
        infer = _median_seconds(lambda: model.predict_on_batch(images), args.steps, args.warmup)
        print(
            f"| `{models.canonical_name(name)}` | {model.count_params() / 1e6:.2f}M "
            f"| {args.batch / train:.1f} | {args.batch / infer:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
