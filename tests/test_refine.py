"""Tests for kseg.refine: TTA against by-hand numpy averages, post-processing against scipy,
the choice on validation data, and the refinement's trip through a ``.keras`` file.

Run on each backend: KERAS_BACKEND={tensorflow,jax,torch} pytest tests/test_refine.py
"""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest
from scipy import ndimage

from kseg import calibration, refine
from kseg.refine import Refinement

EIGHT_CONNECTED = np.ones((3, 3), bool)


def conv_model(kernel: np.ndarray, bias: float = 0.0, channels: int = 3) -> keras.Model:
    """A one-layer ``Conv2D(1, k, padding="same")`` model of any input size with fixed weights."""
    inputs = keras.Input((None, None, channels))
    layer = keras.layers.Conv2D(1, kernel.shape[0], padding="same")
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights([kernel.astype("float32"), np.array([bias], "float32")])
    return model


def random_kernel(seed: int = 0, size: int = 3, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(size, size, channels, 1))


def predict(model: keras.Model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(np.ascontiguousarray(images, "float32"), verbose=0), "float64")


def dihedral_images(x: np.ndarray, axes: tuple[int, int]) -> list[np.ndarray]:
    """The 8 rotations / mirrors of ``x`` over ``axes``, written independently of kseg."""
    rotations = [np.rot90(x, k, axes=axes) for k in range(4)]
    return rotations + [np.flip(r, axis=axes[1]) for r in rotations]


# --- TTA ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, count", [("none", 1), ("flip", 4), ("d4", 8)])
def test_views_are_distinct_and_undo_each_other(mode, count):
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 3))
    views = refine._views(mode)
    assert len(views) == count
    seen = [forward(x) for forward, _ in views]
    for (forward, inverse), y in zip(views, seen):
        np.testing.assert_array_equal(inverse(forward(x)), x)
    np.testing.assert_array_equal(seen[0], x)  # identity first
    assert len({y.tobytes() for y in seen}) == count


@pytest.mark.parametrize("mode", ["flip", "d4"])
def test_tta_is_invariant_on_a_symmetric_input(mode):
    """A kernel and an input both symmetric under the 8 dihedral transforms: every view predicts
    the plain logits, so their average does too."""
    kernel = np.mean(dihedral_images(random_kernel(1), axes=(0, 1)), axis=0)
    image = np.random.default_rng(2).normal(size=(3, 12, 12, 3))
    symmetric = np.mean(dihedral_images(image, axes=(1, 2)), axis=0).astype("float32")
    model = conv_model(kernel, bias=0.3)
    plain = predict(model, symmetric)
    averaged = refine.tta_predict_logits(model, symmetric, mode)
    assert averaged.dtype == np.float32 and averaged.shape == (3, 12, 12, 1)
    np.testing.assert_allclose(averaged, plain, atol=1e-6)


def hand_tta(model: keras.Model, images: np.ndarray, mode: str) -> np.ndarray:
    """TTA by hand: predict each transform, map the logits back with numpy, average."""
    if mode == "none":
        return predict(model, images)
    if mode == "flip":
        flips = [(), (2,), (1,), (1, 2)]
        return np.mean([np.flip(predict(model, np.flip(images, a)), a) for a in flips], axis=0)
    predictions = []
    for k in range(4):
        for mirror in (False, True):
            view = np.rot90(images, k, axes=(1, 2))  # rotate, then mirror: not kseg's order
            view = np.flip(view, 2) if mirror else view
            logits = predict(model, view)
            logits = np.flip(logits, 2) if mirror else logits
            predictions.append(np.rot90(logits, -k, axes=(1, 2)))
    return np.mean(predictions, axis=0)


@pytest.mark.parametrize("mode, shape", [("none", (9, 7)), ("flip", (9, 7)), ("flip", (8, 8)), ("d4", (8, 8))])
def test_tta_equals_averaging_transformed_logits_by_hand(mode, shape):
    model = conv_model(random_kernel(3), bias=-0.2)
    images = np.random.default_rng(4).normal(size=(3, *shape, 3)).astype("float32")
    averaged = refine.tta_predict_logits(model, images, mode, batch_size=2)
    expected = hand_tta(model, images, mode)
    assert averaged.dtype == np.float32 and averaged.shape == (3, *shape, 1)
    np.testing.assert_allclose(averaged, expected, atol=1e-5)
    if mode != "none":  # a non-symmetric model: TTA really changes the logits
        assert np.abs(averaged - predict(model, images)).max() > 1e-2


