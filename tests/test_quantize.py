"""kseg.quantize: the int8 OpenVINO engine of a grid run calibrates on the run's training cases
only, is refused by its validation gate when its calibration is broken, and scores within the
gate's bound of the float32 export on the run's test cases (PH2 where present, else the
synthetic set). The quantizer reads the ONNX file, which no backend touches beyond the export
that tests/test_export.py checks under each, so these run in one pass (tests/conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kseg import export, quantize
from kseg.cli import run_grid_command
from kseg.data import find_ph2
from kseg.evaluation import evaluate

pytest.importorskip("nncf", reason="int8 export needs NNCF: pip install 'kseg[openvino]'")
pytestmark = pytest.mark.backend_independent


@pytest.fixture(scope="module")
def run_model(tmp_path_factory):
    """A smoke-preset U-Net trained by the grid on PH2 (where found) or the synthetic set, long
    enough to segment something (validation IoU ~0.24 on the synthetic set), so that a broken
    calibration has IoU to lose."""
    root = tmp_path_factory.mktemp("int8")
    dataset = ["--dataset", "ph2", "--split", "60,20,20"] if find_ph2() else ["--dataset", "synthetic"]
    if not find_ph2():
        print("PH2 not found: the int8 agreement is measured on the synthetic set")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KSEG_CACHE_DIR", str(root / "cache"))
        args = [
            "--preset",
            "smoke",
            *dataset,
            "--quiet",
            "--models",
            "unet",
            "--losses",
            "bce",
            "--epochs",
            "20",
            "--lr",
            "3e-3",
        ]
        assert run_grid_command([*args, "--results", str(root / "lb.csv"), "--output", str(root / "runs")]) == 0
    (run_dir,) = (root / "runs").iterdir()
    return run_dir / "model.keras"


def test_calibration_reads_the_training_cases_and_nothing_else(run_model, monkeypatch, tmp_path):
    seen = []
    real = quantize.quantize_onnx
    monkeypatch.setattr(quantize, "quantize_onnx", lambda path, images: seen.append(images) or real(path, images))
    report = quantize.quantize_run(run_model, tmp_path / "m.int8.xml")
    split = json.loads((run_model.parent / "split.json").read_text())
    assert list(report.calibration_ids) == split["train"]
    assert not set(report.calibration_ids) & (set(split["val"]) | set(split["test"]))
    data = quantize.run_data(run_model.parent)["input"]
    np.testing.assert_array_equal(seen[0], np.asarray(data.select_ids(split["train"]).images, np.float32))


def test_a_broken_calibration_is_refused_with_both_numbers_and_writes_nothing(run_model, tmp_path):
    output = tmp_path / "broken.int8.xml"
    # Calibrating on images ten thousand times too bright makes every activation range so wide
    # that real activations all fall in one quantization step: the int8 model predicts nothing.
    # (Darker or flat calibration images only clip, which a weak smoke model need not lose IoU by.)
    with pytest.raises(quantize.QuantizationRefused, match=r"int8 validation IoU 0\.\d+ against 0\.\d+ in float32"):
        quantize.quantize_run(run_model, output, calibration_transform=lambda images: images * 1e4)
    assert not output.exists() and not export.refinement_path(output).exists()


def test_int8_scores_the_test_cases_within_the_bound_of_float32(run_model, tmp_path):
    report = quantize.quantize_run(run_model, tmp_path / "m.int8.xml")
    assert report.val_iou_drop <= quantize.MAX_IOU_DROP
    split = json.loads((run_model.parent / "split.json").read_text())
    data = quantize.run_data(run_model.parent)
    inputs, targets = data["input"].select_ids(split["test"]), data["target"].select_ids(split["test"])
    refinement = export.load_saved_refinement(report.output)
    onnx_path = export.export_model(export.as_float32(_load(run_model)), tmp_path / "m.onnx")
    scores = {
        name: evaluate(engine, inputs, targets, refinement=refinement).iou
        for name, engine in {
            "float32": export.OpenVinoEngine(onnx_path, precision="float32"),
            "int8": export.OpenVinoEngine(report.output),
        }.items()
    }
    assert abs(scores["float32"] - scores["int8"]) <= quantize.MAX_IOU_DROP, scores


def test_data_other_than_the_runs_is_refused(run_model, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_model.parent, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "data_fingerprint": "00000000-00000000"}))
    with pytest.raises(ValueError, match="is not the data run trained on: fingerprint"):
        quantize.quantize_run(copy / "model.keras", tmp_path / "x.xml")
    assert not (tmp_path / "x.xml").exists()


def _load(path):
    from kseg.predict import load_trained_model

    return load_trained_model(path)


def test_the_export_command_writes_the_int8_model_or_exits_2_naming_the_gate(run_model, tmp_path, capsys):
    from kseg.cli import main

    output = tmp_path / "cli.int8.xml"
    assert main(["export", "--model", str(run_model), "--format", "openvino-int8", "--output", str(output)]) == 0
    n_train = len(json.loads((run_model.parent / "split.json").read_text())["train"])
    assert output.exists() and output.with_suffix(".bin").exists()
    assert f"calibrated on {n_train} training cases" in capsys.readouterr().out
    refused = tmp_path / "refused.int8.xml"
    args = ["export", "--model", str(run_model), "--format", "openvino-int8", "--output", str(refused)]
    assert main([*args, "--max-iou-drop", "-1"]) == 2
    assert "no int8 model written" in capsys.readouterr().err and not refused.exists()
