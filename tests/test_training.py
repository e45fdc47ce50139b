"""Every model x loss pair learns, kseg models save and load (moving between backends:
test_model_family, whose .keras files hold the weights in the same store as ``save_weights``), and a loss
that turns NaN leaves either no model (NaN from the start) or the best finite epoch's."""

import math

import keras
import numpy as np
import pytest

import kseg
from kseg.data import SegmentationSequence
from kseg.experiment import training
from kseg.experiment.config import RunConfig
from kseg.experiment.run import resolve_config, run_one
from kseg.experiment.sources import DataCache
from kseg.experiment.training import build_model

MODELS = kseg.models.SEED_MODELS
LOSSES = ("bce", "dice", "focal", "bce+dice")


@pytest.fixture(scope="module")
def tiny_data():
    data = kseg.data.synthetic(n=8, image_size=32, seed=3)
    return np.asarray(data.images), np.asarray(data.masks)


def _tiny(name: str) -> keras.Model:
    return kseg.models.build(name, input_shape=(32, 32, 3), base_filters=4, depth=2)


# Every model with the combined loss, and every loss on U-Net: each model's and each loss's gradients
# take part in a fit, without the whole product (12 fits a pass; 6 now).
SHORT_FITS = [(name, "bce+dice") for name in MODELS] + [("unet", loss) for loss in LOSSES if loss != "bce+dice"]


@pytest.mark.parametrize("name, loss", SHORT_FITS)
def test_short_fit_lowers_the_loss(name, loss, tiny_data):
    images, masks = tiny_data
    keras.utils.set_random_seed(0)
    model = _tiny(name)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=kseg.losses.get(loss))
    history = model.fit(images, masks, epochs=15, batch_size=8, verbose=0).history["loss"]
    assert np.isfinite(history).all() and history[-1] < 0.9 * history[0]


def test_build_model_applies_policy_and_jit(monkeypatch):
    config = RunConfig.from_preset("smoke", model="segnet", loss="bce+dice", jit_compile="false")
    model = build_model(config, "mixed_bfloat16")
    assert model.get_layer("enc0_block0_conv").compute_dtype == "bfloat16"
    assert model.output.dtype == "float32"
    assert model.jit_compile is False
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="XLA by default is TensorFlow's CPU choice")
def test_tensorflow_on_a_cpu_without_bf16_trains_under_xla_by_default_as_without(monkeypatch, tiny_data):
    """``jit_compile="auto"`` on a CPU without bf16 hardware is XLA under TensorFlow (docs/benchmarks.md:
    1.3-1.6x faster steps on an AVX2 EPYC), and its steps give the losses TensorFlow's own kernels
    give. SegNet: its pooling positions and unpooling are the ops only kseg adds (U-Net's and
    U-Net-2's convolutions train under XLA in the benchmark; 20-35 s each here to compile)."""
    monkeypatch.setattr(kseg.experiment.config.device, "on_gpu", lambda: False)
    monkeypatch.setattr(kseg.experiment.config.device, "cpu_has_bf16", lambda: False)
    images, masks = tiny_data
    losses = {}
    for jit in ("auto", "false"):
        config = RunConfig.from_preset("smoke", model="segnet", loss="bce", jit_compile=jit)
        keras.utils.set_random_seed(0)
        model = build_model(config, "float32")
        assert model.jit_compile is (jit == "auto")
        losses[jit] = model.fit(images, masks, epochs=2, batch_size=4, shuffle=False, verbose=0).history["loss"]
    assert np.isfinite(losses["auto"]).all()
    np.testing.assert_allclose(losses["auto"], losses["false"], rtol=1e-3)


@pytest.mark.parametrize("name", MODELS)
def test_keras_file_round_trip_with_every_loss_and_metric(name, tmp_path, tiny_data):
    images, masks = tiny_data
    model = _tiny(name)
    model.compile(
        optimizer="adam",
        loss=kseg.losses.get("bce+dice"),
        metrics=[kseg.metrics.IoU(), kseg.metrics.Dice(), kseg.metrics.DatasetIoU()],
    )
    model.fit(images, masks, epochs=1, batch_size=4, verbose=0)  # moving BN statistics too
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")  # no custom_objects needed
    np.testing.assert_array_equal(restored.predict(images, verbose=0), model.predict(images, verbose=0))
    assert type(restored.loss).__name__ == "Combo"
    assert (
        restored.evaluate(images, masks, verbose=0, return_dict=True).keys()
        == model.evaluate(images, masks, verbose=0, return_dict=True).keys()
    )


@pytest.mark.parametrize("loss", LOSSES)
def test_keras_file_round_trip_keeps_each_loss(loss, tmp_path, tiny_data):
    images, masks = tiny_data
    model = _tiny("unet")
    model.compile(optimizer="adam", loss=kseg.losses.get(loss), metrics=[kseg.metrics.IoU()])
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    assert restored.loss.get_config() == model.loss.get_config()
    np.testing.assert_allclose(
        restored.evaluate(images, masks, verbose=0), model.evaluate(images, masks, verbose=0), rtol=1e-6
    )


