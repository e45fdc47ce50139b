"""The notebooks run top to bottom, headless (in the backend-independent pass, tests/conftest.py):
quickstart trains briefly (KSEG_QUICK=1); explore_results reads a leaderboard and run folders
made by the smoke grid, and still runs when the run folders are gone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from kseg.cli import run_grid_command

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    # The kernel is a child process: it inherits these (and KERAS_BACKEND) from os.environ.
    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path_factory.mktemp("kseg_cache")))
    monkeypatch.setenv("KSEG_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.delenv("KSEG_PH2_DIR", raising=False)
    monkeypatch.delenv("KSEG_DATASET", raising=False)
    monkeypatch.delenv("KSEG_SHOW_BACKEND", raising=False)


def run_notebook(name: str) -> nbformat.NotebookNode:
    """Executes ``notebooks/NAME`` in its own folder with this interpreter's ipykernel
    (jupyter_client starts the ``python3`` kernel with ``sys.executable``); raises on any error."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=240, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    return notebook


def text_of(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def images_in(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for c in notebook.cells for o in c.get("outputs", []))


def test_committed_notebooks_have_no_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} holds outputs"


# The notebooks call kseg's public API, which the rest of the suite tests on every backend; what these
# add (the cells run, print and plot) does not depend on it, and a kernel costs 20-60 s a backend.
@pytest.mark.slow
@pytest.mark.backend_independent
def test_quickstart_runs(tmp_path):
    notebook = run_notebook("quickstart.ipynb")
    text = text_of(notebook)
    assert "test IoU" in text and "reloaded model predicts the same: True" in text
    assert images_in(notebook) >= 1


@pytest.fixture(scope="module")
def grid_results(tmp_path_factory) -> tuple[Path, Path]:
    """A real leaderboard and run folders: the smoke grid, 1 model x 2 losses x 2 seeds."""
    root = tmp_path_factory.mktemp("grid")
    previous = os.environ.get("KSEG_CACHE_DIR")
    os.environ["KSEG_CACHE_DIR"] = str(root / "cache")
    try:
        code = run_grid_command(
            [
                "--preset",
                "smoke",
                "--dataset",
                "synthetic",
                "--models",
                "unet",
                "--losses",
                "bce",
                "dice",
                "--seeds",
                "0",
                "1",
                # float32 explicitly: precision "auto" calls keras.distribution.list_devices, which the
                # torch backend lacks (kseg.experiment.config.resolve_precision, reported to its owner).
                "--precision",
                "float32",
                "--results",
                str(root / "experiments.csv"),
                "--output",
                str(root / "runs"),
                "--quiet",
            ]
        )
    finally:
        if previous is None:
            os.environ.pop("KSEG_CACHE_DIR", None)
        else:
            os.environ["KSEG_CACHE_DIR"] = previous
    assert code == 0
    return root / "experiments.csv", root / "runs"


# One test for the three views of one grid: pytest -n 2 would build the grid once per worker.
@pytest.mark.slow
@pytest.mark.backend_independent
def test_explore_results_on_a_grid_without_run_folders_and_with_a_missing_model(grid_results, monkeypatch, tmp_path):
    results, runs = grid_results
    monkeypatch.setenv("KSEG_RESULTS", str(results))
    monkeypatch.setenv("KSEG_RUNS", str(runs))
    notebook = run_notebook("explore_results.ipynb")
    text = text_of(notebook)
    assert "dataset: synthetic" in text and "4 ok" in text
    assert "unet + bce" in text and "unet + dice" in text
    assert "mean difference" in text and "seed-to-seed spread" in text
    assert "pooled" in text and "groups are not distinguishable from the best" in text  # per-image intervals
    assert "No per-diagnosis scores" in text  # synthetic cases have no diagnosis
    assert "missing" not in text and "no gallery" not in text.lower()
    assert "IoU" in text and "test cases" in text
    assert "lesion covers" in text and "cases fail" in text  # IoU by lesion size
    assert images_in(notebook) >= 3  # bar chart, learning curves, gallery

    # Without the run folders: the leaderboard's views only.
    monkeypatch.setenv("KSEG_RUNS", str(tmp_path / "no_runs_here"))
    notebook = run_notebook("explore_results.ipynb")
    text = text_of(notebook)
    assert "NOT FOUND" in text and "missing:" in text and "no gallery" in text.lower()
    assert images_in(notebook) == 1  # only the bar chart

    # One deleted model.keras: the gallery falls back to the best pair's other seed.
    import shutil

    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    first_models = sorted(copy.glob("*seed0*/model.keras"))
    assert first_models
    for model_file in first_models:
        model_file.unlink()
    monkeypatch.setenv("KSEG_RUNS", str(copy))
    notebook = run_notebook("explore_results.ipynb")
    text = text_of(notebook)
    assert "missing model.keras" in text
    assert "seed1" in text and images_in(notebook) >= 3
    assert json.loads((next(copy.iterdir()) / "config.json").read_text())["dataset"] == "synthetic"
