"""The percentile bootstrap over images, kseg's one: an evaluation's intervals
(:mod:`kseg.evaluation`, the pooled ECE's too) and the leaderboard's
(:mod:`kseg.experiment.stats`) all draw their replicates here. Plain numpy, so the leaderboard
reads and ranks without Keras.

The resampling unit is the image, drawn with replacement *within* each stratum (e.g. a test
split): runs of different seeds or folds test on different images, so each stratum keeps its own
size in every replicate, as it does in the experiment. The interval reflects only the sampling of
the images, not training noise; the same ``seed`` gives the same replicates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BOOTSTRAP_RESAMPLES", "bootstrap_ci", "bootstrap_means", "percentile_interval"]

#: The replicates B of every bootstrap unless a caller asks otherwise.
BOOTSTRAP_RESAMPLES = 4000


def bootstrap_means(
    values: Any, strata: Any = None, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """``n_resamples`` bootstrap replicates of the mean over images of ``values``, images drawn
    with replacement within each stratum:

        m_b = (1 / N) * sum_s sum_{j=1..N_s} v_{s, I_bsj},   I_bsj uniform on stratum s's N_s images

    Strata are visited in sorted order, each drawing its ``(B, N_s)`` indices from one
    ``numpy.random.default_rng(seed)``, so a result depends only on the values, strata, B and seed.

    Args:
        values: one row per image, shape ``(N,)`` or ``(N, ...)`` (e.g. an image's reliability
            bins): the replicates are means of rows. Non-empty and finite.
        strata: the N images' strata (any hashable labels), or None for one stratum.
        n_resamples: the number of replicates B (>= 1).
        seed: seed of the generator that draws the images.

    Returns:
        The replicate means, shape ``(B,)`` plus a row's shape.

    Example:

    >>> bootstrap_means([0.2, 0.8], strata=["a", "b"], n_resamples=3).tolist()  # one image a stratum
    [0.5, 0.5, 0.5]
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0 or len(values) == 0:
        raise ValueError("`values` is empty: need at least one per-image score.")
    if not np.isfinite(values).all():
        raise ValueError("`values` holds NaN or inf values.")
    n_resamples = int(n_resamples)
    if n_resamples < 1:
        raise ValueError(f"`n_resamples` must be >= 1. Received: n_resamples={n_resamples}")
    strata = np.zeros(len(values)) if strata is None else np.asarray(strata)
    if strata.shape != (len(values),):
        raise ValueError(f"`strata` must hold one label per image ({len(values)}). Received shape: {strata.shape}")
    rng = np.random.default_rng(seed)
    total = np.zeros((n_resamples, *values.shape[1:]))
    for stratum in np.unique(strata):
        members = values[strata == stratum]
        # Blocks of about 2**22 gathered numbers, so a large set does not need B * N memory; the
        # generator's stream does not depend on the block size.
        block = max(1, (1 << 22) // members.size)
        for start in range(0, n_resamples, block):
            rows = min(block, n_resamples - start)
            total[start : start + rows] += members[rng.integers(0, len(members), size=(rows, len(members)))].sum(axis=1)
    return total / len(values)


def percentile_interval(replicates: Any, confidence: float = 0.95) -> tuple[float, float]:
    """The ``alpha / 2`` and ``1 - alpha / 2`` quantiles of bootstrap replicates (numpy's linear
    interpolation between order statistics), ``alpha = 1 - confidence``.

    Args:
        replicates: the B replicate values of a statistic.
        confidence: coverage of the interval, in (0, 1).

    Returns:
        ``(lo, hi)`` as Python floats, ``lo <= hi``.

    Example:

    >>> percentile_interval([0.0, 1.0, 2.0, 3.0, 4.0], confidence=0.5)  # the quartiles
    (1.0, 3.0)
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1). Received: confidence={confidence}")
    alpha = 1.0 - confidence
    lo, hi = np.quantile(replicates, [alpha / 2, 1.0 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Any,
    strata: Any = None,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of per-image ``values``, images
    resampled within each stratum (:func:`bootstrap_means`):

        (lo, hi) = (quantile({m_b}, alpha / 2), quantile({m_b}, 1 - alpha / 2)),  alpha = 1 - confidence

    Args:
        values: the N per-image numbers (e.g. IoUs), any array-like (flattened).
        strata: the N images' strata (e.g. test splits), or None for one stratum.
        n_resamples: number of bootstrap samples B (>= 1).
        confidence: coverage of the interval, in (0, 1).
        seed: seed of the ``numpy.random.default_rng`` that draws the samples.

    Returns:
        ``(lo, hi)`` as Python floats, ``lo <= hi``.

    Example:

    >>> lo, hi = bootstrap_ci([0.9, 0.8, 0.85, 0.4, 0.95])
    >>> lo < 0.78 < hi  # the sample mean lies inside
    True
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return percentile_interval(bootstrap_means(values, strata, n_resamples, seed), confidence)
