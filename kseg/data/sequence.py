"""Batching for ``model.fit``: a ``keras.utils.PyDataset`` over a :class:`SegmentationDataset`."""

from __future__ import annotations

import math

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
            rng = np.random.default_rng([self.seed, self.epoch, index, 1])
            for i in range(len(idx)):
                images[i], masks[i] = augment_pair(images[i], masks[i], rng, **self.augment_options)
        return images, masks

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)


__all__ = ["SegmentationSequence"]
