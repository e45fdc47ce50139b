"""``python -m kseg predict`` / ``evaluate`` and ``kseg.predict.predict_masks``: files of any size,
bad files, exit codes, agreement with numpy references and with a model saved under another backend."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest

import kseg
from kseg.cli import main
from kseg.data import SegmentationDataset
from kseg.evaluation import evaluate
from kseg.predict import predict_mask_batch, predict_masks

MODEL_SIZE = 32
# (height, width) of the readable fixture images: odd, larger and smaller than the model's input.
SIZES = {"odd_97x131": (97, 131), "wide_300x200": (200, 300), "small_20x24": (20, 24), "square_32": (32, 32)}
BACKEND_CYCLE = ("tensorflow", "jax", "torch")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path_factory.mktemp("kseg_cache")))


def _lesion_picture(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A dark ellipse on skin-coloured noise (RGB uint8) and its 0/1 mask."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal([200, 160, 140], 12, (height, width, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    centre = (int(width * rng.uniform(0.35, 0.65)), int(height * rng.uniform(0.35, 0.65)))
    axes = (max(2, int(width * rng.uniform(0.15, 0.3))), max(2, int(height * rng.uniform(0.15, 0.3))))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    image[mask == 1] = (image[mask == 1] * 0.4).astype(np.uint8)
    return image, mask


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A tiny untrained U-Net whose last layer is scaled so its logits are rarely near 0 (fewer
    pixels that a 1e-6 difference in resizing could flip) and shifted so that about half of the
    pixels are foreground (an all-0 or all-1 mask would make every comparison trivial)."""
    keras.utils.set_random_seed(0)
    model = kseg.models.unet(input_shape=(MODEL_SIZE, MODEL_SIZE, 3), base_filters=4, depth=2)
    last = model.layers[-1]
    kernel, bias = last.get_weights()
    last.set_weights([kernel * 20.0, bias * 20.0])
    sample = np.stack([_lesion_picture(MODEL_SIZE, MODEL_SIZE, s)[0] for s in range(4)]).astype(np.float32) / 255
    median_logit = float(np.median(keras.ops.convert_to_numpy(model(sample, training=False))))
    last.set_weights([kernel * 20.0, bias * 20.0 - median_logit])
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def model(model_path: Path) -> keras.Model:
    return keras.saving.load_model(model_path)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Readable images of odd sizes (one grey, one RGBA) plus three broken files."""
    folder = tmp_path / "in"
    folder.mkdir()
    for seed, (name, (h, w)) in enumerate(SIZES.items()):
        image, _ = _lesion_picture(h, w, seed)
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    grey, _ = _lesion_picture(40, 50, 7)
    cv2.imwrite(str(folder / "grey_40x50.png"), cv2.cvtColor(grey, cv2.COLOR_RGB2GRAY))
    rgba, _ = _lesion_picture(33, 45, 8)
    cv2.imwrite(str(folder / "rgba_33x45.png"), cv2.cvtColor(rgba, cv2.COLOR_RGB2BGRA))
    (folder / "corrupt.png").write_bytes(b"this is not a png at all")
    (folder / "empty.jpg").write_bytes(b"")
    ok, jpeg = cv2.imencode(".jpg", _lesion_picture(64, 64, 9)[0])
    (folder / "truncated.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    (folder / "notes.txt").write_text("not an image; must be ignored")
    return folder


READABLE = {**SIZES, "grey_40x50": (40, 50), "rgba_33x45": (33, 45)}
BROKEN = ("corrupt.png", "empty.jpg", "truncated.jpg")


def _reference_mask(model: keras.Model, image: np.ndarray) -> np.ndarray:
    """Independent of kseg.predict: resize with INTER_AREA, run the model, bring the logits back
    with bilinear interpolation and take sigmoid >= 0.5 (logit >= 0)."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (MODEL_SIZE, MODEL_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    logits = keras.ops.convert_to_numpy(model(small[None], training=False))[0, ..., 0]
    probabilities = 1 / (1 + np.exp(-cv2.resize(logits, (w, h), interpolation=cv2.INTER_LINEAR)))
    return (probabilities >= 0.5).astype(np.uint8)


