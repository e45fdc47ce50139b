"""Which differences between leaderboard groups are real: paired bootstrap tests of two groups
scored on the same images, and Holm's step-down correction over the comparisons made. A group's
own interval is the library's :func:`kseg.bootstrap.bootstrap_ci`, and the paired test draws its
replicates there too: images resampled *within* each split (stratum), since runs of different
seeds or folds test on different images.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kseg.bootstrap import BOOTSTRAP_RESAMPLES, bootstrap_means, percentile_interval


def paired_bootstrap(
    differences: Sequence[float],
    strata: Sequence | None = None,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, tuple[float, float], float]:
    """Paired bootstrap of the mean of per-image differences ``d_i = a_i - b_i`` (the same image
    scored by two groups), resampling images within each stratum (:func:`kseg.bootstrap.bootstrap_means`).
    Returns the mean difference, its 95% percentile interval and the two-sided p-value over the
    replicate means m_b:

        p = min(1, 2 * min(P*(m_b <= 0), P*(m_b >= 0)))

    Equal scores give p = 1, a constant shift p = 0.

    >>> mean, (lo, hi), p = paired_bootstrap([0.01, 0.01, 0.01])
    >>> round(mean, 3), p
    (0.01, 0.0)
    """
    differences = np.asarray(differences, dtype=float)
    if not len(differences):
        raise ValueError("paired_bootstrap expects at least one paired image. Received: none")
    means = bootstrap_means(differences, strata, n_resamples, seed)
    p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return float(differences.mean()), percentile_interval(means, 0.95), p


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


__all__ = ["holm", "paired_bootstrap"]
