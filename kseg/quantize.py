"""An int8 OpenVINO engine for a trained run: post-training quantization with NNCF, calibrated on
the run's own training images and refused where it costs validation IoU.

``python -m kseg export --model RUN/model.keras --format openvino-int8`` calls
:func:`quantize_run`:

1. exports the model to ONNX (:func:`kseg.export.export_model`, the active backend's exporter);
2. quantizes it with ``nncf.quantize`` (8-bit weights and activations), calibrating the
   activation ranges on the cases ``RUN/split.json`` lists as ``train``; the validation and test
   cases are never read for calibration;
3. scores the float32 export and the int8 model on the run's validation cases, with the run's
   refinement and exactly the leaderboard's scoring, and refuses to write the int8 model, naming
   both numbers, where validation IoU drops by more than ``max_iou_drop`` (0.005);
4. writes the OpenVINO IR (``PATH.xml`` + ``PATH.bin``) and the refinement beside it, which
   ``predict`` / ``evaluate --engine openvino --model PATH.xml`` run.

The data is found as the run found it (PH2 through ``KSEG_PH2_DIR`` or ``data_dir``, a folder
dataset through ``data_dir``, the synthetic set by itself) and must have the run's fingerprint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from kseg import export, predict
from kseg.data import LOADERS, SegmentationDataset, load_dataset
from kseg.evaluation import evaluate

#: The most validation IoU the int8 model may lose against the float32 export.
MAX_IOU_DROP = 0.005


class QuantizationRefused(ValueError):
    """The int8 model lost more validation IoU than allowed; nothing was written."""


@dataclasses.dataclass(frozen=True)
class QuantizationReport:
    """What :func:`quantize_run` did: the file written, the cases it calibrated on, and the
    validation IoU of the float32 export and of the int8 model."""

    output: Path
    calibration_ids: tuple[str, ...]
    val_iou_float: float
    val_iou_int8: float

    @property
    def val_iou_drop(self) -> float:
        return self.val_iou_float - self.val_iou_int8


def run_data(run_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> dict[str, SegmentationDataset]:
    """The run's data at its training size (``"input"``) and its evaluation size (``"target"``),
    loaded as the run loaded it; raises ValueError where the data found is not the run's."""
    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.json, so not a run folder of kseg's grid")
    config = json.loads(config_file.read_text())
    name = config["dataset"]
    kind = name if name in LOADERS else "folder"
    if kind == "folder" and data_dir is None:
        raise ValueError(f"{run_dir} trained on the folder dataset {name!r}: pass its folder (--data-dir)")
    sizes = dict.fromkeys((config["image_size"], config["eval_size"]))
    loaded = {
        size: load_dataset(
            kind, path=data_dir, image_size=size, mask_suffix=config.get("mask_suffix", ""), n=config["synthetic_n"]
        )
        for size in sizes
    }
    fingerprint = "-".join(dataset.fingerprint()[:8] for dataset in loaded.values())
    if fingerprint != config["data_fingerprint"]:
        raise ValueError(
            f"the data found ({data_dir or kind}) is not the data {run_dir.name} trained on: fingerprint "
            f"{fingerprint}, the run's {config['data_fingerprint']}"
        )
    return {"input": loaded[config["image_size"]], "target": loaded[config["eval_size"]]}


def split_ids(run_dir: str | os.PathLike) -> dict[str, list[str]]:
    """The run's case ids per part (``train``, ``val``, ``test``), from its ``split.json``."""
    split_file = Path(run_dir) / "split.json"
    if not split_file.is_file():
        raise FileNotFoundError(f"{Path(run_dir)}: no split.json, so kseg cannot tell its training cases")
    return json.loads(split_file.read_text())


