"""Tests for kseg.metrics against hand-computed values and numpy references.

Run on each backend: KERAS_BACKEND={tensorflow,jax,torch} pytest tests/test_metrics.py
"""

import json

import keras
import numpy as np
import pytest
from keras import ops

import kseg.losses
import kseg.metrics as M
from tests.harness import assert_config_round_trip

CLASSES = {"iou": M.IoU, "dice": M.Dice, "dataset_iou": M.DatasetIoU}


def img(rows):
    """A (1, H, W, 1) float32 image from a nested list."""
    a = np.asarray(rows, "float32")
    return a.reshape((1,) + a.shape + (1,))


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, "float64")))


# Independent numpy references on boolean masks.
def ref_scores(y, x, kind, threshold=0.5, from_logits=True):
    """Per-image IoU or Dice, 1 for an image where mask and prediction are empty."""
    pred = (_sigmoid(x) if from_logits else x) >= threshold
    true = y >= 0.5
    out = []
    for t, p in zip(true, pred):
        inter, union = np.logical_and(t, p).sum(), np.logical_or(t, p).sum()
        if kind == "iou":
            out.append(1.0 if union == 0 else inter / union)
        else:
            total = t.sum() + p.sum()
            out.append(1.0 if total == 0 else 2.0 * inter / total)
    return np.array(out)


def ref_dataset_iou(y, x, threshold=0.5):
    pred, true = _sigmoid(x) >= threshold, y >= 0.5
    union = np.logical_or(true, pred).sum()
    return 1.0 if union == 0 else np.logical_and(true, pred).sum() / union


def ref(kind, y, x, threshold=0.5):
    if kind == "dataset_iou":
        return ref_dataset_iou(y, x, threshold)
    return ref_scores(y, x, kind, threshold).mean()


def _data(n, seed, hw=6):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, hw, hw, 1)) * 2.0 - 0.5).astype("float32")
    y = (rng.random(size=(n, hw, hw, 1)) < 0.3).astype("float32")
    y[0] = 0.0  # an empty mask in every batch
    return y, x


def result(metric, y, x, sample_weight=None):
    metric.update_state(y, x, sample_weight=sample_weight)
    return float(metric.result())


# --------------------------------------------------------------------- hand values

# Mask T = [[1, 1], [0, 0]], prediction P = [[1, 0], [1, 0]] (logits +-5):
# |P & T| = 1, |P | T| = 3, |P| + |T| = 4.
T = img([[1, 1], [0, 0]])
P = img([[5, -5], [5, -5]])


@pytest.mark.parametrize("kind, want", [("iou", 1 / 3), ("dice", 1 / 2), ("dataset_iou", 1 / 3)])
def test_hand_computed_2x2(kind, want):
    assert result(CLASSES[kind](), T, P) == pytest.approx(want, abs=1e-6)


EMPTY = img([[0, 0], [0, 0]])
NEG = img([[-5, -5], [-5, -5]])


@pytest.mark.parametrize("kind", ["iou", "dice", "dataset_iou"])
@pytest.mark.parametrize(
    "mask, logits, want",
    [
        (EMPTY, NEG, 1.0),  # both empty: perfect
        (EMPTY, P, 0.0),  # false positives only
        (T, NEG, 0.0),  # missed everything
        (img([[1, 1], [1, 1]]), img([[9, 9], [9, 9]]), 1.0),  # full mask, full prediction
    ],
    ids=["both-empty", "empty-mask", "empty-pred", "full"],
)
def test_empty_and_full(kind, mask, logits, want):
    assert result(CLASSES[kind](), mask, logits) == pytest.approx(want, abs=1e-6)


def test_threshold_boundary_is_inclusive():
    # logit 0 is probability 0.5 exactly: ">= threshold" counts it as foreground.
    assert result(M.IoU(), img([[1, 0]]), img([[0.0, -1.0]])) == pytest.approx(1.0)
    probs = M.IoU(threshold=0.25, from_logits=False)
    assert result(probs, img([[1, 0]]), img([[0.25, 0.2]])) == 1.0
    # An extra pixel just above the boundary counts; just below does not.
    assert result(M.IoU(), img([[1, 0]]), img([[1e-3, 1e-3]])) == pytest.approx(0.5)
    assert result(M.IoU(), img([[1, 0]]), img([[1e-3, -1e-3]])) == pytest.approx(1.0)


# ---------------------------------------------------------------- numpy reference


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
@pytest.mark.parametrize("kind", ["iou", "dice", "dataset_iou"])
def test_matches_numpy_reference(kind, threshold):
    y, x = _data(4, seed=1)
    got = result(CLASSES[kind](threshold=threshold), y, x)
    assert got == pytest.approx(ref(kind, y, x, threshold), abs=1e-6)


