"""Where a `cpu`-preset epoch's time goes outside the network: the same model and optimizer timed
as bare ``train_on_batch`` steps, then through ``fit`` with each piece of the grid's loop added.

    python benchmarks/probes/fit_overhead.py egeunet@8 unext@16 unet --precision float32

Each model is compiled as the grid compiles it (``kseg.training.build_model`` of the `cpu`
preset's RunConfig) on a synthetic set of the preset's shape (100 training and 50 validation cases
at 128 px, batch 8: 13 steps an epoch, the last one of 4). Printed per variant: the median of the
steady epochs (the first, which traces, apart) and the first epoch's extra seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

import keras  # noqa: E402

from kseg import data, device  # noqa: E402
from kseg.experiment import training  # noqa: E402
from kseg.experiment.config import RunConfig  # noqa: E402
from kseg.precision import resolve_precision  # noqa: E402


class EpochSeconds(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def timed_fit(model, train, epochs: int, **fit_kwargs) -> tuple[float, float]:
    """(median steady epoch, first epoch minus it) in seconds."""
    clock = EpochSeconds()
    if train is not None:
        fit_kwargs["x"] = train
    model.fit(epochs=epochs, verbose=0, callbacks=[clock, *fit_kwargs.pop("callbacks", [])], **fit_kwargs)
    steady = statistics.median(clock.seconds[1:])
    return steady, clock.seconds[0] - steady


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", help="NAME or NAME@WIDTH")
    p.add_argument("--precision", default="auto")
    p.add_argument("--epochs", type=int, default=5)
    args = p.parse_args(argv)
    precision = resolve_precision(args.precision)
    print(f"{device.cpu_kind()}, Keras {keras.version()} on {keras.backend.backend()}, {precision}")

    cases = data.synthetic(150, image_size=128, seed=0)
    split = data.split(cases, seed=0, sizes=(100, 50, 0))
    print("| model | variant | steady epoch s | first epoch extra s | img/s |\n|---|---|---|---|---|")
    for spec in args.models:
        name, _, width = spec.partition("@")
        config = RunConfig.from_preset("cpu", model=name, loss="bce", base_filters=int(width or 16))
        steps = training.steps_per_epoch(len(split.train), config.batch_size)

        def fresh(**compile_changes):
            model = training.build_model(config, precision, len(split.train))
            if compile_changes:
                model.compile(optimizer=model.optimizer, loss=model.loss, **compile_changes)
            return model

        def show(variant: str, steady: float, extra: float) -> None:
            print(f"| {spec} | {variant} | {steady:.2f} | {extra:.2f} | {len(split.train) / steady:.1f} |")

        model = fresh()
        x, y = split.train.images[:8].astype("float32"), split.train.masks[:8].astype("float32")
        for _ in range(3):
            model.train_on_batch(x, y)
        step_times = []
        for _ in range(10):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            step_times.append(time.perf_counter() - start)
        show("train_on_batch x steps (no data, no loop)", statistics.median(step_times) * steps, 0.0)

        sequence = training.training_batches(config, split.train)
        plain = data.SegmentationSequence(split.train, config.batch_size, shuffle=True, augment=False)
        val = data.SegmentationSequence(split.val, config.batch_size, shuffle=False, augment=False)
        arrays = dict(x=split.train.images.astype("float32"), y=split.train.masks.astype("float32"), batch_size=8)
        even = dict(
            x=split.train.images[:96].astype("float32"), y=split.train.masks[:96].astype("float32"), batch_size=8
        )
        show("fit, numpy arrays (no augmentation)", *timed_fit(fresh(), None, args.epochs, **arrays))
        show("fit, numpy arrays, 96 cases (no partial batch)", *timed_fit(fresh(), None, args.epochs, **even))
        show("fit, numpy arrays, no metrics", *timed_fit(fresh(metrics=[]), None, args.epochs, **arrays))
        show("fit, PyDataset without augmentation", *timed_fit(fresh(), plain, args.epochs))
        show("fit, PyDataset with augmentation (the grid's)", *timed_fit(fresh(), sequence, args.epochs))
        show(
            "the grid's fit: + validation every epoch",
            *timed_fit(fresh(), sequence, args.epochs, validation_data=val, validation_freq=1),
        )


if __name__ == "__main__":
    main()