def test_tta_rejects_unknown_modes_and_non_square_rotations():
    model = conv_model(random_kernel(0))
    with pytest.raises(ValueError, match=r"\(2, 8, 6, 3\)"):
        refine.tta_predict_logits(model, np.zeros((2, 8, 6, 3), "float32"), "d4")
    with pytest.raises(
        ValueError, match=r"Unknown TTA mode 'rot90'. Expected one of: none, flip, d4. Received: TTA mode="
    ):
        refine.tta_predict_logits(model, np.zeros((1, 4, 4, 3), "float32"), "rot90")


# --- Post-processing ---------------------------------------------------------------------------


def _masks() -> dict[str, np.ndarray]:
    """Hand-made 0/1 masks (uint8, 12x12), with no tie between the largest regions."""
    two_blobs = np.zeros((12, 12), np.uint8)
    two_blobs[1:5, 1:5] = 1  # 16 pixels
    two_blobs[7:10, 7:10] = 1  # 9 pixels
    # Two 2x2 squares touching at a corner are one 8-connected region of 8 pixels, larger than
    # the separate 6-pixel bar (a 4-connected labelling would keep the bar).
    diagonal = np.zeros((12, 12), np.uint8)
    diagonal[1:3, 1:3] = 1
    diagonal[3:5, 3:5] = 1
    diagonal[8:10, 2:5] = 1
    ring = np.zeros((12, 12), np.uint8)
    ring[2:9, 2:9] = 1
    ring[4:7, 4:7] = 0
    ring[10, 10] = 1  # plus a stray pixel
    # A diamond outline closed only through diagonal steps: its inside is still a hole.
    i, j = np.indices((12, 12))
    diamond = (np.abs(i - 6) + np.abs(j - 6) == 4).astype(np.uint8)
    notched = np.zeros((12, 12), np.uint8)
    notched[0:6, 0:7] = 1  # touches the top and left borders
    notched[0:3, 3] = 0  # a notch open to the top border: not a hole
    notched[2:4, 5] = 0  # a real hole inside the blob
    notched[9:11, 9:11] = 1
    return {
        "two_blobs": two_blobs,
        "diagonal": diagonal,
        "ring": ring,
        "diamond": diamond,
        "notched_border_blob": notched,
        "empty": np.zeros((12, 12), np.uint8),
        "full": np.ones((12, 12), np.uint8),
    }


MASKS = _masks()


def ref_largest(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    if count == 0:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())[1:]
    assert (sizes == sizes.max()).sum() == 1, "test masks must not tie"
    return labels == 1 + np.argmax(sizes)


def reference(mask: np.ndarray, mode: str) -> np.ndarray:
    mask = mask.astype(bool)
    if mode in ("largest", "largest+fill"):
        mask = ref_largest(mask)
    if mode in ("fill", "largest+fill"):
        mask = ndimage.binary_fill_holes(mask)
    return mask


@pytest.mark.parametrize("mode", refine.POSTPROCESS_MODES)
@pytest.mark.parametrize("name", list(MASKS))
def test_postprocess_matches_scipy(name, mode):
    mask = MASKS[name]
    expected = reference(mask, mode)
    np.testing.assert_array_equal(refine.postprocess(mask, mode), expected.astype(np.uint8))
    if mode == "largest":
        np.testing.assert_array_equal(refine.keep_largest_component(mask), expected)
    if mode == "fill":
        np.testing.assert_array_equal(refine.fill_holes(mask), expected)


def test_fill_holes_matches_scipy_on_random_masks():
    rng = np.random.default_rng(5)
    for _ in range(20):
        mask = (rng.random((15, 17)) < rng.uniform(0.3, 0.7)).astype(np.uint8)
        np.testing.assert_array_equal(refine.fill_holes(mask), ndimage.binary_fill_holes(mask))


