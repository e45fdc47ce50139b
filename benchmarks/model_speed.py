"""Training and inference speed of any kseg models at one shape, on the active Keras backend:
the speed table of docs/models.md. (``bench.py`` compares the seed networks with
native PyTorch across backends; this is the quick per-model view.)

    python benchmarks/model_speed.py unet fpn:mobilenetv2 --image-size 128 --base 16 --batch 8
    python benchmarks/model_speed.py egeunet@8 unext@16 unet --precision float32 --jit false

``NAME@WIDTH`` builds that model at base width WIDTH (a light network at its paper's width)
instead of ``--base``. Each model: built with ``batch_norm="fast"`` under ``--precision`` (default:
what ``auto`` resolves to here), compiled with Adam and BCE (``--jit``; default as kseg resolves
it), ``--warmup`` untimed steps, then the median of ``--steps`` timed ``train_on_batch`` and
``predict_on_batch`` calls; GFLOPs are the counted forward FLOPs of one image
(``kseg.models.cost``). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np

from kseg import device, models
from kseg.experiment.config import resolve_jit_compile, resolve_precision
from kseg.models import cost


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
    p.add_argument("--precision", default="auto", help="auto, float32 or mixed_bfloat16")
    p.add_argument("--jit", default="auto", help="auto, true or false (XLA under TensorFlow)")
    args = p.parse_args(argv)

    precision = resolve_precision(args.precision)
    jit = resolve_jit_compile(args.jit)
    keras.config.set_dtype_policy(precision)
    print(
        f"{device.cpu_kind()} ({device.device_description()}), Keras {keras.version()} on {keras.backend.backend()}, "
        f"{precision}, jit {jit}, {args.image_size} px, batch {args.batch}"
    )
    print("| model | params | GFLOPs | train img/s | infer img/s |\n|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    size = args.image_size
    images = rng.random((args.batch, size, size, 3), dtype=np.float32)
    masks = (rng.random((args.batch, size, size, 1)) > 0.5).astype(np.float32)
    for spec in args.models:
        name, _, width = spec.partition("@")
        model = models.build(name, (size, size, 3), base_filters=int(width or args.base), batch_norm="fast")
        model.compile(optimizer="adam", loss="binary_crossentropy", jit_compile=jit)
        train = _median_seconds(lambda: model.train_on_batch(images, masks), args.steps, args.warmup)
        infer = _median_seconds(lambda: model.predict_on_batch(images), args.steps, args.warmup)
        print(
            f"| `{models.canonical_name(name)}`{'@' + width if width else ''} | {model.count_params() / 1e6:.3f}M "
            f"| {cost.forward_gflops(model):.3f} | {args.batch / train:.1f} | {args.batch / infer:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
