"""Which differences between leaderboard groups are real: bootstrap intervals of a group's mean
per-image score, paired bootstrap tests of two groups scored on the same images, and Holm's
step-down correction over the comparisons made.

The resampling unit is the image, drawn with replacement *within* each split (stratum): runs of
different seeds or folds test on different images, so each split keeps its own size in every
bootstrap replicate, as it does in the experiment.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

N_BOOTSTRAP = 4000


def _stratified_means(values: np.ndarray, strata: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the mean of ``values``, resampling within each stratum."""
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for stratum in np.unique(strata):
        members = values[strata == stratum]
        draws = rng.integers(0, len(members), size=(n_boot, len(members)))
        total += members[draws].sum(axis=1)
    return total / len(values)


def bootstrap_interval(
    values: Sequence[float],
    strata: Sequence | None = None,
    confidence: float = 0.95,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-image ``values``, images resampled
    within each stratum (all one stratum where ``strata`` is None).

    >>> bootstrap_interval([0.8, 0.9, 0.85, 0.7], seed=0)  # doctest: +SKIP
    (0.75, 0.8875)
    """
    values = np.asarray(values, dtype=float)
    strata = np.zeros(len(values)) if strata is None else np.asarray(strata)
    means = _stratified_means(values, strata, n_boot, seed)
    alpha = (1 - confidence) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def paired_bootstrap(
    differences: Sequence[float], strata: Sequence | None = None, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> tuple[float, tuple[float, float], float]:
    """Paired bootstrap of the mean of per-image differences ``a_i - b_i`` (the same image scored by
    two groups), resampling images within each stratum. Returns the mean difference, its 95%
    percentile interval and the two-sided p-value ``min(1, 2 * min(P*(d <= 0), P*(d >= 0)))``
    over the replicates: equal scores give p = 1, a constant shift p = 0.
    """
    differences = np.asarray(differences, dtype=float)
    if not len(differences):
        raise ValueError("paired_bootstrap expects at least one paired image. Received: none")
    strata = np.zeros(len(differences)) if strata is None else np.asarray(strata)
    means = _stratified_means(differences, strata, n_boot, seed)
    p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return float(differences.mean()), (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))), p


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: sorted ascending, the k-th smallest (from 0) is
    multiplied by ``m - k``, made non-decreasing and capped at 1. A comparison is significant at
    level a when its adjusted p-value is below a; this controls the family-wise error rate.

    >>> holm([0.01, 0.04, 0.03]).round(2).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    result = np.empty(m)
    result[order] = adjusted
    return result


__all__ = ["N_BOOTSTRAP", "bootstrap_interval", "holm", "paired_bootstrap"]