def test_postprocess_keeps_shape_and_dtype():
    batch = np.stack([MASKS["two_blobs"], MASKS["ring"], MASKS["empty"]])[..., None].astype("float32")
    out = refine.postprocess(batch, "largest+fill")
    assert out.shape == batch.shape and out.dtype == np.float32
    for got, mask in zip(out, batch):
        np.testing.assert_array_equal(got[..., 0], reference(mask[..., 0], "largest+fill"))
    single = MASKS["ring"].astype(bool)[..., None]
    out = refine.postprocess(single, "fill")
    assert out.shape == (12, 12, 1) and out.dtype == bool
    np.testing.assert_array_equal(refine.postprocess(MASKS["ring"] * 255, "none"), MASKS["ring"])
    with pytest.raises(ValueError, match="post-processing"):
        refine.postprocess(batch, "biggest")
    with pytest.raises(ValueError, match=r"\(2, 12, 12, 3\)"):
        refine.postprocess(np.zeros((2, 12, 12, 3)), "fill")


# --- Choosing on validation --------------------------------------------------------------------


def channel_zero_model(size: int = 16) -> keras.Model:
    """A 1x1 convolution that outputs the image's first channel: the images carry the logits, and
    the model is exactly equivariant, so TTA changes nothing."""
    kernel = np.zeros((1, 1, 3, 1))
    kernel[0, 0, 0, 0] = 1.0
    return conv_model(kernel)


def images_from_logits(logits: np.ndarray) -> np.ndarray:
    return np.repeat(logits[..., None], 3, axis=-1).astype("float32")


def lesion_masks(n: int = 4, size: int = 16, second_lesion: bool = False) -> np.ndarray:
    masks = np.zeros((n, size, size), np.float32)
    for i in range(n):
        masks[i, 3 + i % 2 : 10, 2 : 9 + i % 3] = 1
        if second_lesion:
            masks[i, 12:15, 12:15] = 1
    return masks


def test_choose_refinement_keeps_the_component_filter_when_it_helps():
    masks = lesion_masks()
    predicted = masks.copy()
    predicted[:, 12:14, 12:14] = 1  # a spurious small blob far from the lesion
    model = channel_zero_model()
    images = images_from_logits(np.where(predicted > 0, 4.0, -4.0))
    best, scores = refine.choose_refinement(model, images, masks[..., None])
    assert set(scores) == {Refinement(t, p).describe() for t in refine.TTA_MODES for p in refine.POSTPROCESS_MODES}
    # "largest+fill" and the TTA modes score the same: the cheapest of the ties wins.
    assert best.masks_only == Refinement("none", "largest")
    assert scores["tta=none,post=largest"] == pytest.approx(1.0)
    assert scores["tta=none,post=none"] < 0.95
    # ... unless the gain is below min_gain.
    best, _ = refine.choose_refinement(model, images, masks, tta_modes=("none",), min_gain=0.5)
    assert best.masks_only == Refinement()


@pytest.mark.parametrize("second_lesion", [False, True])
def test_choose_refinement_keeps_none_when_nothing_helps(second_lesion):
    """Perfect predictions, and ones where keeping one region would delete a real lesion."""
    masks = lesion_masks(second_lesion=second_lesion)
    images = images_from_logits(np.where(masks > 0, 4.0, -4.0))
    best, scores = refine.choose_refinement(channel_zero_model(), images, masks)
    assert best.masks_only == Refinement()
    assert len(scores) == 12 and scores["tta=none,post=none"] == pytest.approx(1.0)
    if second_lesion:
        assert scores["tta=none,post=largest"] < 1.0


