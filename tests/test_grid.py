"""The experiment grid end to end on the synthetic set: rows, artifacts, resume, failures, kills,
and the flags that decide a run's identity (folder data and its mask suffix, split sizes, the
split seed, the refinement)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from kseg import models, refine
from kseg.cli import run_grid_command
from kseg.experiment import grid, leaderboard
from kseg.experiment import run as one_run
from kseg.experiment.sources import DataCache
from kseg.experiment.training import DivergedError
from tests.data_utils import write_synthetic_folder

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["--preset", "smoke", "--dataset", "synthetic", "--quiet"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KSEG_PH2_DIR", raising=False)


# The smoke grid runs end to end on every backend (the test below). What the other grid tests check
# is the grid's bookkeeping, the same whichever backend trains: the rows, the files, the split, the
# refinement chosen and recorded, the scores recomputed in numpy. They train smoke models, which
# cost TensorFlow and JAX 7-12 s a test against PyTorch's 1-3 s, so they run in one pass
# (backend_independent: tests/conftest.py).
GRID_BOOKKEEPING = pytest.mark.backend_independent


def test_smoke_grid_writes_rows_and_artifacts_then_resumes(tmp_path, capsys):
    results, runs = tmp_path / "lb.csv", tmp_path / "runs"
    args = [*SMOKE, "--models", "unet", "--losses", "bce", "dice", "--results", str(results), "--output", str(runs)]
    assert run_grid_command(args) == 0
    table = pd.read_csv(results)
    assert list(table["status"]) == ["ok", "ok"]
    assert list(table["loss"]) == ["bce", "dice"]
    assert set(table["dataset"]) == {"synthetic"} and set(table["backend"]) == {keras.backend.backend()}
    assert table["test_iou"].between(0, 1).all() and table["config_hash"].nunique() == 2
    # The border and calibration scores (issue 38) in every row and per image; smoke runs no refinement
    # search, so their temperature is 1 and the ECE before and after it agree.
    assert (table[["test_hd95", "test_hd", "test_assd"]] >= 0).all().all() and table["test_nsd"].between(0, 1).all()
    assert table["test_ece"].between(0, 1).all() and (table["test_ece"] == table["test_ece_plain"]).all()
    assert (table["temperature"] == 1.0).all()
    # What each run cost (issue 39): counted GFLOPs, seconds per epoch, inference ms, the CPU kind.
    assert (table[["gflops", "train_seconds_per_epoch", "infer_ms_per_image"]] > 0).all().all()
    assert table["train_seconds_per_epoch"].tolist() == pytest.approx(  # both rounded to 5 decimals in the row
        (table["train_seconds"] / table["epochs_run"]).tolist(), abs=1e-5
    )
    assert table["cpu_kind"].notna().all()
    per_image = leaderboard.read_per_image(results)
    assert len(per_image) == 2 * len(pd.read_csv(runs / table["run_id"][0] / "test_scores.csv"))
    assert per_image[list(leaderboard.PER_IMAGE_SCORES)].notna().all().all()
    for run_id in table["run_id"]:
        names = {p.name for p in (runs / run_id).iterdir()}
        assert {
            "model.keras",
            "history.csv",
            "predictions.png",
            "split.json",
            "test_scores.csv",
            "config.json",
        } <= names
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


@GRID_BOOKKEEPING
def test_a_failing_run_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    data = DataCache("synthetic", None)
    configs = grid.expand(["unet", "segnet"], ["bce"], [0], "smoke", data, precision="float32")
    real_run_one = one_run.run_one

    def run_one(config, *args, **kwargs):
        if config.model == "unet":
            raise MemoryError("simulated: out of memory in unet")
        return real_run_one(config, *args, **kwargs)

    monkeypatch.setattr(one_run, "run_one", run_one)
    rows = grid.run_grid(configs, data, tmp_path / "lb.csv", tmp_path / "runs", verbose=False)
    table = pd.read_csv(tmp_path / "lb.csv")
    assert list(table["status"]) == ["failed", "ok"] == [r["status"] for r in rows]
    assert table.loc[0, "error"] == "MemoryError: simulated: out of memory in unet"
    assert table.loc[1, "model"] == "segnet"
    # A failed row does not count as done: the next grid retries it.
    assert leaderboard.completed_hashes(tmp_path / "lb.csv") == {configs[1].config_hash}


def test_expand_resolves_every_config(tmp_path):
    data = DataCache("synthetic", None)
    configs = grid.expand(["unet", "segnet"], ["bce", "dice"], [0, 1], "smoke", data, epochs=1)
    # Seeds outermost: an interrupted grid has compared every pair once.
    assert [(c.seed, c.model, c.loss) for c in configs[:4]] == [
        (0, "unet", "bce"),
        (0, "unet", "dice"),
        (0, "segnet", "bce"),
        (0, "segnet", "dice"),
    ]
    for config in configs:
        assert config.dataset == "synthetic" and config.data_fingerprint
        assert config.precision != "auto" and isinstance(config.jit_compile, bool)
        assert config.epochs == 1 and config.split_seed == config.seed
    assert len({c.config_hash for c in configs}) == 8
    assert len({c.group_hash for c in configs}) == 4  # the two seeds of each pair share a group


def _rows(path: Path) -> int:
    try:
        return len(pd.read_csv(path))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


@pytest.mark.slow
@pytest.mark.backend_independent  # the files' locking and atomic writes; no backend touches them
def test_killed_grid_leaves_a_valid_csv_that_the_next_run_completes(tmp_path):
    results, runs = tmp_path / "lb.csv", tmp_path / "runs"
    command = [
        sys.executable,
        str(REPO / "run_all.py"),
        *SMOKE,
        "--models",
        "unet",
        "segnet",
        "--losses",
        "bce",
        "--results",
        str(results),
        "--output",
        str(runs),
    ]
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
    # The per-image companion file is as whole: each ok run's 6 test images, once each.
    per_image = leaderboard.read_per_image(results)
    assert per_image.groupby("run_id").size().to_dict() == {run_id: 6 for run_id in table["run_id"]}
    assert per_image["iou"].between(0, 1).all() and set(per_image["set"]) == {"test"}


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--models", "resnet"],
            f"--models: Unknown decoder 'resnet'. Expected one of: {', '.join(models.available())}. "
            "Received: decoder='resnet'",
        ),
        (
            ["--models", "fpn:resnet5"],
            "--models: Unknown encoder 'resnet5'. Expected one of: segnet, unet, unet2, mobilenetv2",
        ),
        (["--models", "unet", "--encoder-weights", "imagenet"], "--encoder-weights, --models unet: encoder_weights applies to keras.applications"),
        (["--models", "fpn:mobilenetv2", "--encoder-weights", "nowhere.h5"], "Received: nowhere.h5"),
        (["--models", "fpn:mobilenetv2", "--encoder-weights", "/"], "(for keras-hub encoders only) a keras-hub preset"),
        (["--losses", "hinge"], "hinge"),
        (["--preset", "huge"], "invalid choice: 'huge'"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_grid_command([*SMOKE, *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_model_that_cannot_be_built_exits_2_before_any_run(tmp_path, capsys):
    code = run_grid_command(
        [*SMOKE, "--results", str(tmp_path / "lb.csv"), "--models", "fpn:mobilenetv2", "--image-size", "48"]
    )
    assert code == 2 and "divisible by 32 (the mobilenetv2 encoder's" in capsys.readouterr().err
    assert not (tmp_path / "lb.csv").exists()


def test_a_decoder_and_an_encoder_that_do_not_pair_are_a_flag_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        run_grid_command([*SMOKE, "--results", str(tmp_path / "lb.csv"), "--models", "segnet:mobilenetv2"])
    assert stop.value.code == 2
    assert "--models: The segnet decoder pairs only with the 'segnet' encoder" in capsys.readouterr().err
    assert not (tmp_path / "lb.csv").exists()


def test_missing_data_exits_2_naming_the_path(tmp_path, capsys):
    missing = tmp_path / "no-such-ph2"
    code = run_grid_command(
        ["--preset", "smoke", "--dataset", "ph2", "--data-dir", str(missing), "--results", str(tmp_path / "lb.csv")]
    )
    assert code == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "lb.csv").exists()


# ----- the flags that decide what a run is ----------------------------------------------------


@GRID_BOOKKEEPING
def test_a_folder_dataset_with_a_mask_suffix(tmp_path):
    folder = write_synthetic_folder(tmp_path / "isic", n=24, mask_suffix="_segmentation")
    results, runs = tmp_path / "lb.csv", tmp_path / "runs"
    args = [
        "--preset",
        "smoke",
        "--quiet",
        "--dataset",
        "folder",
        "--data-dir",
        str(folder),
        "--split",
        "12,6,6",
        "--models",
        "unet",
        "--losses",
        "bce",
        "--output",
        str(runs),
    ]
    assert run_grid_command([*args, "--mask-suffix", "_segmentation", "--results", str(results)]) == 0
    table = leaderboard.read(results)
    row = table.iloc[0]
    assert row["status"] == "ok" and 0 <= row["test_iou"] <= 1
    assert (row["dataset"], row["mask_suffix"], row["split_sizes"]) == ("folder", "_segmentation", "12/6/6")
    split = json.loads((runs / row["run_id"] / "split.json").read_text())
    assert [len(split[part]) for part in ("train", "val", "test")] == [12, 6, 6]
    config = json.loads((runs / row["run_id"] / "config.json").read_text())
    assert config["mask_suffix"] == "_segmentation" and config["config_hash"] == row["config_hash"]
    # Without the suffix no image finds its mask: a clear error, exit 2, nothing written.
    assert run_grid_command([*args, "--results", str(tmp_path / "other.csv")]) == 2
    assert not (tmp_path / "other.csv").exists()


@GRID_BOOKKEEPING
def test_external_sets_are_scored_and_match_numpy(tmp_path):
    """--external over a folder with _segmentation masks: the row's ext_ columns are the mean,
    ISIC score and failure fraction of per-image IoUs that numpy recomputes from the saved model."""
    isic = write_synthetic_folder(tmp_path / "ISIC-dev", n=10, seed=5, mask_suffix="_segmentation")
    results, runs = tmp_path / "lb.csv", tmp_path / "runs"
    args = [
        *SMOKE,
        "--models",
        "unet",
        "--losses",
        "bce",
        "--results",
        str(results),
        "--output",
        str(runs),
        "--external",
        f"{isic}:_segmentation",
    ]
    assert run_grid_command(args) == 0
    row = leaderboard.read(results).iloc[0]
    run_dir = runs / row["run_id"]
    model = keras.saving.load_model(run_dir / "model.keras")
    images = DataCache("auto", None).external(str(isic), "_segmentation", int(row["image_size"]))
    truth = np.asarray(DataCache("auto", None).external(str(isic), "_segmentation", int(row["eval_size"])).masks) > 0.5
    logits = refine.resize_logits(
        keras.ops.convert_to_numpy(model.predict(np.asarray(images.images), verbose=0)), truth.shape[1:3]
    )
    predicted = logits > 0
    intersection = (predicted & truth).sum(axis=(1, 2, 3))
    union = (predicted | truth).sum(axis=(1, 2, 3))
    iou = np.where(union > 0, intersection / np.maximum(union, 1), 1.0)
    per_image = pd.read_csv(run_dir / "ext_isic_dev_scores.csv")
    np.testing.assert_allclose(per_image["iou"], iou, atol=1e-5)
    assert row["ext_isic_dev_iou"] == pytest.approx(iou.mean(), abs=1e-4)
    assert row["ext_isic_dev_isic_score"] == pytest.approx(np.where(iou >= 0.65, iou, 0).mean(), abs=1e-4)
    assert row["ext_isic_dev_failure_fraction"] == pytest.approx((iou < 0.5).mean(), abs=1e-4)
    assert {"ext_isic_dev_dice", "ext_isic_dev_dataset_iou"} <= set(row.index)


@GRID_BOOKKEEPING
def test_an_added_source_joins_the_data_with_a_split_stratified_by_source(tmp_path):
    isic = write_synthetic_folder(tmp_path / "ISIC-dev", n=12, seed=5, mask_suffix="_segmentation")
    results, runs = tmp_path / "lb.csv", tmp_path / "runs"
    args = [
        *SMOKE,
        "--models",
        "unet",
        "--losses",
        "bce",
        "--results",
        str(results),
        "--output",
        str(runs),
        "--add-source",
        f"{isic}:_segmentation",
        "--split",
        "0.5,0.25,0.25",
    ]
    assert run_grid_command(args) == 0
    row = leaderboard.read(results).iloc[0]
    assert row["status"] == "ok" and row["dataset"] == "synthetic+isic_dev"
    split = json.loads((runs / row["run_id"] / "split.json").read_text())
    # 24 synthetic + 12 folder cases, each source halved/quartered alike.
    for part, n_synthetic, n_folder in (("train", 12, 6), ("val", 6, 3), ("test", 6, 3)):
        assert sum(i.startswith("synthetic/") for i in split[part]) == n_synthetic
        assert sum(i.startswith("isic_dev/") for i in split[part]) == n_folder
    per_image = pd.read_csv(runs / row["run_id"] / "test_scores.csv")
    for source in ("synthetic", "isic_dev"):
        assert row[f"test_iou_source_{source}"] == pytest.approx(
            per_image.loc[per_image["source"] == source, "iou"].mean(), abs=1e-4
        )
    # The added source is part of the identity: without it, another hash.
    plain = grid.expand(
        ["unet"],
        ["bce"],
        [0],
        "smoke",
        DataCache("synthetic", None),
        precision="float32",
        split_sizes=(0.5, 0.25, 0.25),
    )[0]
    assert plain.config_hash != row["config_hash"] and plain.dataset == "synthetic"


def _split_files(runs: Path, table: pd.DataFrame) -> list[dict]:
    return [json.loads((runs / run_id / "split.json").read_text()) for run_id in table["run_id"]]


@GRID_BOOKKEEPING
def test_split_seed_fixes_one_split_for_every_seed(tmp_path, monkeypatch):
    def no_training(config, *args, **kwargs):  # split.json is written before training starts
        raise DivergedError(f"{config.run_id}: not trained; this test needs only the split")

    monkeypatch.setattr(one_run, "fit", no_training)
    common = [*SMOKE, "--models", "unet", "--losses", "bce", "--seeds", "0", "1"]
    fixed_runs, own_runs = tmp_path / "fixed", tmp_path / "own"
    assert (
        run_grid_command(
            [*common, "--split-seed", "5", "--results", str(tmp_path / "fixed.csv"), "--output", str(fixed_runs)]
        )
        == 1
    )  # every run "nan": not trained
    assert run_grid_command([*common, "--results", str(tmp_path / "own.csv"), "--output", str(own_runs)]) == 1
    fixed, own = leaderboard.read(tmp_path / "fixed.csv"), leaderboard.read(tmp_path / "own.csv")
    assert list(fixed["split_seed"]) == [5, 5] and list(own["split_seed"]) == [0, 1]
    first, second = _split_files(fixed_runs, fixed)
    assert first == second
    first, second = _split_files(own_runs, own)
    assert first != second and sorted(sum(first.values(), [])) == sorted(sum(second.values(), []))
    # Each run is its own experiment; the group (what the leaderboard averages over) ignores the
    # seeds, but runs on one fixed split never mix with runs whose split follows the seed.
    assert pd.concat([fixed, own])["config_hash"].nunique() == 4
    assert fixed["group_hash"].nunique() == 1 and own["group_hash"].nunique() == 1
    assert set(fixed["group_hash"]) != set(own["group_hash"])


@GRID_BOOKKEEPING
def test_refine_auto_records_the_choice_and_the_model_remembers_it(tmp_path, monkeypatch):
    """The choice is forced to a non-trivial one (after scoring every candidate as usual), so the
    test sees it travel: into the row, refinement.json, model.keras and the test score."""
    real_choose, forced = refine.choose_refinement, refine.Refinement("flip", "largest+fill")
    calls = []

    def choose(*args, **kwargs):
        _, scores = real_choose(*args, **kwargs)
        calls.append(scores)
        return forced, scores

    monkeypatch.setattr(refine, "choose_refinement", choose)
    results, runs = tmp_path / "lb.csv", tmp_path / "runs"
    assert (
        run_grid_command(
            [
                *SMOKE,
                "--models",
                "unet",
                "--losses",
                "bce",
                "--refine",
                "auto",
                "--results",
                str(results),
                "--output",
                str(runs),
            ]
        )
        == 0
    )
    assert len(calls) == 1
    row = leaderboard.read(results).iloc[0]
    assert (row["refine"], row["tta"], row["postprocess"]) == ("auto", "flip", "largest+fill")
    assert row["val_iou_refined"] == pytest.approx(calls[0][forced.describe()], abs=1e-5)
    assert 0 <= row["test_iou_plain"] <= 1 and 0 <= row["val_iou_plain"] <= 1
    run_dir = runs / row["run_id"]
    saved = json.loads((run_dir / "refinement.json").read_text())
    assert saved["chosen"] == forced.to_dict() and set(saved["val_iou"]) == set(calls[0])
    assert refine.load_refinement(run_dir / "model.keras") == forced
    per_image = pd.read_csv(run_dir / "test_scores.csv")
    assert {"iou", "iou_plain"} <= set(per_image.columns)
    assert per_image["iou"].mean() == pytest.approx(row["test_iou"], abs=1e-4)
    assert per_image["iou_plain"].mean() == pytest.approx(row["test_iou_plain"], abs=1e-4)


@GRID_BOOKKEEPING
def test_refine_none_records_the_plain_choice(tmp_path):
    results, runs = tmp_path / "lb.csv", tmp_path / "runs"
    assert (
        run_grid_command(
            [
                *SMOKE,
                "--models",
                "segnet",
                "--losses",
                "bce",
                "--epochs",
                "1",
                "--refine",
                "none",
                "--results",
                str(results),
                "--output",
                str(runs),
            ]
        )
        == 0
    )
    row = leaderboard.read(results).iloc[0]
    assert (row["refine"], row["tta"], row["postprocess"]) == ("none", "none", "none")
    assert row["test_iou"] == row["test_iou_plain"]
    run_dir = runs / row["run_id"]
    assert not (run_dir / "refinement.json").exists()
    assert refine.load_refinement(run_dir / "model.keras") == refine.Refinement()
    assert keras.saving.load_model(run_dir / "model.keras").refinement == refine.Refinement()


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "args, message",
    [
        (["--folds", "1"], "--folds expects 0 (no cross-validation) or K >= 2. Received: 1"),
        (["--seeds", "0", "-1"], "--seeds expects non-negative integers. Received: 0 -1"),
        (["--lr", "nan"], "argument --lr: expects a finite number > 0. Received: nan"),
        (["--lr", "0"], "argument --lr: expects a finite number > 0. Received: 0.0"),
        (["--encoder-lr-factor", "-1"], "argument --encoder-lr-factor: expects a finite number > 0. Received: -1.0"),
        (["--epochs", "0"], "argument --epochs: expects an integer >= 1. Received: 0"),
    ],
)
def test_bad_recipe_values_are_refused_before_any_run(tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_grid_command([*SMOKE, *args, "--results", str(tmp_path / "lb.csv")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "lb.csv").exists()


@pytest.mark.backend_independent
def test_folds_partition_the_cases_and_stay_stratified():
    from kseg.data import fold_indices, load_dataset

    data = load_dataset("synthetic", n=60, image_size=16)
    data.diagnosis = ["melanoma" if i % 3 == 0 else "common_nevus" for i in range(60)]
    tests = []
    for fold in range(5):
        train, val, test = fold_indices(data, seed=3, folds=5, fold=fold, sizes=(100, 50, 50))
        assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
        assert len(train) + len(val) + len(test) == 60 and len(test) == 12 and len(val) == 16
        # 20 of 60 are melanoma: 4 of each fold's 12 test cases, and a third of validation (to one case).
        assert sum(data.diagnosis[i] == "melanoma" for i in test) == 4
        assert abs(sum(data.diagnosis[i] == "melanoma" for i in val) - 16 / 3) <= 1
        tests += list(test)
    assert sorted(tests) == list(range(60))  # every case tested exactly once


@pytest.mark.backend_independent
def test_the_fold_changes_the_hash_but_not_the_group(tmp_path):
    from kseg.experiment.config import RunConfig

    plain = RunConfig(model="unet", loss="bce")
    fold0, fold1 = plain.replace(folds=5, fold=0), plain.replace(folds=5, fold=1)
    assert len({plain.config_hash, fold0.config_hash, fold1.config_hash}) == 3
    assert fold0.group_hash == fold1.group_hash != plain.group_hash
    assert "fold1" in fold1.run_id and "folds" not in plain.identity()
    with pytest.raises(ValueError, match=r"`fold` must be in \[0, 5\) with folds=5. Received: fold=5"):
        plain.replace(folds=5, fold=5)
    with pytest.raises(ValueError, match="--folds expects 0 .no cross-validation. or K >= 2. Received: 1"):
        plain.replace(folds=1)


@pytest.mark.backend_independent
def test_a_cross_validated_grid_scores_every_case_once(tmp_path):
    results = tmp_path / "lb.csv"
    assert (
        run_grid_command(
            [
                *SMOKE,
                "--models",
                "unet",
                "--losses",
                "bce",
                "--folds",
                "3",
                "--split",
                "12,6,6",
                "--results",
                str(results),
                "--output",
                str(tmp_path / "runs"),
            ]
        )
        == 0
    )
    table = leaderboard.read(results)
    assert list(table["fold"]) == [0, 1, 2] and table["group_hash"].nunique() == 1
    per_image = leaderboard.read_per_image(results)
    assert per_image["case_id"].is_unique and len(per_image) == 24  # the smoke set's 24 cases, once each


@pytest.mark.backend_independent
def test_an_image_size_the_model_cannot_divide_is_refused_before_any_run(tmp_path, capsys):
    code = run_grid_command([*SMOKE, "--models", "unet", "--image-size", "30", "--results", str(tmp_path / "lb.csv")])
    assert code == 2 and not (tmp_path / "lb.csv").exists()
    err = capsys.readouterr().err
    assert "unet at --image-size 30" in err and "divisible by 2**depth = 4" in err


def test_the_end_of_a_grid_shows_only_the_groups_it_ran(tmp_path, capsys):
    """A leaderboard holding other groups (an earlier grid's): the summary printed at the end
    ranks this grid's groups, with their pooled intervals, and points at the full leaderboard."""
    results = tmp_path / "lb.csv"
    common = [*SMOKE, "--losses", "bce", "--seeds", "0", "--results", str(results), "--output", str(tmp_path / "runs")]
    assert run_grid_command([*common, "--models", "unet"]) == 0
    capsys.readouterr()
    assert run_grid_command([*common, "--models", "segnet"]) == 0
    out = capsys.readouterr().out
    ranking = out[out.index("rank") :]
    rows = [line for line in ranking.splitlines() if line.lstrip()[:1].isdigit()]
    assert len(rows) == 1 and " segnet " in rows[0] and " unet " not in ranking.split("\n[grid]")[0]
    assert "pooled" in rows[0]
    assert f"python -m kseg leaderboard --results {results}" in out
    assert len(leaderboard.summarise(leaderboard.read(results))) == 2  # the file keeps both groups
