"""Using a trained model, as a library: masks for new images and scores on a labelled folder
(the command lines ``python -m kseg predict`` / ``evaluate`` in :mod:`kseg.cli` call these).

Prediction works at each image's own resolution: the image is resized (INTER_AREA) to the model's
input size, the logits are resized back to the image's size by :func:`kseg.refine.resize_logits`
(bilinear, the same function evaluation uses) and thresholded there, so mask edges follow the
original pixels rather than the model's coarser grid. A run's refinement (test-time flips and
rotations, post-processing) applies on the way.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import keras
import numpy as np
from tqdm.auto import tqdm

# load_model's registrations: kseg.refine imports kseg.models, which imports every layer and the model class.
from kseg import refine
from kseg._errors import invalid_value, unknown_name
from kseg.data import load_dataset, load_folder, read_image
from kseg.data.io import image_files
from kseg.evaluation import Evaluation, evaluate
from kseg.refine import binarise, resize_logits
from kseg.visualize import overlay


def model_input_size(model: keras.Model) -> tuple[int, int]:
    """``(height, width)`` the model was built for; raises if the model accepts any size."""
    height, width = model.input_shape[1:3]
    if height is None or width is None:
        raise ValueError(f"model {model.name!r} has no fixed input size ({model.input_shape}); kseg models do")
    return int(height), int(width)


def _as_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """Accepts uint8 RGB or float RGB in [0, 1]; returns uint8 RGB ``(H, W, 3)``."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Expected an (H, W, 3) RGB image. Received: shape {image.shape}")
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _model_batch(images: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """uint8 images of any sizes -> float32 ``(N, H, W, 3)`` batch at ``size``, resized as the
    training data was (INTER_AREA on uint8, then scaled to [0, 1])."""
    height, width = size
    resized = [
        im if im.shape[:2] == size else cv2.resize(im, (width, height), interpolation=cv2.INTER_AREA) for im in images
    ]
    return np.stack(resized).astype(np.float32) / np.float32(255.0)


def predict_mask_batch(
    model: keras.Model,
    images: Sequence[np.ndarray],
    threshold: float = 0.5,
    refinement: refine.Refinement | None = None,
    batch_size: int = 8,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`predict_masks` for several images (of any, possibly different, sizes) in one model
    call. Returns one ``(mask, logits)`` pair per image, each at that image's own size."""
    if not len(images):
        return []
    if not 0.0 < threshold < 1.0:
        raise invalid_value("threshold", "a probability strictly between 0 and 1", threshold)
    refinement = refinement or refine.attached(model)  # a loaded model's own, as the command line uses
    uint8_images = [_as_uint8_rgb(im) for im in images]
    batch = _model_batch(uint8_images, model_input_size(model))
    logits = refine.tta_predict_logits(model, batch, refinement.tta, batch_size=batch_size)
    results = []
    for image, image_logits in zip(uint8_images, logits):
        full = resize_logits(image_logits, image.shape[:2]) / np.float32(refinement.temperature)  # calibrated
        mask = binarise(full[None], threshold, refinement.postprocess)[0]
        results.append((mask[..., 0].astype(np.uint8), full[..., 0]))
    return results


def predict_masks(
    model: keras.Model, image: np.ndarray, threshold: float = 0.5, refinement: refine.Refinement | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The binary mask and the logits of one image, at the image's own size.

    Args:
        model: a kseg model (outputs logits), e.g. ``keras.saving.load_model("runs/X/model.keras")``.
        image: ``(H, W, 3)`` RGB, uint8 or float in [0, 1]; any H and W.
        threshold: probability above which a pixel is lesion.
        refinement: test-time augmentation, post-processing and temperature; default: the
            model's own (``keras.saving.load_model`` of a run's ``model.keras`` carries what the run
            chose, as ``python -m kseg predict`` applies it), else none.

    Returns:
        ``mask``: ``(H, W)`` uint8 of 0/1; ``logits``: ``(H, W)`` float32, bilinearly resized
        from the model's output (averaged over the TTA views) and divided by the refinement's
        temperature, so ``sigmoid(logits)`` is the calibrated lesion probability.
    """
    return predict_mask_batch(model, [image], threshold, refinement)[0]


def find_images(path: str | os.PathLike) -> list[Path]:
    """``path`` itself if it is a file, else the image files directly inside the folder, sorted."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    files = image_files(path)
    if not files:
        raise FileNotFoundError(f"{path}: folder holds no image files")
    return files


@dataclass
class PredictionReport:
    """What :func:`predict_files` did: the masks written and the files that failed (with why)."""

    written: list[Path]
    failed: dict[Path, str]


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write")


def predict_files(
    model: keras.Model,
    files: Sequence[Path],
    output_dir: str | os.PathLike,
    threshold: float = 0.5,
    batch_size: int = 8,
    progress: bool = True,
    refinement: refine.Refinement | None = None,
) -> PredictionReport:
    """Writes ``output_dir/masks/STEM.png`` (0/255) and ``output_dir/overlays/STEM.png`` for each
    file. A file that cannot be read is reported on stderr by name and skipped; the rest go on."""
    masks_dir, overlays_dir = Path(output_dir) / "masks", Path(output_dir) / "overlays"
    masks_dir.mkdir(parents=True, exist_ok=True)
    overlays_dir.mkdir(parents=True, exist_ok=True)
    report = PredictionReport(written=[], failed={})
    first_with_stem: dict[str, Path] = {}
    bar = tqdm(total=len(files), desc="predict", unit="image", disable=not progress, file=sys.stderr)

    def fail(path: Path, reason: str) -> None:
        report.failed[path] = reason
        tqdm.write(f"error: {path}: {reason}", file=sys.stderr)

    for chunk in _chunks(list(files), batch_size):
        readable: list[tuple[Path, np.ndarray]] = []
        for path in chunk:
            if path.stem in first_with_stem:
                fail(path, f"same name stem as {first_with_stem[path.stem].name}; its mask would overwrite that one")
                continue
            try:
                readable.append((path, read_image(path)))
                first_with_stem[path.stem] = path
            except (OSError, ValueError, cv2.error) as error:
                fail(path, str(error).removeprefix(f"{path}: "))
        predictions = predict_mask_batch(model, [image for _, image in readable], threshold, refinement, batch_size)
        for (path, image), (mask, _) in zip(readable, predictions):
            mask_path = masks_dir / f"{path.stem}.png"
            if not cv2.imwrite(str(mask_path), mask * np.uint8(255)):
                raise OSError(f"{mask_path}: could not write")
            thickness = max(2, round(max(mask.shape) / 256))
            _write_rgb(overlays_dir / f"{path.stem}.png", overlay(image / np.float32(255.0), mask, thickness=thickness))
            report.written.append(mask_path)
        bar.update(len(chunk))
    bar.close()
    return report


def model_file(path: str | os.PathLike) -> Path:
    """``path``, or for a run folder (``runs/RUN``) the ``model.keras`` inside it."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / "model.keras").is_file():
            raise FileNotFoundError(f"{path}: a folder without model.keras (expected a run folder, or a model file)")
        return path / "model.keras"
    return path


def load_trained_model(path: str | os.PathLike) -> keras.Model:
    """``keras.saving.load_model`` of a model file or a run folder's ``model.keras``, with an error
    that names the file (no custom objects needed)."""
    path = model_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # keras raises many types for a bad archive
        raise ValueError(f"{path}: cannot load the model ({type(error).__name__}: {error})") from error


# ----- inference engines: ``predict --engine keras|onnx|openvino`` -----
#: What ``load_engine`` runs: keras (a ``.keras`` file); onnx and openvino (an ``.onnx`` file from
#: ``python -m kseg export``, run by ONNX Runtime or by OpenVINO).
ENGINES = ("keras", "onnx", "openvino")
#: ``auto``'s engine by the file's suffix (anything else: keras).
ENGINE_BY_SUFFIX = {".onnx": "onnx", ".xml": "openvino"}


def engine_for(path: str | os.PathLike, engine: str = "auto") -> str:
    """``engine``, or for ``auto`` the one the file's suffix names (``.onnx``: ONNX Runtime,
    ``.xml``: OpenVINO's int8 IR, else Keras)."""
    if engine != "auto":
        return engine
    return ENGINE_BY_SUFFIX.get(Path(path).suffix.lower(), "keras")


def load_engine(path: str | os.PathLike, engine: str = "auto", precision: str = "auto"):
    """The model at ``path`` (a file, or a run folder's ``model.keras``) as something every
    function here takes as ``model``: ``keras``, a Keras model (:func:`load_trained_model`);
    ``onnx`` / ``openvino``, a :class:`kseg.export.OnnxEngine` / :class:`kseg.export.OpenVinoEngine`
    with the same ``input_shape`` and ``predict(x, batch_size=...)``, so every engine shares the
    resizing, logit resizing, threshold and refinement code above; ``auto`` picks by the file's
    suffix (:func:`engine_for`). ``precision`` is OpenVINO's (``auto``, ``float32`` or
    ``bfloat16``); the other engines run the file as it is."""
    path = model_file(path)
    engine = engine_for(path, engine)
    if engine == "keras":
        return load_trained_model(path)
    if engine == "onnx":
        from kseg.export import OnnxEngine

        return OnnxEngine(path)
    if engine == "openvino":
        from kseg.export import OpenVinoEngine

        return OpenVinoEngine(path, precision=precision)
    raise unknown_name("engine", engine, ENGINES)


# ----- end of inference engines -----


def evaluate_folder(
    model: keras.Model,
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike | None,
    mask_suffix: str = "",
    eval_size: int = 256,
    threshold: float = 0.5,
    batch_size: int = 8,
    refinement: refine.Refinement | None = None,
    **scoring: Any,
) -> Evaluation:
    """Scores ``model`` on a labelled set exactly as the leaderboard does: inputs at the model's
    size, masks at ``eval_size``, logits resized to ``eval_size``. The set is an ``images_dir`` +
    ``masks_dir`` pair, or with ``masks_dir=None`` whatever :func:`kseg.data.load_dataset` finds
    at ``images_dir`` (a PH2 folder in either layout, or a folder with ``images/`` and ``masks/``).
    ``scoring``: :func:`kseg.evaluation.evaluate`'s ``tolerance``, ``spacing`` and ``ece_bins``."""

    def load(size):
        if masks_dir is None:
            return load_dataset("auto", path=images_dir, image_size=size, mask_suffix=mask_suffix)
        return load_folder(images_dir, masks_dir, mask_suffix, image_size=size)

    inputs, targets = load(model_input_size(model)), load(eval_size)
    return evaluate(
        model, inputs, targets, threshold=threshold, batch_size=batch_size, refinement=refinement, **scoring
    )


def format_evaluation(scores: Evaluation, per_image: bool = False, unit: str = "px") -> str:
    """The summary (and optionally one line per image) as a plain-text table: each mean with its
    bootstrap 95% interval over the images (``unit``: the distances' unit)."""

    def line(label: str, value: float, score: str, note: str = "") -> str:
        low, high = scores.interval(score)
        interval = "" if np.isnan(low) else f"  [{low:.4f}, {high:.4f}]"
        return f"{label:<22} {value:.4f}{interval}{note}"

    lines = [
        f"{'cases':<22} {len(scores.per_image)}",
        line("mean IoU", scores.iou, "iou"),
        line("mean Dice", scores.dice, "dice"),
        f"{'dataset IoU':<22} {scores.dataset_iou:.4f}",
        f"{'ISIC score':<22} {scores.isic_score:.4f} (per-image IoU < 0.65 counts 0)",
        f"{'failures (IoU < 0.5)':<22} {scores.failure_fraction:.4f}",
        line(f"mean HD95 ({unit})", scores.hd95, "hd95"),
        line(f"mean HD ({unit})", scores.hd, "hd"),
        line(f"mean ASSD ({unit})", scores.assd, "assd"),
        line("mean NSD", scores.nsd, "nsd"),
        line("ECE (pixels)", scores.ece, "ece"),
    ]
    lines += [f"{'IoU ' + name:<22} {value:.4f}" for name, value in scores.iou_by_diagnosis.items()]
    lines.append("[ ]: bootstrap 95% interval over the images; an empty mask against a lesion scores the diagonal")
    if per_image:
        lines += ["", scores.per_image.to_string(index=False, float_format=lambda v: f"{v:.4f}")]
    return "\n".join(lines)


def summary_row(scores: Evaluation, **context: object) -> dict[str, object]:
    """One CSV row: ``context`` (model, folder, sizes) then the leaderboard's test_* metrics and
    the bootstrap 95% interval of each score that has one."""
    row = {**context, "n": len(scores.per_image), **scores.as_row()}
    for score in ("iou", "dice", "hd95", "hd", "assd", "nsd", "ece"):
        row[f"test_{score}_ci_low"], row[f"test_{score}_ci_high"] = scores.interval(score)
    return row


__all__ = [
    "model_input_size",
    "predict_mask_batch",
    "predict_masks",
    "find_images",
    "PredictionReport",
    "predict_files",
    "model_file",
    "load_trained_model",
    "ENGINES",
    "engine_for",
    "load_engine",
    "evaluate_folder",
    "format_evaluation",
    "summary_row",
]
