"""Batching for ``model.fit``: ``keras.utils.PyDataset`` s over one :class:`SegmentationDataset`
(:class:`SegmentationSequence`) or over several drawn by fixed shares (:class:`SourceMixSequence`)."""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np

from kseg._errors import invalid_value
from kseg.data.augment import augment_pair
from kseg.data.dataset import SegmentationDataset


class SegmentationSequence(keras.utils.PyDataset):
    """Yield ``(images, masks)`` float32 numpy batches, optionally shuffled and augmented.

    Order and augmentation depend only on ``(seed, epoch, batch index)``, so a run is
    reproducible and batches can be fetched in any order or by several workers. The epoch
    counter advances in :meth:`on_epoch_end` (called by ``fit``), which reshuffles.
    Use ``augment=True`` for the training set only.

    Args:
        dataset: a dataset with one shared image size (load with ``image_size`` set).
        batch_size: cases per batch; the last batch may be smaller.
        shuffle: reshuffle the order each epoch.
        augment: apply :func:`augment_pair` to every case.
        seed: base seed for order and augmentation.
        augment_options: keyword arguments of :func:`augment_pair` (e.g. ``photometric=False``).
        **pydataset_kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size``.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        batch_size: int,
        shuffle: bool = True,
        augment: bool = True,
        seed: int = 0,
        augment_options: dict | None = None,
        **pydataset_kwargs,
    ) -> None:
        super().__init__(**pydataset_kwargs)
        if batch_size < 1:
            raise invalid_value("batch_size", "at least 1", batch_size)
        if len(dataset) == 0:
            raise ValueError(f"dataset {dataset.name!r} is empty")
        images, masks = dataset.images, dataset.masks
        if not isinstance(images, np.ndarray):
            if len({im.shape for im in images}) != 1:
                raise ValueError(
                    f"dataset {dataset.name!r} has images of different sizes; load it with image_size=... to batch it"
                )
            images, masks = np.stack(images), np.stack(masks)
        self.images = images
        self.masks = masks
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.augment = augment
        self.seed = int(seed)
        self.augment_options = dict(augment_options or {})
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Jump to ``epoch`` (e.g. when resuming training); sets that epoch's order."""
        self.epoch = int(epoch)
        n = len(self.images)
        if self.shuffle:
            self.order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        else:
            self.order = np.arange(n)

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range (0..{len(self) - 1})")
        idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images = self.images[idx].astype(np.float32, copy=True)
        masks = self.masks[idx].astype(np.float32, copy=True)
        if self.augment:
            # One generator per (seed, epoch, batch): same result whichever worker runs it.
            _augment(images, masks, np.random.default_rng([self.seed, self.epoch, index, 1]), self.augment_options)
        return images, masks

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)


def _augment(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator, options: dict) -> None:
    """:func:`augment_pair` on every case of a batch, in place."""
    for i in range(len(images)):
        images[i], masks[i] = augment_pair(images[i], masks[i], rng, **options)