@pytest.mark.parametrize("kind", ["iou", "dice", "dataset_iou"])
def test_probabilities_equal_logits(kind):
    y, x = _data(4, seed=2)
    p = _sigmoid(x).astype("float32")
    from_p = result(CLASSES[kind](threshold=0.7, from_logits=False), y, p)
    from_x = result(CLASSES[kind](threshold=0.7), y, x)
    assert from_p == pytest.approx(from_x, abs=1e-6)
    assert from_x == pytest.approx(ref(kind, y, x, 0.7), abs=1e-6)


def test_per_image_and_dataset_iou_differ():
    # One big well-segmented object and one tiny missed one: the per-image mean
    # punishes the miss, the pooled count barely notices it.
    y = np.zeros((2, 4, 4, 1), "float32")
    y[0] = 1.0
    y[1, 0, 0] = 1.0
    x = np.where(y[0:1] > 0, 5.0, -5.0).repeat(2, axis=0).astype("float32")
    x[1] = -5.0
    assert result(M.IoU(), y, x) == pytest.approx(0.5)
    assert result(M.DatasetIoU(), y, x) == pytest.approx(16 / 17)


def test_mask_without_channel_axis():
    assert result(M.IoU(), T[..., 0], P) == pytest.approx(1 / 3)


# ------------------------------------------------------------------ state handling


@pytest.mark.parametrize("kind", ["iou", "dice", "dataset_iou"])
def test_accumulates_over_updates_and_resets(kind):
    y1, x1 = _data(1, seed=3)
    y2, x2 = _data(3, seed=4)
    y, x = np.concatenate([y1, y2]), np.concatenate([x1, x2])
    metric = CLASSES[kind]()
    metric.update_state(y1, x1)
    metric.update_state(y2, x2)
    want = ref(kind, y, x)
    assert float(metric.result()) == pytest.approx(want, abs=1e-6)
    if kind != "dataset_iou":
        # Per image, not per batch: the mean of the two batch means differs.
        batch_means = (ref(kind, y1, x1) + ref(kind, y2, x2)) / 2
        assert abs(batch_means - want) > 1e-3
    metric.reset_state()
    for v in metric.variables:
        assert float(ops.convert_to_numpy(v)) == 0.0
    metric.update_state(y2, x2)
    assert float(metric.result()) == pytest.approx(ref(kind, y2, x2), abs=1e-6)


def test_result_before_any_update_is_zero():
    assert float(M.IoU().result()) == 0.0
    assert float(M.Dice().result()) == 0.0


@pytest.mark.parametrize("kind", ["iou", "dice"])
def test_sample_weight_weights_images(kind):
    y, x = _data(3, seed=5)
    w = np.array([1.0, 0.0, 3.0], "float32")
    scores = ref_scores(y, x, kind)
    assert np.ptp(scores) > 0
    want = (scores * w).sum() / w.sum()
    assert result(CLASSES[kind](), y, x, sample_weight=w) == pytest.approx(want, abs=1e-6)


def test_dataset_iou_sample_weight_scales_counts():
    y, x = _data(2, seed=6)
    m = M.DatasetIoU()
    # weight 0 on image 1: as if only image 0 were seen.
    got = result(m, y, x, sample_weight=np.array([1.0, 0.0], "float32"))
    assert got == pytest.approx(ref_dataset_iou(y[:1], x[:1]), abs=1e-6)


# ----------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("kind", ["iou", "dice", "dataset_iou"])
def test_bfloat16_inputs(kind, mixed_bfloat16):
    y, x = _data(3, seed=7)
    metric = CLASSES[kind]()
    for v in metric.variables:
        assert v.dtype == "float32"
    got = result(metric, ops.cast(y, "bfloat16"), ops.cast(x, "bfloat16"))
    x_bf16 = ops.convert_to_numpy(ops.cast(ops.cast(x, "bfloat16"), "float32"))
    assert got == pytest.approx(ref(kind, y, x_bf16), abs=1e-6)


# ------------------------------------------------------------------ inside Keras


def _identity_model():
    """A 1x1 conv with kernel 1 and bias 0: the logits are the inputs."""
    inputs = keras.Input((6, 6, 1))
    outputs = keras.layers.Conv2D(1, 1, kernel_initializer="ones", bias_initializer="zeros")(inputs)
    return keras.Model(inputs, outputs)


