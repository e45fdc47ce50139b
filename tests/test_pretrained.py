"""kseg's ready model (kseg/pretrained): it loads and predicts offline under every backend, its
provenance names a committed leaderboard row, and :func:`kseg.experiment.ready_model.install` makes one from
a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from kseg import pretrained
from kseg.cli import main, run_grid_command
from kseg.data import synthetic
from kseg.experiment import leaderboard, ready_model
from kseg.pretrained import __main__ as pretrained_command

COMMITTED_RESULTS = Path(__file__).parents[1] / "experiments.csv"


def _write_images(folder: Path, n: int = 2) -> Path:
    folder.mkdir()
    for case_id, image in zip(*(lambda d: (d.ids, d.images))(synthetic(n=n, image_size=96, seed=4))):
        bgr = cv2.cvtColor((np.asarray(image) * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        assert cv2.imwrite(str(folder / f"{case_id}.jpg"), bgr)
    return folder


def test_predict_without_a_model_runs_the_ready_model_offline(tmp_path, capsys):
    images = _write_images(tmp_path / "images")
    assert main(["predict", "--images", str(images), "--output", str(tmp_path / "out")]) == 0
    assert "ready dermoscopy model" in capsys.readouterr().out
    for image in images.iterdir():
        mask = cv2.imread(str(tmp_path / "out" / "masks" / f"{image.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (96, 96) and set(np.unique(mask)) <= {0, 255}
        # A dark synthetic lesion on lighter skin: the model finds some of it, and not the whole frame.
        assert 0.01 < (mask > 0).mean() < 0.9


@pytest.mark.backend_independent
def test_the_ready_model_names_its_committed_row():
    facts = pretrained.provenance()
    rows = leaderboard.read(COMMITTED_RESULTS)
    row = rows[(rows["config_hash"] == facts["config_hash"]) & (rows["status"] == "ok")].iloc[-1]
    assert row["run_id"] == facts["run_id"] and row["preset"] == "dermoscopy"
    assert facts["recipe"] == leaderboard.recipe(row) and facts["test_iou"] == row["test_iou"]
    assert facts["bytes"] == pretrained.READY_MODEL.stat().st_size


@pytest.mark.backend_independent
def test_install_makes_a_run_the_ready_model(tmp_path, monkeypatch):
    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path / "cache"))
    results, runs = tmp_path / "lb.csv", tmp_path / "runs"
    common = ["--preset", "smoke", "--dataset", "synthetic", "--quiet", "--models", "unet", "--losses", "bce"]
    assert run_grid_command([*common, "--results", str(results), "--output", str(runs)]) == 0
    (run_dir,) = runs.iterdir()
    monkeypatch.setattr(pretrained, "READY_MODEL", tmp_path / "ready.keras")
    monkeypatch.setattr(pretrained, "PROVENANCE", tmp_path / "ready.json")
    monkeypatch.setattr(ready_model, "PROVENANCE_FIELDS", ("run_id", "config_hash", "test_iou"))
    assert pretrained_command.main([str(run_dir), "--results", str(results)]) == 0  # the documented command
    facts = json.loads((tmp_path / "ready.json").read_text())
    assert facts["run_id"] == run_dir.name and "recipe" in facts
    # Without optimizer state: smaller than the run's own file.
    assert (tmp_path / "ready.keras").stat().st_size < (run_dir / "model.keras").stat().st_size
    with pytest.raises(ValueError, match="expects a run with an ok row"):
        ready_model.install(run_dir, tmp_path / "other.csv")


@pytest.mark.backend_independent
def test_the_ready_model_is_the_best_validated_fine_tune_with_a_model(tmp_path):
    results, runs = tmp_path / "lb.csv", tmp_path / "runs"

    def run(run_id, val_refined, preset="dermoscopy", joint="isic2018_train:ab12", saved=True):
        leaderboard.append_row(
            results,
            dict(
                run_id=run_id,
                config_hash=run_id,
                model="unet",
                loss="bce",
                seed=0,
                dataset="ph2",
                preset=preset,
                status="ok",
                val_iou=0.5,
                val_iou_refined=val_refined,
                joint_source=joint,
                test_iou=0.5,
            ),
        )
        if saved:
            (runs / run_id).mkdir(parents=True)
            (runs / run_id / "model.keras").write_bytes(b"")

    with pytest.raises(FileNotFoundError, match="a trained run of the dermoscopy preset"):
        ready_model.best_run(results, runs)
    run("pretraining", 0.99, joint=None)  # the preset's pretraining run: not a candidate
    run("other-preset", 0.95, preset="cpu")
    run("unsaved", 0.90, saved=False)  # its folder is gone: it cannot be installed
    run("good", 0.80)
    run("best", 0.85)
    assert ready_model.best_run(results, runs) == runs / "best"


def test_the_provenance_is_what_the_committed_row_says_with_its_pretraining():
    """dermoscopy.json is provenance_facts of its committed row: seed 2, not 2.0, and the recipe of
    the ISIC pretraining it started from, whose epochs the fine-tune's recipe does not show
    (issue 40, defect 9)."""
    facts = pretrained.provenance()
    table = leaderboard.read(COMMITTED_RESULTS)
    row = table[(table["config_hash"] == facts["config_hash"]) & (table["status"] == "ok")].iloc[-1]
    assert ready_model.provenance_facts(row, table) == facts
    assert isinstance(facts["seed"], int) and '"seed": 2,' in pretrained.PROVENANCE.read_text()
    assert facts["pretraining"].startswith("isic2018_train: ") and " 32ep " in facts["pretraining"]