def batch_shares(batch_size: int, fractions: Sequence[float]) -> list[int]:
    """Cases per batch from each source: ``fractions`` (summing to 1) of ``batch_size`` rounded by
    largest remainder, so they add up to ``batch_size``; every source with a fraction > 0 gets at
    least one case.

    >>> batch_shares(8, [0.5, 0.5]), batch_shares(8, [0.75, 0.25]), batch_shares(8, [0.9, 0.1])
    ([4, 4], [6, 2], [7, 1])
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.ndim != 1 or len(fractions) < 1 or np.any(fractions < 0) or abs(fractions.sum() - 1) > 1e-6:
        raise invalid_value("fractions", "non-negative shares that sum to 1", list(fractions))
    if np.count_nonzero(fractions) > batch_size:
        raise ValueError(
            f"a batch of {batch_size} cannot hold one case of each of {np.count_nonzero(fractions)} sources"
        )
    raw = fractions * batch_size
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: batch_size - counts.sum()]:
        counts[i] += 1
    while np.any((counts == 0) & (fractions > 0)):  # a small share still shows in every batch
        counts[np.argmax(counts)] -= 1
        counts[np.flatnonzero((counts == 0) & (fractions > 0))[0]] += 1
    return counts.tolist()


class SourceMixSequence(keras.utils.PyDataset):
    """Training batches drawn from several datasets by fixed shares: every batch holds
    ``shares[k]`` cases of ``datasets[k]`` (:func:`batch_shares`), so each source's weight in
    every gradient step is stated, whatever the sets' sizes.

    An epoch passes over the first dataset (the primary, e.g. PH2's training part) once, in an
    order reshuffled each epoch, ``shares[0]`` cases a batch (the last batch may hold fewer of
    them). Each other dataset is an endless stream: a shuffled pass over all its cases, then
    another shuffle, across epochs, so a large set is seen evenly however short an epoch is.
    Order and augmentation depend only on ``(seed, epoch, batch index)``, as in
    :class:`SegmentationSequence`.

    Args:
        datasets: the primary set, then the others; all at one image size.
        shares: cases per batch from each (sum: the batch size).
        augment, seed, augment_options: as :class:`SegmentationSequence`.

    Example:
    >>> mix = SourceMixSequence([ph2_train, isic_train], shares=[4, 4], seed=0)
    >>> len(mix)  # 100 PH2 cases, 4 a batch
    25
    """

    def __init__(
        self,
        datasets: Sequence[SegmentationDataset],
        shares: Sequence[int],
        augment: bool = True,
        seed: int = 0,
        augment_options: dict | None = None,
        **pydataset_kwargs,
    ) -> None:
        super().__init__(**pydataset_kwargs)
        if len(datasets) != len(shares) or len(datasets) < 2:
            raise ValueError(
                f"SourceMixSequence expects two or more datasets and one share each. Received: {len(datasets)} "
                f"dataset(s), shares {list(shares)}"
            )
        if any(int(k) < 1 for k in shares):
            raise invalid_value("shares", "at least 1 case per batch from each dataset", list(shares))
        for dataset in datasets:
            if len(dataset) == 0:
                raise ValueError(f"dataset {dataset.name!r} is empty")
            if not isinstance(dataset.images, np.ndarray):
                raise ValueError(f"dataset {dataset.name!r}: load it with image_size=... to batch it")
        self.datasets = list(datasets)
        self.shares = [int(k) for k in shares]
        self.batch_size = sum(self.shares)
        self.augment, self.seed = augment, int(seed)
        self.augment_options = dict(augment_options or {})
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Jump to ``epoch`` (e.g. when resuming training); sets that epoch's primary order."""
        self.epoch = int(epoch)
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.datasets[0]))

    def __len__(self) -> int:
        return math.ceil(len(self.datasets[0]) / self.shares[0])

    def stream_indices(self, source: int, index: int) -> np.ndarray:
        """Case indices of ``datasets[source]`` (not the primary) in batch ``index`` of this epoch:
        positions of its endless stream, one fresh shuffle per pass over the set."""
        n, share = len(self.datasets[source]), self.shares[source]
        positions = (self.epoch * len(self) + index) * share + np.arange(share)
        passes, offsets = np.divmod(positions, n)
        return np.array(
            [np.random.default_rng([self.seed, 2, source, p]).permutation(n)[o] for p, o in zip(passes, offsets)]
        )

    def batch_indices(self, index: int) -> list[np.ndarray]:
        """Per dataset, the case indices batch ``index`` draws from it."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range (0..{len(self) - 1})")
        primary = self.order[index * self.shares[0] : (index + 1) * self.shares[0]]
        return [primary, *(self.stream_indices(k, index) for k in range(1, len(self.datasets)))]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        picks = self.batch_indices(index)
        images = np.concatenate([d.images[i] for d, i in zip(self.datasets, picks)]).astype(np.float32)
        masks = np.concatenate([d.masks[i] for d, i in zip(self.datasets, picks)]).astype(np.float32)
        if self.augment:
            _augment(images, masks, np.random.default_rng([self.seed, self.epoch, index, 1]), self.augment_options)
        return images, masks

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)


__all__ = ["SegmentationSequence", "SourceMixSequence", "batch_shares"]