def test_sequence_trains_a_tiny_model():
    """kseg's PyDataset through each backend's data adapter; fit advances its epoch."""
    ds = kseg.data.synthetic(8, 32)
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "binary_crossentropy")
    seq = SegmentationSequence(ds, batch_size=4, seed=0)
    history = model.fit(seq, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and seq.epoch >= 1


# ----- a loss that becomes NaN ----------------------------------------------------------------


@pytest.fixture
def smoke_run(tmp_path, monkeypatch):
    """Runs the smoke config of one unet through kseg.experiment.run.run_one; returns (row, run folder)."""
    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path / "cache"))

    def run():
        data = DataCache("synthetic", None)
        config = resolve_config(
            RunConfig.from_preset(
                "smoke", model="unet", loss="bce", dataset="synthetic", precision="float32", epochs=2
            ),
            data,
        )
        row = run_one(config, data, tmp_path / "runs", verbose=False)
        return row, tmp_path / "runs" / config.run_id

    return run


class NaNLoss(keras.losses.Loss):
    def call(self, y_true, y_pred):
        return keras.ops.mean(keras.ops.log(y_pred - y_pred - 1.0), axis=(1, 2, 3))  # log(-1)


def test_nan_from_the_first_batch_gives_a_nan_row_and_no_model(smoke_run, monkeypatch):
    monkeypatch.setattr(training.losses, "get", lambda name: NaNLoss())
    row, run_dir = smoke_run()
    assert row["status"] == "nan"
    assert "NaN" in row["error"]
    assert row.get("test_iou") is None and row.get("best_epoch") is None
    assert not (run_dir / "model.keras").exists()
    assert (run_dir / "split.json").exists() and (run_dir / "config.json").exists()
    kseg.experiment.leaderboard.append_row(run_dir.parent / "lb.csv", row)  # the row is a valid leaderboard row
    assert kseg.experiment.leaderboard.completed_hashes(run_dir.parent / "lb.csv") == set()


class PoisonableSequence(SegmentationSequence):
    """Training batches whose masks turn to 2.0 (an impossible label) while ``poison`` is set."""

    instances: list = []
    poison = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        PoisonableSequence.instances.append(self)

    def __getitem__(self, index):
        images, masks = super().__getitem__(index)
        return images, (np.full_like(masks, 2.0) if self.poison else masks)


class PoisonFromEpoch2(keras.callbacks.Callback):
    """Sets ``poison`` on the training sequence from the second epoch on: a flag that reaches the
    loss through the data, so it works inside every backend's compiled train step."""

    weights_were_nan = None

    def on_epoch_begin(self, epoch, logs=None):
        for sequence in PoisonableSequence.instances:
            sequence.poison = sequence.shuffle and epoch >= 1

    def on_train_end(self, logs=None):
        # Before fit() reloads the best checkpoint: the scenario did make the weights NaN.
        PoisonFromEpoch2.weights_were_nan = any(
            not np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in self.model.trainable_weights
        )


class NaNOnPoison(keras.losses.Loss):
    """BCE, plus NaN * mean(logits) on a poisoned batch: the loss and every gradient turn NaN, so
    one optimizer step makes the weights NaN (0 * mean(logits) on clean batches changes nothing)."""

    def call(self, y_true, y_pred):
        poisoned = keras.ops.max(y_true) > 1.5
        nan_or_zero = keras.ops.where(poisoned, float("nan"), 0.0)
        bce = kseg.losses.BCE()(keras.ops.minimum(y_true, 1.0), y_pred)
        return bce + nan_or_zero * keras.ops.mean(keras.ops.cast(y_pred, "float32"))


def test_nan_in_epoch_2_keeps_the_finite_epoch_1(smoke_run, monkeypatch):
    monkeypatch.setattr(PoisonableSequence, "instances", [])
    monkeypatch.setattr(training, "SegmentationSequence", PoisonableSequence)
    monkeypatch.setattr(training.losses, "get", lambda name: NaNOnPoison())
    real_callbacks_for = training.callbacks_for

    def callbacks_for(*args, **kwargs):
        checkpoint, callbacks = real_callbacks_for(*args, **kwargs)
        return checkpoint, [PoisonFromEpoch2(), *callbacks]

    monkeypatch.setattr(training, "callbacks_for", callbacks_for)
    monkeypatch.setattr(PoisonFromEpoch2, "weights_were_nan", None)
    row, run_dir = smoke_run()
    assert PoisonFromEpoch2.weights_were_nan is True
    assert row["status"] == "nan" and "NaN" in row["error"]
    assert row["best_epoch"] == 1 and row["epochs_run"] == 2
    assert 0 <= row["test_iou"] <= 1 and math.isfinite(row["val_iou"])
    history = (run_dir / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "nan" in history[2].lower()  # header, epoch 1, epoch 2 (NaN)
    model = keras.saving.load_model(run_dir / "model.keras", compile=False)  # the test's loss is not registered
    for weight in model.weights:
        assert np.isfinite(keras.ops.convert_to_numpy(weight)).all(), weight.path
    images = kseg.data.synthetic(n=2, image_size=32).images
    assert np.isfinite(keras.ops.convert_to_numpy(model.predict(images, verbose=0))).all()
