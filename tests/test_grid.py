"""The experiment grid end to end on the synthetic set: rows, artifacts, resume, failures, kills."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import pandas as pd
import pytest

from kseg import grid, leaderboard
from kseg.cli import run_grid_command
from kseg.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["--preset", "smoke", "--dataset", "synthetic", "--quiet"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KSEG_PH2_DIR", raising=False)


def test_smoke_grid_writes_rows_and_artifacts_then_resumes(tmp_path, capsys):
    results, runs = tmp_path / "lb.csv", tmp_path / "runs"
    args = [*SMOKE, "--models", "unet", "--losses", "bce", "dice", "--results", str(results), "--output", str(runs)]
    assert run_grid_command(args) == 0
    table = pd.read_csv(results)
    assert list(table["status"]) == ["ok", "ok"]
    assert list(table["loss"]) == ["bce", "dice"]
    assert set(table["dataset"]) == {"synthetic"} and set(table["backend"]) == {keras.backend.backend()}
    assert table["test_iou"].between(0, 1).all() and table["config_hash"].nunique() == 2
    for run_id in table["run_id"]:
        names = {p.name for p in (runs / run_id).iterdir()}
        assert {"model.keras", "history.csv", "predictions.png", "split.json", "test_scores.csv", "config.json"} <= names
        assert len(pd.read_csv(runs / run_id / "history.csv")) == table.loc[table.run_id == run_id, "epochs_run"].item()
    assert results.with_suffix(".png").exists()
    out = capsys.readouterr().out
    assert "run 2/2" in out and "rank" in out

    # Resume: nothing left to do, nothing appended.
    assert run_grid_command(args) == 0
    assert len(pd.read_csv(results)) == 2
    assert "2 of 2 runs already in" in capsys.readouterr().out

    # --force reruns, appending (never rewriting) rows.
    assert run_grid_command([*args, "--losses", "bce", "--force"]) == 0
    assert len(pd.read_csv(results)) == 3


def test_a_failing_run_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    configs = grid.expand(["unet", "segnet"], ["bce"], [0], "smoke", dataset="synthetic", precision="float32")
    real_run_one = grid.run_one

    def run_one(config, *args, **kwargs):
        if config.model == "unet":
            raise MemoryError("simulated: out of memory in unet")
        return real_run_one(config, *args, **kwargs)

    monkeypatch.setattr(grid, "run_one", run_one)
    data = grid.DataCache("synthetic", None)
    rows = grid.run_grid(configs, data, tmp_path / "lb.csv", tmp_path / "runs", verbose=False)
    table = pd.read_csv(tmp_path / "lb.csv")
    assert list(table["status"]) == ["failed", "ok"] == [r["status"] for r in rows]
    assert table.loc[0, "error"] == "MemoryError: simulated: out of memory in unet"
    assert table.loc[1, "model"] == "segnet"
    # A failed row does not count as done: the next grid retries it.
    assert leaderboard.completed_hashes(tmp_path / "lb.csv") == {configs[1].config_hash}


def test_nan_loss_is_recorded_as_nan(tmp_path, monkeypatch):
    from kseg import training

    class NaNLoss(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return keras.ops.mean(keras.ops.log(y_pred - y_pred - 1.0), axis=(1, 2, 3))

    monkeypatch.setattr(training.losses, "get", lambda name: NaNLoss())
    config = RunConfig.from_preset("smoke", model="unet", loss="bce", dataset="synthetic", precision="float32")
    row = grid.run_one(config, grid.DataCache("synthetic", None), tmp_path / "runs", verbose=False)
    assert row["status"] == "nan" and "NaN" in row["error"]
    assert row["epochs_run"] == 1


def _rows(path: Path) -> int:
    try:
        return len(pd.read_csv(path))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def test_killed_grid_leaves_a_valid_csv_that_the_next_run_completes(tmp_path):
    results, runs = tmp_path / "lb.csv", tmp_path / "runs"
    command = [sys.executable, str(REPO / "run_all.py"), *SMOKE, "--models", "unet", "segnet", "--losses", "bce",
               "--results", str(results), "--output", str(runs)]
    env = {**os.environ, "KSEG_CACHE_DIR": str(tmp_path / "cache")}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _rows(results) < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # mid-way through the second run
    process.wait()
    assert _rows(results) == 1, "the first run should have finished before the kill"

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "1 of 2 runs already in" in finished.stdout
    table = pd.read_csv(results)
    assert list(table["model"]) == ["unet", "segnet"] and set(table["status"]) == {"ok"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "resnet"], "unknown model(s) resnet; choose from segnet, unet, unet2"),
        (["--losses", "hinge"], "hinge"),
        (["--preset", "huge"], "invalid choice: 'huge'"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_grid_command([*SMOKE, *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_data_exits_2_naming_the_path(tmp_path, capsys):
    missing = tmp_path / "no-such-ph2"
    code = run_grid_command(["--preset", "smoke", "--dataset", "ph2", "--data-dir", str(missing), "--results", str(tmp_path / "lb.csv")])
    assert code == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "lb.csv").exists()