def _compile_and_evaluate(model, y, x):
    model.compile(
        optimizer="sgd",
        loss=kseg.losses.BCE(),
        metrics=[M.IoU(), M.Dice(), M.DatasetIoU()],
    )
    # batch_size 2 over 5 images: batches of 2, 2, 1 must be pooled per image.
    return model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)


def _check_against_numpy(logs, y, x):
    assert logs["iou"] == pytest.approx(ref("iou", y, x), abs=1e-5)
    assert logs["dice"] == pytest.approx(ref("dice", y, x), abs=1e-5)
    assert logs["dataset_iou"] == pytest.approx(ref("dataset_iou", y, x), abs=1e-5)


def test_compile_and_evaluate():
    y, x = _data(5, seed=8)
    logs = _compile_and_evaluate(_identity_model(), y, x)
    _check_against_numpy(logs, y, x)


def test_compile_and_evaluate_mixed_bfloat16(mixed_bfloat16):
    y, x = _data(5, seed=9)
    model = _identity_model()
    assert model.outputs[0].dtype == "bfloat16"
    logs = _compile_and_evaluate(model, y, x)
    # Rounding to bfloat16 never changes a logit's sign: same binarisation at 0.5.
    _check_against_numpy(logs, y, x)


def test_saved_model_keeps_losses_and_metrics(tmp_path):
    y, x = _data(5, seed=10)
    model = _identity_model()
    model.compile(
        optimizer="sgd",
        loss=kseg.losses.Combo([kseg.losses.BCE(), kseg.losses.Dice(smooth=2.0)], [1.0, 0.5]),
        metrics=[M.IoU(threshold=0.6), M.Dice(), M.DatasetIoU()],
    )
    before = model.evaluate(x, y, batch_size=5, verbose=0, return_dict=True)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: registration suffices
    assert isinstance(loaded.loss, kseg.losses.Combo)
    assert loaded.loss.get_config() == model.loss.get_config()
    after = loaded.evaluate(x, y, batch_size=5, verbose=0, return_dict=True)
    assert set(after) == set(before)
    for key in before:
        assert after[key] == pytest.approx(before[key], abs=1e-6), key
    assert after["iou"] == pytest.approx(ref_scores(y, x, "iou", threshold=0.6).mean(), abs=1e-5)


# ------------------------------------------------------------------ serialization


CONFIGURED = [
    lambda: M.IoU(threshold=0.3, from_logits=False, name="iou_30"),
    lambda: M.Dice(threshold=0.7, from_logits=False, name="dice_70"),
    lambda: M.DatasetIoU(threshold=0.4, from_logits=False, name="ds"),
]


@pytest.mark.parametrize("make", CONFIGURED, ids=["iou", "dice", "dataset_iou"])
def test_get_config_round_trip(make):
    metric = make()
    clone = assert_config_round_trip(metric)
    assert (clone.threshold, clone.from_logits, clone.name) == (
        metric.threshold,
        metric.from_logits,
        metric.name,
    )
    y, x = _data(3, seed=11)
    p = _sigmoid(x).astype("float32")
    assert result(clone, y, p) == pytest.approx(result(metric, y, p), abs=1e-7)


@pytest.mark.parametrize("make", CONFIGURED, ids=["iou", "dice", "dataset_iou"])
def test_serialize_keras_object_round_trip(make):
    metric = make()
    blob = json.loads(json.dumps(keras.saving.serialize_keras_object(metric)))
    clone = keras.saving.deserialize_keras_object(blob)
    assert type(clone) is type(metric)
    assert clone.get_config() == metric.get_config()
    assert M.get(blob).get_config() == metric.get_config()


def test_metric_and_loss_dice_do_not_collide():
    # Both modules define "Dice"; each must deserialize to its own class.
    for obj in (M.Dice(), kseg.losses.Dice()):
        blob = keras.saving.serialize_keras_object(obj)
        assert type(keras.saving.deserialize_keras_object(blob)) is type(obj)


# --------------------------------------------------------------------- get/available


def test_get_known_names():
    assert set(M.available()) == {"iou", "dice", "dataset_iou"}
    for name, cls in CLASSES.items():
        metric = M.get(name)
        assert type(metric) is cls
        assert metric.name == name
    inst = M.IoU(threshold=0.9)
    assert M.get(inst) is inst


@pytest.mark.parametrize("bad", ["miou", "", 3])
def test_get_unknown_name_lists_known_names(bad):
    with pytest.raises(ValueError) as err:
        M.get(bad)
    for name in ("iou", "dice", "dataset_iou"):
        assert name in str(err.value)


def test_invalid_threshold_raises():
    with pytest.raises(ValueError):
        M.IoU(threshold=1.5)
    with pytest.raises(ValueError):
        M.DatasetIoU(threshold=-0.1)
