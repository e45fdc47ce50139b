"""Compile and fit one model for one RunConfig, with Keras callbacks, and keep its best weights."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path

import keras

from kseg import losses, metrics, models
from kseg.config import RunConfig, resolve_jit_compile
from kseg.data import SegmentationSequence, Split


@dataclasses.dataclass
class FitResult:
    """What ``fit`` leaves behind: the best model (by validation IoU) and how training went."""

    model: keras.Model
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    val_iou: float
    train_seconds: float
    diverged: bool


@contextlib.contextmanager
def dtype_policy(policy: str):
    """Sets the global Keras dtype policy for the duration of a build and fit."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class EpochLine(keras.callbacks.Callback):
    """One line per epoch, readable in a log file: epoch, losses, IoUs, learning rate, seconds."""

    def __init__(self, epochs: int, prefix: str = "", print_fn=print):
        super().__init__()
        self.epochs, self.prefix, self.print_fn = epochs, prefix, print_fn

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        shown = " ".join(f"{k}={v:.4f}" for k, v in logs.items() if k != "learning_rate")
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.print_fn(
            f"{self.prefix}epoch {epoch + 1:>3}/{self.epochs} {shown} lr={lr:.2e} "
            f"{time.perf_counter() - self._start:.1f}s",
        )


DISTRIBUTE = ("none", "data-parallel")


def check_distribute(distribute: str) -> None:
    """Raises ValueError where ``distribute`` cannot run here (before any run starts, ideally)."""
    if distribute not in DISTRIBUTE:
        raise ValueError(f"Unknown distribute {distribute!r}; choose one of {', '.join(DISTRIBUTE)}.")
    if distribute == "data-parallel" and keras.backend.backend() != "jax":
        raise ValueError(
            "data-parallel training needs the JAX backend (keras.distribution supports JAX only); "
            "run with KERAS_BACKEND=jax"
        )


def distribution_scope(distribute: str, batch_size: int, part_sizes: tuple[int, ...] = ()):
    """A context in which models are built and trained: none, or ``keras.distribution.DataParallel``
    over every local device (each batch split across them; gradients and BatchNorm statistics are
    those of the whole batch)."""
    check_distribute(distribute)
    if distribute == "none":
        return contextlib.nullcontext()
    devices = keras.distribution.list_devices()
    # Every batch, the last (smaller) one of each part included, must split evenly over devices.
    sizes = {batch_size} | {n % batch_size for n in part_sizes if n % batch_size}
    uneven = sorted(s for s in sizes if s % len(devices))
    if uneven:
        raise ValueError(
            f"data-parallel training splits each batch over {len(devices)} devices, so batch sizes must be "
            f"divisible by {len(devices)}; batch size {batch_size} (with data of {', '.join(map(str, part_sizes))} "
            f"cases) gives batches of {', '.join(map(str, uneven))}"
        )
    return keras.distribution.DataParallel(devices=devices).scope()


def build_model(config: RunConfig, policy: str) -> keras.Model:
    """The config's architecture, compiled with its loss, IoU and Dice, Adam and ``policy``."""
    with dtype_policy(policy):
        model = models.build(
            config.model,
            input_shape=(config.image_size, config.image_size, 3),
            base_filters=config.base_filters,
            depth=config.depth,
        )
    model.compile(
        optimizer=keras.optimizers.Adam(config.lr),
        loss=losses.get(config.loss),
        metrics=[metrics.IoU(), metrics.Dice()],
        jit_compile=resolve_jit_compile(config.jit_compile),
    )
    return model


def callbacks_for(config: RunConfig, run_dir: Path, verbose: bool) -> list[keras.callbacks.Callback]:
    """Best weights by validation IoU, early stopping, LR reduction on plateau, a learning-curve
    CSV, a stop on NaN, and the one-line-per-epoch display."""
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(
            run_dir / "best.weights.h5", monitor="val_iou", mode="max",
            save_best_only=True, save_weights_only=True,
        ),
        keras.callbacks.EarlyStopping(monitor="val_iou", mode="max", patience=config.patience),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_iou", mode="max", factor=0.5, patience=max(2, config.patience // 3), min_lr=1e-6,
        ),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv")),
    ]
    if verbose:
        callbacks.append(EpochLine(config.epochs, prefix=f"[{config.run_id}] "))
    return callbacks


def fit(config: RunConfig, data: Split, run_dir: str | Path, policy: str, verbose: bool = True, *,
        distribute: str = "none") -> FitResult:
    """Trains ``config``'s model on ``data.train``, validates on ``data.val`` every epoch and
    returns the model with the weights of its best validation-IoU epoch, saved as
    ``run_dir/model.keras``.

    One seed drives the initial weights, the batch order and the augmentation stream.
    ``distribute="data-parallel"`` trains on every local device (JAX backend only); batch sizes
    must divide evenly over them.
    """
    run_dir = Path(run_dir)
    scope = distribution_scope(distribute, config.batch_size, (len(data.train), len(data.val)))
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    train = SegmentationSequence(data.train, config.batch_size, shuffle=True, augment=config.augment, seed=config.seed)
    val = SegmentationSequence(data.val, config.batch_size, shuffle=False, augment=False)

    with scope:
        model = build_model(config, policy)
        start = time.perf_counter()
        history = model.fit(
            train, validation_data=val, epochs=config.epochs, verbose=0,
            callbacks=callbacks_for(config, run_dir, verbose),
        ).history
        train_seconds = time.perf_counter() - start

    losses_seen = history.get("loss", [])
    diverged = any(not math.isfinite(v) for v in losses_seen)
    val_ious = history.get("val_iou", [])
    if not val_ious or not (run_dir / "best.weights.h5").exists():
        raise RuntimeError(f"{config.run_id}: no epoch finished with a finite validation IoU")
    best_epoch = max(range(len(val_ious)), key=lambda i: val_ious[i])
    model.load_weights(run_dir / "best.weights.h5")
    model.save(run_dir / "model.keras")
    return FitResult(
        model=model,
        history=history,
        epochs_run=len(losses_seen),
        best_epoch=best_epoch + 1,
        val_iou=float(val_ious[best_epoch]),
        train_seconds=train_seconds,
        diverged=diverged,
    )
