"""The paired bootstrap and Holm's correction against hand-computed values and independent
references (statsmodels' Holm where installed, a plain loop otherwise); the draws and a group's
interval: tests/test_bootstrap.py."""

import numpy as np
import pandas as pd
import pytest

from kseg.experiment import leaderboard, stats

pytestmark = pytest.mark.backend_independent


def test_identical_groups_are_never_separated():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.6, 0.95, 150)
    mean, (lo, hi), p = stats.paired_bootstrap(scores - scores, strata=np.repeat([0, 1, 2], 50))
    assert mean == lo == hi == 0.0 and p == 1.0


def test_a_constant_shift_is_found_and_its_size_is_the_difference():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.6, 0.95, 100)
    mean, (lo, hi), p = stats.paired_bootstrap((a + 0.01) - a, strata=np.repeat([0, 1], 50))
    assert mean == pytest.approx(0.01) and lo == pytest.approx(0.01) and hi == pytest.approx(0.01) and p == 0.0


def test_noise_around_zero_is_not_significant_and_a_clear_gain_is():
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 0.05, 200)
    assert stats.paired_bootstrap(noise - noise.mean())[2] > 0.5
    assert stats.paired_bootstrap(noise - noise.mean() + 0.03)[2] < 0.001


def _holm_loop(p):
    """Holm by its definition: reject in ascending order while p_(k) < alpha / (m - k)."""
    m, order, adjusted, running = len(p), np.argsort(p), np.empty(len(p)), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        adjusted[i] = running
    return adjusted


@pytest.mark.parametrize("p", [[0.01, 0.04, 0.03], [0.5, 0.001, 0.02, 0.04, 0.9], [0.2], [0.03, 0.03]])
def test_holm_step_down(p):
    expected = _holm_loop(np.asarray(p))
    np.testing.assert_allclose(stats.holm(p), expected)
    try:
        from statsmodels.stats.multitest import multipletests
    except ImportError:
        return
    np.testing.assert_allclose(stats.holm(p), multipletests(p, method="holm")[1])


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


def _rows_and_scores(shift_b: float, shift_c: float, n: int = 40):
    rng = np.random.default_rng(4)
    base = rng.uniform(0.6, 0.95, (2, n))
    rows, scores = [], []
    for g, (model, shift) in enumerate((("a", 0.0), ("b", shift_b), ("c", shift_c))):
        for seed in (0, 1):
            config_hash = f"{model}{seed}"
            rows.append(
                {
                    "run_id": f"{model}-{seed}",
                    "model": model,
                    "loss": "bce",
                    "seed": seed,
                    "split_seed": seed,
                    "dataset": "ph2",
                    "config_hash": config_hash,
                    "group_hash": f"g{model}",
                    "status": "ok",
                    "test_iou": float((base[seed] - shift).mean()),
                }
            )
            scores += [
                {
                    "run_id": f"{model}-{seed}",
                    "config_hash": config_hash,
                    "set": "test",
                    "case_id": f"case{i}",
                    "iou": float(base[seed, i] - shift + (0.002 * (i % 3) if model == "b" else 0)),
                    "dice": 0.0,
                    "iou_plain": 0.0,
                    "dice_plain": 0.0,
                }
                for i in range(n)
            ]
    return pd.DataFrame(rows), pd.DataFrame(scores)


def test_compare_groups_marks_ties_and_separates_a_clear_loser():
    table, per_image = _rows_and_scores(shift_b=0.0, shift_c=0.05)
    result = leaderboard.compare_groups(table, per_image).set_index("group")
    assert result.loc["ga", "note"] == "best" or result.loc["gb", "note"] == "best"
    assert bool(result.loc["gc", "tied"]) is False and result.loc["gc", "p_holm"] < 0.05
    assert result.loc["gc", "pooled"] == pytest.approx(per_image[per_image.run_id.str.startswith("c")]["iou"].mean())
    assert (result["images"] == 80).all()
    text = leaderboard.format_summary(leaderboard.summarise(table, per_image=per_image))
    assert "tied with best" in text or "(best)" in text
    assert "| no |" in leaderboard.markdown_report(
        table.assign(test_dice=0.5, test_dataset_iou=0.5, train_seconds=1, epochs_run=1), per_image
    )


def test_groups_without_shared_images_are_not_compared():
    table, per_image = _rows_and_scores(shift_b=0.0, shift_c=0.05)
    per_image.loc[per_image.run_id.str.startswith("c"), "case_id"] += "-other"
    result = leaderboard.compare_groups(table, per_image).set_index("group")
    assert pd.isna(result.loc["gc", "tied"]) and "no test image in common" in result.loc["gc", "note"]


def test_groups_on_other_splits_form_their_own_design():
    table, per_image = _rows_and_scores(shift_b=0.0, shift_c=0.05)
    table.loc[table["model"] == "c", ["folds", "fold"]] = [[5, 0], [5, 1]]  # c: two folds of a 5-fold design
    result = leaderboard.compare_groups(table, per_image).set_index("group")
    assert result.loc["gc", "note"] == "best"  # the only group of its design
    assert (result["note"] == "best").sum() == 2
