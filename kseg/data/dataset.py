"""The dataset container shared by every loader."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class SegmentationDataset:
    """Images and binary masks of one segmentation dataset.

    Attributes:
        images: ``(N, H, W, 3)`` float32 array in ``[0, 1]``, or a list of ``(H_i, W_i, 3)``
            arrays when the dataset was loaded at the files' own sizes (``image_size=None``).
        masks: ``(N, H, W, 1)`` float32 array (or list) whose values are exactly 0 or 1.
        ids: one identifier per case (file stem, e.g. ``"IMD002"``).
        diagnosis: clinical diagnosis per case (``"common_nevus"``, ``"atypical_nevus"``,
            ``"melanoma"``; ``None`` where unknown), or ``None`` when the dataset has none.
        name: short dataset name (``"ph2"``, ``"synthetic"``, ``"folder"``), recorded in results.
        source: the set each case comes from, for a dataset joined from several
            (:func:`concatenate`); ``None`` for a single set. Splits are stratified by it.
    """

    images: np.ndarray | list[np.ndarray]
    masks: np.ndarray | list[np.ndarray]
    ids: list[str]
    diagnosis: list[str | None] | None
    name: str
    source: list[str] | None = None

    def __post_init__(self) -> None:
        # Catch mismatched lengths here rather than as an IndexError deep inside training.
        n = len(self.ids)
        if len(self.images) != n or len(self.masks) != n:
            raise ValueError(
                f"SegmentationDataset {self.name!r}: {len(self.images)} images, "
                f"{len(self.masks)} masks and {n} ids; they must all have the same length."
            )
        for field in ("diagnosis", "source"):
            values = getattr(self, field)
            if values is not None and len(values) != n:
                raise ValueError(f"SegmentationDataset {self.name!r}: {len(values)} {field} labels for {n} cases.")

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        if isinstance(self.images, np.ndarray):
            shape = f"images={self.images.shape}"
        else:
            shape = "images=list (own sizes)"
        return f"SegmentationDataset(name={self.name!r}, n={len(self)}, {shape})"

    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(H, W)`` shared by all images, or ``None`` when sizes differ per image."""
        if isinstance(self.images, np.ndarray):
            return (int(self.images.shape[1]), int(self.images.shape[2]))
        shapes = {im.shape[:2] for im in self.images}
        return tuple(int(s) for s in shapes.pop()) if len(shapes) == 1 else None

    def fingerprint(self) -> str:
        """16 hex digits of SHA-256 over the ids, images and masks as loaded (at this size): the
        same files give the same fingerprint on any machine and in any folder, and a changed,
        added or removed case gives another. Part of a run's identity."""
        digest = hashlib.sha256()
        digest.update("\0".join(self.ids).encode())
        for items in (self.images, self.masks):
            for array in items if isinstance(items, list) else [items]:
                array = np.ascontiguousarray(array)
                digest.update(f"{array.dtype}{array.shape}".encode())
                digest.update(array.tobytes())
        return digest.hexdigest()[:16]

    def subset(self, indices: Sequence[int] | np.ndarray) -> "SegmentationDataset":
        """Return a new dataset with the cases at ``indices`` (in that order)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean index of shape {idx.shape} for {len(self)} cases")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset index out of range for a dataset of {len(self)} cases")

        def take(items):
            if isinstance(items, np.ndarray):
                return items[idx]
            return [items[i] for i in idx]

        return SegmentationDataset(
            images=take(self.images),
            masks=take(self.masks),
            ids=[self.ids[i] for i in idx],
            diagnosis=None if self.diagnosis is None else [self.diagnosis[i] for i in idx],
            name=self.name,
            source=None if self.source is None else [self.source[i] for i in idx],
        )

    def select_ids(self, ids: Sequence[str]) -> "SegmentationDataset":
        """Return the cases named by ``ids`` (in that order); unknown ids raise ``KeyError``."""
        position = {case_id: i for i, case_id in enumerate(self.ids)}
        missing = [case_id for case_id in ids if case_id not in position]
        if missing:
            raise KeyError(
                f"{len(missing)} id(s) not in dataset {self.name!r}: {missing[:10]}"
                + (" ..." if len(missing) > 10 else "")
            )
        return self.subset([position[case_id] for case_id in ids])


def concatenate(datasets: Sequence[SegmentationDataset], names: Sequence[str] | None = None) -> SegmentationDataset:
    """One dataset of the cases of several, each case labelled with its ``source``.

    Ids become ``"<source>/<id>"`` (two sets may both have an ``IMG001``), diagnoses are kept
    (``None`` for a set without them), and the name is the sources joined by ``+``, e.g.
    ``"ph2+isic2018_dev"``. Images must share one size (load every set with the same
    ``image_size``). :func:`kseg.data.split_indices` then stratifies by source, so every part
    holds each set in proportion.

    Args:
        datasets: the sets, in order.
        names: one source name per set (default: each set's ``name``); they must differ.

    Example:
    >>> both = concatenate([load_ph2(image_size=128), load_folder("isic/images", "isic/masks",
    ...                     "_segmentation", 128)], names=["ph2", "isic"])
    """
    names = [d.name for d in datasets] if names is None else list(names)
    if len(names) != len(datasets) or len(set(names)) != len(names):
        raise ValueError(f"concatenate expects one distinct source name per dataset. Received: {names}")
    sizes = {d.image_size for d in datasets}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"datasets {names} have image sizes {sorted(map(str, sizes))}; load them at one image_size")
    return SegmentationDataset(
        images=np.concatenate([np.asarray(d.images) for d in datasets]),
        masks=np.concatenate([np.asarray(d.masks) for d in datasets]),
        ids=[f"{name}/{case}" for name, d in zip(names, datasets) for case in d.ids],
        diagnosis=[dx for d in datasets for dx in (d.diagnosis or [None] * len(d))],
        name="+".join(names),
        source=[name for name, d in zip(names, datasets) for _ in range(len(d))],
    )


__all__ = ["SegmentationDataset", "concatenate"]