def test_predict_masks_keeps_each_image_size_and_matches_a_reference(model):
    foreground_fractions = []
    for seed, (h, w) in enumerate(READABLE.values()):
        image, _ = _lesion_picture(h, w, seed)
        mask, logits = predict_masks(model, image)
        assert mask.shape == (h, w) and logits.shape == (h, w)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        reference = _reference_mask(model, image)
        assert np.mean(mask != reference) < 1e-3, (h, w)
        # float [0, 1] input gives the same mask as uint8 input.
        float_mask, _ = predict_masks(model, image.astype(np.float32) / 255)
        np.testing.assert_array_equal(float_mask, mask)
        foreground_fractions.append(mask.mean())
    assert 0.05 < np.median(foreground_fractions) < 0.95, "the fixture model's masks are (nearly) constant"


def test_threshold_moves_the_mask_the_right_way(model):
    image, _ = _lesion_picture(97, 131, 3)
    _, logits = predict_masks(model, image)
    low, _ = predict_masks(model, image, threshold=0.1)
    high, _ = predict_masks(model, image, threshold=0.9)
    np.testing.assert_array_equal(low, (logits >= np.log(0.1 / 0.9)).astype(np.uint8))
    np.testing.assert_array_equal(high, (logits >= np.log(0.9 / 0.1)).astype(np.uint8))
    assert low.sum() >= high.sum()
    with pytest.raises(ValueError, match="threshold"):
        predict_masks(model, image, threshold=1.0)


def test_batch_of_mixed_sizes_equals_one_by_one(model):
    images = [_lesion_picture(h, w, s)[0] for s, (h, w) in enumerate(READABLE.values())]
    batched = predict_mask_batch(model, images)
    for image, (mask, logits) in zip(images, batched):
        single_mask, single_logits = predict_masks(model, image)
        np.testing.assert_allclose(logits, single_logits, atol=1e-4)
        assert np.mean(mask != single_mask) < 1e-3