def test_choose_refinement_scores_what_apply_refinement_predicts():
    """At an output size other than the model's, every score is that of apply_refinement's masks,
    and the scores dict always holds the plain candidate."""
    model = conv_model(random_kernel(6), bias=0.1)
    rng = np.random.default_rng(7)
    images = rng.normal(size=(3, 8, 8, 3)).astype("float32")
    masks = (rng.random((3, 12, 12, 1)) < 0.5).astype("float32")
    best, scores = refine.choose_refinement(model, images, masks, tta_modes=("d4",), postprocess_modes=("fill",))
    assert set(scores) == {f"tta={t},post={p}" for t in ("none", "d4") for p in ("none", "fill")}
    for key, score in scores.items():
        tta, post = (part.split("=")[1] for part in key.split(","))
        logits, binary = refine.apply_refinement(model, images, Refinement(tta, post), output_size=(12, 12))
        assert logits.shape == binary.shape == (3, 12, 12, 1)
        assert score == pytest.approx(refine.mean_iou(masks, binary), abs=1e-6)
    assert scores[best.masks_only.describe()] == max(scores.values())


def test_choose_refinement_fits_the_temperature_of_the_chosen_masks_and_saves_it(tmp_path):
    """Logits of +-6 that are wrong on a tenth of the pixels are over-confident: the fitted
    temperature is calibration.fit_temperature's on those logits (> 1), the masks' choice is
    unchanged, and the temperature travels in the .keras file."""
    masks = lesion_masks()
    rng = np.random.default_rng(0)
    wrong = rng.random(masks.shape) < 0.1
    logits = np.where((masks > 0) ^ wrong, 6.0, -6.0)
    model = channel_zero_model()
    best, scores = refine.choose_refinement(model, images_from_logits(logits), masks, tta_modes=("none",))
    expected = calibration.fit_temperature(logits, masks)
    assert best.temperature == pytest.approx(expected) and best.temperature > 1
    assert best.masks_only.describe() in scores and best.describe().endswith(f",T={best.temperature:.3g}")
    uncalibrated, _ = refine.choose_refinement(model, images_from_logits(logits), masks, calibrate=False)
    assert uncalibrated == best.masks_only
    refine.save_with_refinement(model, tmp_path / "m.keras", best)
    assert refine.load_refinement(tmp_path / "m.keras") == best


def test_a_refinement_refuses_a_temperature_that_is_not_positive():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a positive number"):
            Refinement(temperature=bad)


# --- Persistence -------------------------------------------------------------------------------


def test_refinement_dict_round_trip_and_validation():
    refinement = Refinement("d4", "largest+fill")
    assert Refinement.from_dict(json.loads(json.dumps(refinement.to_dict()))) == refinement
    assert refinement.describe() == "tta=d4,post=largest+fill"
    assert Refinement.from_dict({}) == Refinement()
    with pytest.raises(ValueError, match="TTA"):
        Refinement(tta="d8")
    with pytest.raises(ValueError, match="keys"):
        Refinement.from_dict({"tta": "flip", "threshold": 0.4})


def test_refinement_survives_save_and_load(tmp_path):
    model = conv_model(random_kernel(8), bias=0.2)
    images = np.random.default_rng(9).normal(size=(2, 8, 8, 3)).astype("float32")
    refinement = Refinement("flip", "largest")
    path = tmp_path / "model.keras"
    refine.save_with_refinement(refine.attach(model, refinement), path)

    loaded = keras.saving.load_model(path)  # plain Keras, no custom objects
    np.testing.assert_allclose(predict(loaded, images), predict(model, images), atol=1e-6)
    assert refine.load_refinement(path) == refinement
    loaded = refine.load_model_with_refinement(path)
    assert refine.attached(loaded) == refinement
    np.testing.assert_array_equal(
        refine.apply_refinement(loaded, images, refine.attached(loaded))[1],
        refine.apply_refinement(model, images, refinement)[1],
    )

    # Saving again with another choice replaces it; the refinement is the model's config, not a zip member.
    refine.save_with_refinement(loaded, path, Refinement("d4", "fill"))
    with zipfile.ZipFile(path) as archive:
        assert refine.REFINEMENT_MEMBER not in archive.namelist()
    assert refine.load_refinement(path) == keras.saving.load_model(path).refinement == Refinement("d4", "fill")
    np.testing.assert_allclose(predict(keras.saving.load_model(path), images), predict(model, images), atol=1e-6)

    plain_path = tmp_path / "plain.keras"
    model.save(plain_path)
    assert refine.load_refinement(plain_path) == Refinement()
    assert refine.attached(refine.load_model_with_refinement(plain_path)) == Refinement()
