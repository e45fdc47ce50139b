"""kseg.experiment.group_ensembles: the grid scores the ensemble of a group's folds on each external set as
a row of its own kind, equal to the mean of its members' logits scored by hand, beside the
members' mean; the ranking leaves it out, and a resumed grid does not score it twice."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest

from kseg import refine
from kseg.cli import run_grid_command
from kseg.data import load_dataset
from kseg.evaluation import score_masks
from kseg.experiment import leaderboard
from kseg.predict import load_trained_model
from tests.data_utils import write_synthetic_folder

# The grid's bookkeeping (which groups, which rows, what the ranking counts); the ensemble model
# itself is tested under every backend in tests/test_ensemble.py.
pytestmark = pytest.mark.backend_independent


@pytest.fixture(scope="module")
def fold_grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("folds")
    external = write_synthetic_folder(root / "other_set", n=6, seed=5)
    args = ["--preset", "smoke", "--dataset", "synthetic", "--quiet", "--models", "unet", "--losses", "bce"]
    args += ["--folds", "2", "--external", str(external), "--results", str(root / "lb.csv")]
    args += ["--output", str(root / "runs")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KSEG_CACHE_DIR", str(root / "cache"))
        assert run_grid_command(args) == 0
        table = leaderboard.read(root / "lb.csv")
        assert run_grid_command(args) == 0  # resumed: nothing to train, the ensemble row exists
    return root, external, table, leaderboard.read(root / "lb.csv")


def test_one_ensemble_row_per_cross_validated_group_scoring_its_members_mean_logits(fold_grid):
    _, _, table, resumed = fold_grid
    runs, ensembles = table[table["kind"].isna()], table[table["kind"].notna()]
    assert len(runs) == 2 and len(ensembles) == 1 and len(resumed) == len(table)
    row = ensembles.iloc[0]
    assert row["kind"] == "fold_ensemble" and row["members"] == 2 and row["status"] == "ok"
    assert pd.isna(row["test_iou"])  # the members trained on every case between them: no test split
    assert row["ext_other_set_members_iou"] == pytest.approx(runs["ext_other_set_iou"].mean(), abs=1e-5)
    summary = leaderboard.summarise(table)
    assert len(summary) == 1 and summary.loc[0, "n"] == 2  # the ranking counts the two folds only
    shown = leaderboard.ensemble_table(table)
    assert shown.loc[0, "other_set gain"] == pytest.approx(row["ext_other_set_iou"] - row["ext_other_set_members_iou"])

    # Its score is the members' mean logits scored by hand (one test: the grid is its cost).
    root, external = fold_grid[:2]
    members = [load_trained_model(root / "runs" / run_id / "model.keras") for run_id in runs["run_id"]]
    ttas = [refine.load_refinement(root / "runs" / run_id / "model.keras").tta for run_id in runs["run_id"]]
    assert set(ttas) <= {"none"}  # the smoke preset refines nothing, so each member is its plain model
    size, eval_size = members[0].input_shape[1], int(runs["eval_size"].iloc[0])
    inputs = load_dataset("auto", path=external, image_size=size)
    targets = load_dataset("auto", path=external, image_size=eval_size)
    logits = np.mean([keras.ops.convert_to_numpy(m(inputs.images, training=False)) for m in members], axis=0)
    resized = refine.resize_logits(logits, (eval_size, eval_size))
    expected = score_masks(targets, refine.binarise(resized)).iou
    assert row["ext_other_set_iou"] == pytest.approx(expected, abs=1e-4)