def quantize_onnx(onnx_path: str | os.PathLike, calibration: np.ndarray):
    """``nncf.quantize`` of the ONNX model at ``onnx_path`` (read by OpenVINO), its activation
    ranges taken from ``calibration`` (float32 NHWC images at the model's size, one per sample).
    Returns the quantized ``openvino.Model``."""
    try:
        import nncf
        import openvino
    except ImportError as error:
        raise ImportError("int8 export needs NNCF and OpenVINO: pip install 'kseg[openvino]'") from error
    model = openvino.Core().read_model(str(onnx_path))
    (model_input,) = model.inputs
    batch, *rest = model_input.get_partial_shape()
    samples = np.asarray(calibration, np.float32)
    fixed = None if batch.is_dynamic else batch.get_length()
    if fixed:  # a fixed-batch export (JAX): calibrate on whole batches
        samples = samples[: len(samples) // fixed * fixed].reshape(-1, fixed, *samples.shape[1:])
    else:
        samples = samples[:, None]
    return nncf.quantize(
        model,
        nncf.Dataset(list(samples)),
        subset_size=len(samples),
        preset=nncf.QuantizationPreset.MIXED,  # symmetric weights, asymmetric activations (ReLU outputs)
    )


def quantize_run(
    model_path: str | os.PathLike,
    output: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    max_iou_drop: float = MAX_IOU_DROP,
    calibration_transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> QuantizationReport:
    """Writes the int8 OpenVINO model of the run whose ``model.keras`` is ``model_path`` (see the
    module docstring), or raises :class:`QuantizationRefused` with both validation IoUs.

    Args:
        model_path: ``RUN/model.keras`` of a grid run (its ``config.json`` and ``split.json`` beside it).
        output: the ``.xml`` to write (default ``RUN/model.int8.xml``).
        data_dir: where the run's data is, if not where the run found it.
        max_iou_drop: the largest validation IoU loss accepted.
        calibration_transform: applied to the calibration images before NNCF sees them (tests
            use it to break the calibration on purpose).
    """
    import openvino

    model_path = Path(model_path)
    run_dir = model_path.parent
    output = Path(output) if output else model_path.with_name(f"{model_path.stem}.int8.xml")
    ids = split_ids(run_dir)
    data = run_data(run_dir, data_dir)
    calibration = data["input"].select_ids(ids["train"])
    val_inputs, val_targets = data["input"].select_ids(ids["val"]), data["target"].select_ids(ids["val"])
    model = predict.load_trained_model(model_path)
    refinement = export.load_saved_refinement(model_path)

    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = export.export_model(model, Path(scratch) / "model.onnx", refinement=refinement)
        images = np.asarray(calibration.images, np.float32)
        quantized = quantize_onnx(onnx_path, calibration_transform(images) if calibration_transform else images)
        float_engine = export.OpenVinoEngine(onnx_path, precision="float32")
        val_float = evaluate(float_engine, val_inputs, val_targets, refinement=refinement).iou
        int8_path = Path(scratch) / "model.int8.xml"
        openvino.save_model(quantized, str(int8_path), compress_to_fp16=False)
        val_int8 = evaluate(export.OpenVinoEngine(int8_path), val_inputs, val_targets, refinement=refinement).iou
        if val_float - val_int8 > max_iou_drop:
            raise QuantizationRefused(
                f"{model_path}: int8 validation IoU {val_int8:.4f} against {val_float:.4f} in float32, a drop of "
                f"{val_float - val_int8:.4f} > {max_iou_drop}; no int8 model written"
            )
        output.parent.mkdir(parents=True, exist_ok=True)
        openvino.save_model(quantized, str(output), compress_to_fp16=False)
    export.refinement_path(output).write_text(json.dumps(refinement.to_dict(), indent=2))
    return QuantizationReport(output, tuple(calibration.ids), val_float, val_int8)


__all__ = [
    "MAX_IOU_DROP",
    "QuantizationRefused",
    "QuantizationReport",
    "run_data",
    "split_ids",
    "quantize_onnx",
    "quantize_run",
]
