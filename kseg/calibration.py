"""Whether a model's probabilities mean what they say: the expected calibration error (ECE) over
pixels, its reliability diagram, and temperature scaling (Guo et al., 2017) to correct it.

With the foreground probability ``p = sigmoid(z / T)`` of every pixel (logit ``z``, temperature
``T``; ``T = 1`` is the model as trained) split into ``bins`` equal-width bins over [0, 1]:

    ECE = sum_b  n_b / N * | mean(y in b) - mean(p in b) |

(``y``: the true 0/1 labels, ``n_b`` the pixels of bin b, ``N`` all pixels). ``ece`` pools the
pixels of every image; ``per_image_ece`` scores each image alone. Lower is better.

Temperature scaling divides every logit by one scalar ``T`` fitted on validation pixels to
minimise the binary cross-entropy. It leaves every mask unchanged (``z / T >= 0`` exactly when
``z >= 0``), so IoU, Dice and the borders stay as they are and only the probabilities move.

>>> import numpy as np
>>> labels = np.array([0, 0, 1, 1.0])
>>> round(ece(np.array([0.1, 0.1, 0.9, 0.9]), labels, bins=10), 6)   # 10% off in both occupied bins
0.1
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: The default number of equal-width bins (Guo et al., 2017 use 15).
DEFAULT_BINS = 15


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``sigmoid(logits / temperature)`` without overflow, in the logits' float precision."""
    z = np.asarray(logits) / temperature
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def reliability(
    probs: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin over [0, 1]: ``(pixel count, sum of p, sum of y)`` (float64 sums, so
    the bins of several images add up exactly before a pooled ECE)."""
    if int(bins) < 1:
        raise ValueError(f"`bins` must be a positive integer. Received: bins={bins!r}")
    probs, labels = np.ravel(probs).astype(np.float64), np.ravel(labels).astype(np.float64)
    index = np.minimum((probs * bins).astype(np.int64), bins - 1)  # p = 1 joins the last bin
    return (
        np.bincount(index, minlength=bins).astype(np.float64),
        np.bincount(index, weights=probs, minlength=bins),
        np.bincount(index, weights=labels, minlength=bins),
    )


def ece_from_bins(counts: np.ndarray, prob_sums: np.ndarray, label_sums: np.ndarray) -> float:
    """The ECE of ``reliability``'s bins (summed over images for a pooled ECE)."""
    total = counts.sum()
    if total == 0:
        return float("nan")
    return float(np.abs(label_sums - prob_sums).sum() / total)


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error of foreground probabilities ``probs`` against 0/1 ``labels``."""
    return ece_from_bins(*reliability(probs, labels, bins))


def per_image_ece(probs: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """``ece`` of each image of (N, ...) ``probs`` and ``labels``."""
    return np.array([ece(p, y, bins) for p, y in zip(np.asarray(probs), np.asarray(labels))])


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iterations: int = 50) -> float:
    """The temperature ``T`` that minimises the mean binary cross-entropy of
    ``sigmoid(logits / T)`` against ``labels``.

    The loss is convex in ``1 / T`` (a one-weight logistic regression without bias), so Newton's
    method on ``1 / T`` converges in a few steps; ``1 / T`` is kept in [1e-3, 1e3].
    """
    z, y = np.ravel(logits).astype(np.float64), np.ravel(labels).astype(np.float64)
    if z.size == 0 or not np.any(z):
        return 1.0
    beta = 1.0
    for _ in range(max_iterations):
        p = probabilities(beta * z)
        gradient = np.mean((p - y) * z)
        curvature = np.mean(p * (1 - p) * z * z)
        if curvature <= 1e-12:
            break
        step = gradient / curvature
        beta = float(np.clip(beta - step, 1e-3, 1e3))
        if abs(step) < 1e-7 * max(beta, 1.0):
            break
    return 1.0 / beta


def plot_reliability(
    counts: np.ndarray, prob_sums: np.ndarray, label_sums: np.ndarray, path: str | Path, title: str = ""
) -> Path:
    """A reliability diagram as a PNG: observed foreground frequency against mean predicted
    probability per bin (the diagonal is perfect calibration), the bins' pixel shares below."""
    from matplotlib.figure import Figure

    from kseg.visualize import save_figure

    bins = len(counts)
    edges = np.linspace(0, 1, bins + 1)
    occupied = counts > 0
    mean_p = np.divide(prob_sums, counts, out=np.zeros(bins), where=occupied)
    observed = np.divide(label_sums, counts, out=np.zeros(bins), where=occupied)
    fig = Figure(figsize=(5, 6))
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.bar(edges[:-1][occupied], observed[occupied], width=1 / bins, align="edge", alpha=0.6, label="observed")
    top.plot(mean_p[occupied], observed[occupied], "o-", color="C3", label="per bin")
    top.set(ylabel="fraction of lesion pixels", xlim=(0, 1), ylim=(0, 1))
    top.set_title(f"{title}ECE {ece_from_bins(counts, prob_sums, label_sums):.4f} ({bins} bins)")
    top.legend(loc="upper left")
    bottom.bar(edges[:-1], counts / max(counts.sum(), 1), width=1 / bins, align="edge", color="grey")
    bottom.set(xlabel="predicted lesion probability", ylabel="share of pixels", yscale="log")
    return save_figure(fig, path)


__all__ = [
    "DEFAULT_BINS",
    "probabilities",
    "reliability",
    "ece_from_bins",
    "ece",
    "per_image_ece",
    "fit_temperature",
    "plot_reliability",
]
