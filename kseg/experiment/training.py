"""Compile and fit one model for one RunConfig, with Keras callbacks, and keep its best weights."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Sequence

import keras

from kseg import batch_norm, losses, metrics, models, optimizers
from kseg._errors import unknown_name
from kseg.data import SegmentationDataset, SegmentationSequence, SourceMixSequence, Split, batch_shares
from kseg.experiment import transfer
from kseg.experiment.config import RunConfig, resolve_jit_compile
from kseg.models import deep_supervision


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
    init: transfer.InitReport | None = None
    side_output: str = ""  # deep supervision: "final" or "mean", the one the model predicts with


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
        raise unknown_name("distribute", distribute, DISTRIBUTE)
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


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)


def learning_rate(config: RunConfig, n_train: int):
    """The config's learning rate: a float for ``plateau``/``constant``, else a schedule of linear
    warm-up from ``lr / 10`` over ``warmup_epochs`` then cosine decay to ``lr / 100`` at the
    last step of the budget."""
    if config.schedule in ("plateau", "constant"):
        return config.lr
    steps = steps_per_epoch(n_train, config.batch_size)
    warmup = min(config.warmup_epochs, config.epochs - 1) * steps
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.lr / 10 if warmup else config.lr,
        warmup_target=config.lr if warmup else None,
        warmup_steps=warmup,
        decay_steps=config.epochs * steps - warmup,
        alpha=0.01,
    )


def optimizer_for(
    config: RunConfig, n_train: int, encoder_variables: list[str] | None = None
) -> keras.optimizers.Optimizer:
    """Adam, or AdamW where ``weight_decay`` > 0; with an EMA of the weights where ``ema`` > 0;
    where the config freezes or slows the encoder, kseg's variant that scales the rate of
    ``encoder_variables`` (:mod:`kseg.optimizers`)."""
    ema = dict(use_ema=True, ema_momentum=config.ema) if config.ema else {}
    lr = learning_rate(config, n_train)
    decay = dict(weight_decay=config.weight_decay) if config.weight_decay else {}
    if scales_encoder(config):
        rate = dict(
            encoder_variables=encoder_variables or [],
            encoder_lr_factor=config.encoder_lr_factor,
            freeze_steps=config.freeze_encoder_epochs * steps_per_epoch(n_train, config.batch_size),
        )
        optimizer = optimizers.EncoderRateAdamW if config.weight_decay else optimizers.EncoderRateAdam
        return optimizer(lr, **decay, **ema, **rate)
    optimizer = keras.optimizers.AdamW if config.weight_decay else keras.optimizers.Adam
    return optimizer(lr, **decay, **ema)


def scales_encoder(config: RunConfig) -> bool:
    """Whether the config freezes or slows the encoder (kseg's optimizer variant is needed)."""
    return bool(config.freeze_encoder_epochs) or config.encoder_lr_factor != 1.0


def encoder_layers(config: RunConfig) -> list[str]:
    """The names of the layers of the config's encoder (:func:`kseg.models.build_encoder`)."""
    encoder = models.build_encoder(
        config.model,
        input_shape=(config.image_size, config.image_size, 3),
        base_filters=config.base_filters,
        depth=config.depth,
        batch_norm=config.batch_norm,
    )
    return [layer.name for layer in encoder.layers]


def build_architecture(config: RunConfig, policy: str) -> keras.Model:
    """The config's architecture under ``policy``, uncompiled and freshly initialised."""
    with dtype_policy(policy):
        return models.build(
            config.model,
            input_shape=(config.image_size, config.image_size, 3),
            base_filters=config.base_filters,
            depth=config.depth,
            colour_constancy=config.colour_constancy,
            batch_norm=config.batch_norm,
            encoder_weights=config.encoder_weights or None,
        )


def check_init(config: RunConfig) -> transfer.InitReport:
    """Builds the config's architecture and loads its ``init_from`` source into it, so that a
    source that is missing, not a kseg model or matching nothing raises before any run starts."""
    return transfer.load_matching_weights(build_architecture(config, "float32"), config.init_from)


def build_model(config: RunConfig, policy: str, n_train: int = 100) -> keras.Model:
    """The config's architecture, compiled with its loss, IoU and Dice, its optimizer and ``policy``;
    with ``deep_supervision``, its training twin (:func:`kseg.models.deep_supervision.training_model`)
    under :class:`kseg.losses.DeepSupervision`."""
    model = build_architecture(config, policy)
    loss = losses.get(config.loss)
    if config.deep_supervision:
        with dtype_policy(policy):
            weights = deep_supervision.side_weights(model)
            model = deep_supervision.training_model(model)
        loss = losses.DeepSupervision(loss, weights)
    encoder_variables = None
    if scales_encoder(config):
        encoder_variables = optimizers.encoder_variable_paths(model, encoder_layers(config))
    model.compile(
        optimizer=optimizer_for(config, n_train, encoder_variables),
        loss=loss,
        metrics=[metrics.IoU(), metrics.Dice()],
        jit_compile=resolve_jit_compile(config.jit_compile),
    )
    return model


class BestFiniteCheckpoint(keras.callbacks.Callback):
    """Keeps (in memory) the weights of the best validation epoch, counting only epochs whose
    training loss stayed finite: Keras validates after ``TerminateOnNaN`` has stopped an epoch,
    and NaN logits still give a finite IoU, so a plain ``ModelCheckpoint`` can keep NaN weights.

    A copy in memory rather than a file per improvement: at the cpu preset's size a ``.h5`` write
    cost a noticeable share of a 3-second epoch, and ``fit`` writes the best model once at the end.
    Epochs without validation (``validation_freq``) are skipped silently.
    """

    def __init__(self, monitor: str = "val_iou"):
        super().__init__()
        self.monitor = monitor
        self.best, self.best_epoch, self.best_weights, self.diverged = -math.inf, None, None, False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not math.isfinite(float(logs.get("loss", math.nan))):
            self.diverged = True
            self.model.stop_training = True
            return
        value = logs.get(self.monitor)
        if value is None or not math.isfinite(float(value)) or float(value) <= self.best:
            return
        self.best, self.best_epoch = float(value), epoch + 1
        self.best_weights = self.model.get_weights()


def validation_epochs(config: RunConfig) -> list[int]:
    """1-based epochs that validate: every ``val_every``-th, and always the last."""
    return sorted({*range(config.val_every, config.epochs + 1, config.val_every), config.epochs})


def callbacks_for(
    config: RunConfig, run_dir: Path, verbose: bool
) -> tuple[BestFiniteCheckpoint, list[keras.callbacks.Callback]]:
    """A stop on NaN, EMA weights for validation and checkpoints (if ``ema``), the best finite
    checkpoint by validation IoU, early stopping and LR halving on plateau (``plateau`` schedule
    only: a cosine schedule is a fixed budget), a learning-curve CSV and the one-line display."""
    checkpoint = BestFiniteCheckpoint()
    callbacks: list[keras.callbacks.Callback] = [keras.callbacks.TerminateOnNaN()]
    if config.ema:
        # Before the checkpoint, so that it saves the averaged weights.
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    callbacks.append(checkpoint)
    if config.schedule == "plateau" and config.val_every == 1:
        callbacks += [
            keras.callbacks.EarlyStopping(monitor="val_iou", mode="max", patience=config.patience),
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_iou",
                mode="max",
                factor=0.5,
                patience=max(2, config.patience // 3),
                min_lr=1e-6,
            ),
        ]
    callbacks.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv")))
    if verbose:
        callbacks.append(EpochLine(config.epochs, prefix=f"[{config.run_id}] "))
    return checkpoint, callbacks


class DivergedError(RuntimeError):
    """Training produced a non-finite loss before any epoch could be kept."""


def fit(
    config: RunConfig,
    data: Split,
    run_dir: str | Path,
    policy: str,
    verbose: bool = True,
    *,
    distribute: str = "none",
    joint: Sequence[SegmentationDataset] = (),
) -> FitResult:
    """Trains ``config``'s model on ``data.train``, validates on ``data.val`` (every
    ``val_every`` epochs and at the last) and returns the model with the weights of its best
    validation-IoU epoch among those whose loss stayed finite, saved as ``run_dir/model.keras``.

    One seed drives the initial weights, the batch order and the augmentation stream.
    ``distribute="data-parallel"`` trains on every local device (JAX backend only); batch sizes
    must divide evenly over them. With ``config.init_from`` the model starts from that source's
    weights where layer names and shapes match (:func:`kseg.experiment.transfer.load_matching_weights`;
    ``FitResult.init`` counts them). With ``joint`` sets (other sources' training parts) every
    batch draws ``config.joint_ratio`` of its cases from them, split evenly, and the rest from
    ``data.train`` (:func:`training_batches`). Raises :class:`DivergedError` when no finite epoch
    was kept.
    """
    run_dir = Path(run_dir)
    scope = distribution_scope(distribute, config.batch_size, (len(data.train), len(data.val)))
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    train = training_batches(config, data.train, joint)
    val = SegmentationSequence(data.val, config.batch_size, shuffle=False, augment=False)

    with scope:
        model = build_model(config, policy, len(train) * config.batch_size)
        init = transfer.load_matching_weights(model, config.init_from) if config.init_from else None
        checkpoint, callbacks = callbacks_for(config, run_dir, verbose)
        start = time.perf_counter()
        history = model.fit(
            train,
            validation_data=val,
            epochs=config.epochs,
            verbose=0,
            callbacks=callbacks,
            validation_freq=validation_epochs(config),
        ).history
        train_seconds = time.perf_counter() - start

    losses_seen = history.get("loss", [])
    if checkpoint.best_epoch is None:
        raise DivergedError(
            f"{config.run_id}: "
            + (
                "the loss became NaN before any epoch could be kept"
                if checkpoint.diverged
                else "no validated epoch gave a finite validation IoU"
            )
        )
    model.set_weights(checkpoint.best_weights)
    if config.precise_bn:
        batch_norm.recalibrate(model, data.train.images, config.batch_size)
    side_output = ""
    if config.deep_supervision:
        model, side_output = _choose_side_output(model, data.val, config)
    model.save(run_dir / "model.keras")
    return FitResult(
        model=model,
        history=history,
        epochs_run=len(losses_seen),
        best_epoch=checkpoint.best_epoch,
        val_iou=checkpoint.best,
        train_seconds=train_seconds,
        diverged=checkpoint.diverged,
        init=init,
        side_output=side_output,
    )


def _choose_side_output(trained: keras.Model, val: SegmentationDataset, config: RunConfig) -> tuple[keras.Model, str]:
    """The one-output model a deeply supervised run keeps: its final logits or the mean of every
    head's, whichever has the higher validation IoU (the final one on ties: the cheaper)."""
    architecture = models.canonical_name(config.model)
    candidates = {
        mode: deep_supervision.inference_model(trained, mode, architecture) for mode in deep_supervision.MODES
    }
    iou = metrics.IoU()
    scores = {}
    for mode, model in candidates.items():
        logits = model.predict(val.images, batch_size=config.batch_size, verbose=0)
        scores[mode] = float(keras.ops.convert_to_numpy(iou.per_image(val.masks, logits)).mean())
    best = max(deep_supervision.MODES, key=lambda mode: scores[mode])  # max keeps "final" on ties
    return candidates[best], best


def training_batches(
    config: RunConfig, train: SegmentationDataset, joint: Sequence[SegmentationDataset] = ()
) -> SegmentationSequence | SourceMixSequence:
    """The training batches: ``train`` alone, or with ``joint`` sets mixed in by fixed shares,
    ``1 - joint_ratio`` of every batch from ``train`` and ``joint_ratio`` split evenly over the
    joint sets (:func:`kseg.data.batch_shares`); an epoch is one pass over ``train`` either way."""
    options = dict(augment=config.augment != "none", seed=config.seed, augment_options=augment_options(config))
    if not joint:
        return SegmentationSequence(train, config.batch_size, shuffle=True, **options)
    if not config.joint_ratio:
        raise ValueError(f"{config.run_id}: joint training sets given but joint_ratio is 0")
    fractions = [1 - config.joint_ratio] + [config.joint_ratio / len(joint)] * len(joint)
    return SourceMixSequence([train, *joint], batch_shares(config.batch_size, fractions), **options)


def augment_options(config: RunConfig) -> dict:
    """Keyword arguments of :func:`kseg.data.augment_pair` for the config's augmentation."""
    options = {"geometric": True, "photometric": config.augment == "full", "min_scale": config.min_scale}
    if config.augment == "flips":
        options["affine_probability"] = 0.0
    if config.illuminant:
        options["illuminant"] = config.illuminant
    return options


__all__ = [
    "FitResult",
    "dtype_policy",
    "EpochLine",
    "DISTRIBUTE",
    "check_distribute",
    "distribution_scope",
    "steps_per_epoch",
    "learning_rate",
    "optimizer_for",
    "scales_encoder",
    "encoder_layers",
    "build_architecture",
    "check_init",
    "build_model",
    "BestFiniteCheckpoint",
    "validation_epochs",
    "callbacks_for",
    "DivergedError",
    "fit",
    "training_batches",
    "augment_options",
]
