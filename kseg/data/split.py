"""Seeded, stratified train/val/test splits and their JSON form."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from kseg._errors import invalid_value
from kseg.data.dataset import SegmentationDataset


class Split(NamedTuple):
    """Train, validation and test subsets of one dataset."""

    train: SegmentationDataset
    val: SegmentationDataset
    test: SegmentationDataset

    def ids(self) -> dict[str, list[str]]:
        """Case ids per part: ``{"train": [...], "val": [...], "test": [...]}``."""
        return {"train": list(self.train.ids), "val": list(self.val.ids), "test": list(self.test.ids)}


def _counts(n: int, sizes: Sequence[float]) -> list[int]:
    if len(sizes) != 3:
        raise invalid_value("sizes", "3 entries (train, val, test)", sizes)
    if any(s < 0 for s in sizes):
        raise invalid_value("sizes", "non-negative", sizes)
    # ints are case counts, floats are fractions: (1, 0, 0) and (1.0, 0.0, 0.0) differ on purpose.
    if all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in sizes):
        counts = [int(s) for s in sizes]
        if sum(counts) > n:
            raise ValueError(
                f"split sizes {tuple(counts)} sum to {sum(counts)} but the dataset has only {n} "
                "cases; pass smaller counts or fractions such as (0.5, 0.25, 0.25)"
            )
        return counts
    if abs(sum(sizes) - 1.0) > 1e-6:
        raise ValueError(f"Fractional sizes must sum to 1. Received: sizes={sizes!r} (sum {sum(sizes)})")
    # Largest remainder so the three counts add up to n exactly.
    raw = np.asarray(sizes, dtype=float) * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def parse_split_sizes(text: str) -> tuple[int, int, int] | tuple[float, float, float]:
    """``"100,50,50"`` -> case counts ``(100, 50, 50)``; ``"0.6,0.2,0.2"`` -> fractions (any entry
    with a decimal point makes all three fractions). For the ``--split`` flag."""
    parts = [p.strip() for p in str(text).replace(" ", ",").split(",") if p.strip()]
    if len(parts) != 3:
        raise ValueError(f"Split sizes expect three numbers (train,val,test). Received: {text!r}")
    try:
        if any("." in p or "e" in p.lower() for p in parts):
            sizes = tuple(float(p) for p in parts)
        else:
            sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"Split sizes must be numbers such as 100,50,50 or 0.6,0.2,0.2. Received: {text!r}") from None
    _counts(sum(sizes) if isinstance(sizes[0], int) else 10**6, sizes)  # validates signs and sums
    return sizes


def split_indices(
    dataset: SegmentationDataset, seed: int = 0, sizes: Sequence[float] = (100, 50, 50)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The case indices of train, validation and test, deterministic for a given ``seed``.

    They depend only on the number of cases, their diagnoses and ``seed``, not on the image size,
    so one call splits a dataset loaded at several sizes alike (``dataset.subset(indices)``).

    Args:
        sizes: case counts as ints (their sum may be below ``len(dataset)``; the rest is unused) or
            float fractions summing to 1. Counts summing to more than ``len(dataset)`` raise
            ``ValueError``.

    Stratified by ``dataset.diagnosis`` where known (unknown cases form their own group), and
    for a joined dataset by ``(source, diagnosis)``: each
    group's shuffled members are spread evenly over ``[0, 1)`` and the merged order is cut into
    the three parts, so every class lands in each part in proportion (to within one case).
    """
    n_train, n_val, n_test = _counts(len(dataset), sizes)
    order = _stratified_order(dataset, seed)
    bounds = np.cumsum([n_train, n_val, n_test])
    parts = (order[: bounds[0]], order[bounds[0] : bounds[1]], order[bounds[1] : bounds[2]])
    return tuple(np.sort(p) for p in parts)


def _stratified_order(dataset: SegmentationDataset, seed: int) -> np.ndarray:
    """Every case index once, in an order where each stratum (diagnosis, and source for a joined
    dataset) is spread evenly: each group's shuffled members sit at evenly spaced positions in
    ``[0, 1)``, and the merged order is sorted by position (ties broken at random)."""
    n = len(dataset)
    rng = np.random.default_rng(seed)
    labels = dataset.diagnosis if dataset.diagnosis is not None else [None] * n
    if dataset.source is not None:
        labels = list(zip(dataset.source, labels))
    position = np.empty(n, dtype=float)
    groups: dict[object, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    for key in sorted(groups, key=lambda k: (k is None, str(k))):  # fixed order for determinism
        members = np.asarray(groups[key])
        order = rng.permutation(len(members))
        position[members[order]] = (np.arange(len(members)) + 0.5) / len(members)
    tie_break = rng.random(n)
    return np.lexsort((tie_break, position))


def fold_indices(
    dataset: SegmentationDataset, seed: int, folds: int, fold: int, sizes: Sequence[float] = (100, 50, 50)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test indices of fold ``fold`` of ``folds``-fold cross-validation.

    The stratified order of :func:`split_indices` (same ``seed``) is dealt out to the folds in
    turn, so every case is in the test part of exactly one fold and each stratum spreads over the
    folds in proportion. The rest is cut into train and validation in the proportion of
    ``sizes``' first two entries (100:50 keeps a third for validation) by :func:`split_indices`
    of the rest, so validation is stratified too.
    """
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"fold_indices expects folds >= 2 and 0 <= fold < folds. Received: folds={folds}, fold={fold}")
    if len(sizes) != 3 or sizes[0] <= 0 or sizes[1] < 0:
        raise ValueError(f"sizes expects (train, val, test) with train > 0. Received: {sizes!r}")
    order = _stratified_order(dataset, seed)
    test = np.sort(order[fold::folds])
    rest = np.setdiff1d(np.arange(len(dataset)), test)
    n_val = int(round(len(rest) * sizes[1] / (sizes[0] + sizes[1])))
    train, val, _ = split_indices(dataset.subset(rest), seed=seed, sizes=(len(rest) - n_val, n_val, 0))
    return rest[train], rest[val], test


def split(dataset: SegmentationDataset, seed: int = 0, sizes: Sequence[float] = (100, 50, 50)) -> Split:
    """Split ``dataset`` into train/val/test parts by :func:`split_indices` (same arguments)."""
    return Split(*(dataset.subset(p) for p in split_indices(dataset, seed, sizes)))


def save_split(split_: Split, path: str | os.PathLike) -> Path:
    """Write the split's ids (and dataset name) as JSON; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"dataset": split_.train.name, **split_.ids()}
    path.write_text(json.dumps(payload, indent=1))
    return path


def load_split(path: str | os.PathLike, dataset: SegmentationDataset) -> Split:
    """Rebuild a :class:`Split` of ``dataset`` from a JSON file written by :func:`save_split`."""
    path = Path(path)
    payload = json.loads(path.read_text())
    try:
        return Split(*(dataset.select_ids(payload[part]) for part in ("train", "val", "test")))
    except KeyError as err:
        raise KeyError(f"{path}: split does not match dataset {dataset.name!r}: {err}") from None


__all__ = ["Split", "parse_split_sizes", "split_indices", "fold_indices", "split", "save_split", "load_split"]