def test_predict_command_writes_masks_and_overlays_and_names_bad_files(
    model, model_path, image_folder, tmp_path, capsys
):
    out = tmp_path / "out"
    code = main(
        ["predict", "--model", str(model_path), "--input", str(image_folder), "--output", str(out), "--batch-size", "3"]
    )
    captured = capsys.readouterr()
    assert code == 1
    for name in BROKEN:
        assert name in captured.err
    assert "notes.txt" not in captured.err
    for stem, (h, w) in READABLE.items():
        mask = cv2.imread(str(out / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask is not None and mask.shape == (h, w), stem
        assert set(np.unique(mask)) <= {0, 255}
        original = cv2.cvtColor(cv2.imread(str(image_folder / f"{stem}.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert np.mean((mask // 255) != _reference_mask(model, original)) < 1e-3, stem
        overlay_image = cv2.imread(str(out / "overlays" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert overlay_image is not None and overlay_image.shape == (h, w, 3), stem
    written = {p.stem for p in (out / "masks").iterdir()}
    assert written == set(READABLE)


def test_predict_command_exit_codes(model_path, image_folder, tmp_path, capsys):
    one_file = image_folder / "odd_97x131.png"
    assert main(["predict", "--model", str(model_path), "--input", str(one_file), "--output", str(tmp_path / "a")]) == 0
    assert cv2.imread(str(tmp_path / "a" / "masks" / "odd_97x131.png"), cv2.IMREAD_UNCHANGED).shape == (97, 131)
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "missing.keras"),
                "--input",
                str(one_file),
                "--output",
                str(tmp_path / "b"),
            ]
        )
        == 2
    )
    assert "missing.keras" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                "--model",
                str(model_path),
                "--input",
                str(tmp_path / "nowhere"),
                "--output",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
    assert "nowhere" in capsys.readouterr().err


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Path:
    root = tmp_path / "labelled"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for seed, (h, w) in enumerate([(97, 131), (200, 300), (64, 64), (50, 70), (120, 90)]):
        image, mask = _lesion_picture(h, w, seed)
        cv2.imwrite(
            str(root / "images" / f"case{seed}.jpg"),
            cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, 98],
        )
        cv2.imwrite(str(root / "masks" / f"case{seed}_seg.png"), mask * 255)
    return root


def _read_pairs_by_hand(root: Path, size: int) -> SegmentationDataset:
    """The labelled folder read with cv2 directly (not kseg.data), resized as kseg trains."""
    images, masks, ids = [], [], []
    for path in sorted((root / "images").iterdir()):
        image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        mask = (cv2.imread(str(root / "masks" / f"{path.stem}_seg.png"), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
        images.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255)
        masks.append(cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST).astype(np.float32)[..., None])
        ids.append(path.stem)
    return SegmentationDataset(np.stack(images), np.stack(masks), ids, None, "by_hand")


def test_evaluate_command_matches_evaluate_and_a_numpy_iou(model, model_path, labelled_folder, tmp_path, capsys):
    csv_path = tmp_path / "scores.csv"
    code = main(
        [
            "evaluate",
            "--model",
            str(model_path),
            "--images",
            str(labelled_folder / "images"),
            "--masks",
            str(labelled_folder / "masks"),
            "--mask-suffix",
            "_seg",
            "--eval-size",
            "48",
            "--csv",
            str(csv_path),
            "--per-image",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "mean IoU" in printed and "dataset IoU" in printed and "case3" in printed
    summary = pd.read_csv(csv_path).iloc[0]
    per_image = pd.read_csv(tmp_path / f"scores_{model_path.parent.name}_per_image.csv")  # STEM_RUN_per_image.csv
    assert summary["n"] == 5 and list(per_image["id"]) == [f"case{i}" for i in range(5)]

    direct = evaluate(model, _read_pairs_by_hand(labelled_folder, MODEL_SIZE), _read_pairs_by_hand(labelled_folder, 48))
    assert summary["test_iou"] == pytest.approx(direct.iou, abs=1e-6)
    assert summary["test_dice"] == pytest.approx(direct.dice, abs=1e-6)
    assert summary["test_dataset_iou"] == pytest.approx(direct.dataset_iou, abs=1e-6)

    # numpy: per-image |P & T| / |P | T| of the logits brought to 48x48 by kseg's one resizer,
    # which is plain bilinear (half-pixel centres, no antialiasing), as cv2's INTER_LINEAR is.
    inputs, targets = _read_pairs_by_hand(labelled_folder, MODEL_SIZE), _read_pairs_by_hand(labelled_folder, 48)
    logits = keras.ops.convert_to_numpy(model.predict(inputs.images, batch_size=8, verbose=0))
    resized = kseg.refine.resize_logits(logits, (48, 48))[..., 0]
    by_cv2 = np.stack([cv2.resize(logit[..., 0], (48, 48), interpolation=cv2.INTER_LINEAR) for logit in logits])
    np.testing.assert_allclose(resized, by_cv2, atol=1e-3)
    ious, inter_total, union_total = [], 0, 0
    for logit, truth in zip(resized, targets.masks[..., 0] > 0.5):
        predicted = logit >= 0
        inter, union = np.sum(predicted & truth), np.sum(predicted | truth)
        ious.append(1.0 if union == 0 else inter / union)
        inter_total, union_total = inter_total + inter, union_total + union
    np.testing.assert_allclose(per_image["iou"], ious, atol=1e-6)
    assert summary["test_iou"] == pytest.approx(np.mean(ious), abs=1e-6)
    assert summary["test_dataset_iou"] == pytest.approx(inter_total / union_total, abs=1e-6)

    # The border and calibration scores: the same masks through kseg.boundary, the same
    # probabilities through kseg.calibration, each with its interval in the row.
    masks = np.stack([logit >= 0 for logit in resized])
    borders = kseg.boundary.per_image_boundary_scores(targets.masks, masks)
    np.testing.assert_allclose(per_image[["hd", "hd95", "assd", "nsd"]], borders, atol=1e-4)
    ece = kseg.calibration.ece(kseg.calibration.probabilities(resized), targets.masks[..., 0])
    assert summary["test_ece"] == pytest.approx(ece, abs=1e-6) and summary["test_hd95"] == pytest.approx(
        borders["hd95"].mean(), abs=1e-4
    )
    for score in ("iou", "hd95", "nsd", "ece"):
        assert summary[f"test_{score}_ci_low"] <= summary[f"test_{score}"] <= summary[f"test_{score}_ci_high"]
    for label in ("mean HD95 (px)", "mean ASSD (px)", "mean NSD", "ECE (pixels)"):
        assert label in printed


def test_evaluate_writes_a_reliability_diagram_and_scores_in_mm(model_path, labelled_folder, tmp_path, capsys):
    args = ["evaluate", "--model", str(model_path), "--images", str(labelled_folder / "images"), "--masks"]
    args += [str(labelled_folder / "masks"), "--mask-suffix", "_seg", "--eval-size", "48", "--plots", str(tmp_path)]
    assert main(args) == 0
    in_pixels = capsys.readouterr().out
    assert (tmp_path / f"reliability_{model_path.parent.name}.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*args, "--pixel-spacing", "0.5"]) == 0
    in_mm = capsys.readouterr().out

    def value(printed, label):
        return float(next(line for line in printed.splitlines() if line.startswith(label)).split()[-3])

    assert value(in_mm, "mean HD (mm)") == pytest.approx(value(in_pixels, "mean HD (px)") / 2, abs=1e-3)


def test_predict_gives_the_mask_that_evaluate_scores(model):
    """One resizer: an image already at the evaluation size gets from predict exactly the logits
    and the mask that evaluation scores (the model's input made as prediction makes it)."""
    eval_size = 48
    pictures = [_lesion_picture(eval_size, eval_size, seed) for seed in range(5)]
    images = [image for image, _ in pictures]
    model_inputs = np.stack(
        [cv2.resize(image, (MODEL_SIZE, MODEL_SIZE), interpolation=cv2.INTER_AREA) for image in images]
    ).astype(np.float32) / np.float32(255)
    logits = kseg.evaluation.predict_logits(model, model_inputs, (eval_size, eval_size), batch_size=8)
    scored = kseg.refine.binarise(logits)
    assert 0 < scored.mean() < 1

    # Same logits up to float rounding (XLA may resize one image and a batch in other orders:
    # 5e-7 apart on JAX; a second resizer, e.g. cv2's bilinear, differs by 1e-4 here), and so the
    # same mask wherever the logit is not within that rounding of the threshold.
    batch = predict_mask_batch(model, images, batch_size=8)
    singles = [predict_masks(model, image) for image in images]
    undecided = 0
    for index, ((mask, image_logits), (single_mask, single_logits)) in enumerate(zip(batch, singles)):
        expected_logits, expected_mask = logits[index, ..., 0], scored[index, ..., 0].astype(np.uint8)
        np.testing.assert_allclose(image_logits, expected_logits, rtol=0, atol=1e-5)
        np.testing.assert_allclose(single_logits, expected_logits, rtol=0, atol=1e-5)
        decided = np.abs(expected_logits) > 1e-5
        undecided += int((~decided).sum())
        np.testing.assert_array_equal(mask[decided], expected_mask[decided])
        np.testing.assert_array_equal(single_mask[decided], expected_mask[decided])
    assert undecided <= 2, "the fixture model's logits should rarely sit on the threshold"

    # evaluate() scores exactly those masks.
    ids = [f"case{i}" for i in range(len(images))]
    masks = np.stack([mask for _, mask in pictures]).astype(np.float32)[..., None]
    inputs = SegmentationDataset(
        model_inputs, np.zeros((len(ids), MODEL_SIZE, MODEL_SIZE, 1), np.float32), ids, None, "in"
    )
    targets = SegmentationDataset(np.stack(images).astype(np.float32) / 255, masks, ids, None, "eval")
    scores = evaluate(model, inputs, targets)
    predicted = scored[..., 0] > 0.5
    truth = masks[..., 0] > 0.5
    by_hand = [np.sum(p & t) / max(np.sum(p | t), 1) if np.any(p | t) else 1.0 for p, t in zip(predicted, truth)]
    np.testing.assert_allclose(scores.per_image["iou"], by_hand, atol=1e-6)


def test_evaluate_command_reports_missing_masks(model_path, labelled_folder, capsys):
    code = main(
        [
            "evaluate",
            "--model",
            str(model_path),
            "--images",
            str(labelled_folder / "images"),
            "--masks",
            str(labelled_folder / "masks"),  # no --mask-suffix: no image finds its mask
        ]
    )
    assert code == 2
    assert "without a mask" in capsys.readouterr().err


def _next_importable_backend() -> str | None:
    current = keras.backend.backend()
    start = BACKEND_CYCLE.index(current) if current in BACKEND_CYCLE else -1
    for step in range(1, len(BACKEND_CYCLE)):
        candidate = BACKEND_CYCLE[(start + step) % len(BACKEND_CYCLE)]
        if importlib.util.find_spec(candidate) is not None:
            return candidate
    return None


@pytest.mark.slow
def test_model_saved_here_predicts_the_same_under_another_backend(model, model_path, image_folder, tmp_path):
    other = _next_importable_backend()
    if other is None:
        pytest.skip("no other Keras backend is installed")
    for name in BROKEN:
        (image_folder / name).unlink()
    out = tmp_path / "other_backend"
    env = {**os.environ, "KERAS_BACKEND": other}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kseg",
            "predict",
            "--model",
            str(model_path),
            "--input",
            str(image_folder),
            "--output",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for stem in READABLE:
        original = cv2.cvtColor(cv2.imread(str(image_folder / f"{stem}.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        here, _ = predict_masks(model, original)
        there = cv2.imread(str(out / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED) // 255
        assert there.shape == here.shape
        assert np.mean(there != here) < 1e-3, f"{stem}: {keras.backend.backend()} vs {other}"


def test_predict_masks_applies_the_refinement_the_model_carries(model, tmp_path):
    """Python and the command line give the same mask: a loaded run's model.keras carries its
    refinement, and predict_masks applies it unless told otherwise (issue 40, defect 2)."""
    refined = kseg.refine.Refinement("flip", "largest", temperature=2.0)
    kseg.refine.save_with_refinement(model, tmp_path / "model.keras", refined)
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    image, _ = _lesion_picture(70, 90, 3)
    mask, logits = predict_masks(loaded, image)
    expected_mask, expected_logits = predict_masks(loaded, image, refinement=refined)
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_allclose(logits, expected_logits)
    # ... and its temperature: the logits returned are the TTA logits over 2
    flipped_mask, flipped_logits = predict_masks(loaded, image, refinement=kseg.refine.Refinement("flip", "largest"))
    np.testing.assert_array_equal(mask, flipped_mask)
    np.testing.assert_allclose(logits * 2.0, flipped_logits, rtol=1e-5, atol=1e-5)


def test_a_run_folder_is_its_model_and_the_engine_follows_the_suffix(model_path, labelled_folder, tmp_path, capsys):
    """--model takes a run folder (its model.keras), evaluate defaults to the ready model like
    predict, and --engine auto picks ONNX Runtime for an .onnx file (issue 40, defects 4 and 5)."""
    assert kseg.predict.model_file(model_path.parent) == model_path
    assert [kseg.predict.engine_for(p) for p in ("m.keras", "m.onnx", "m.int8.xml")] == ["keras", "onnx", "openvino"]
    assert kseg.predict.engine_for("m.onnx", "keras") == "keras"
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="a folder without model.keras"):
        kseg.predict.load_engine(empty)
    args = ["--images", str(labelled_folder / "images"), "--masks", str(labelled_folder / "masks")]
    args += ["--mask-suffix", "_seg", "--eval-size", "48"]
    assert main(["evaluate", "--model", str(model_path.parent), *args]) == 0
    by_folder = capsys.readouterr().out
    assert main(["evaluate", "--model", str(model_path), *args]) == 0
    assert capsys.readouterr().out == by_folder


def test_path_problems_name_the_flag_and_skipped_files_are_named(model_path, labelled_folder, tmp_path, capsys):
    """A file given as --images, a mistyped folder, and files of other types in a folder
    (issue 40, defects 3 and 6)."""
    image = next((labelled_folder / "images").iterdir())
    for images, problem in ((image, "a file, where a folder was expected"), (tmp_path / "typo", "no such folder")):
        assert main(["evaluate", "--model", str(model_path), "--images", str(images)]) == 2
        err = capsys.readouterr().err
        assert f"--images {images}: {problem}" in err and "PH2" not in err and "model(s) failed" not in err
    (labelled_folder / "images" / "notes.txt").write_text("not an image")
    (labelled_folder / "images" / "case9.webp").write_bytes(b"RIFF")
    with pytest.warns(UserWarning, match=r"skipped 2 file\(s\) that are not .* images: case9.webp, notes.txt"):
        files = kseg.predict.find_images(labelled_folder / "images")
    assert len(files) == 5
