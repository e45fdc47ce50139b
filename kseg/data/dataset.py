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
    """

    images: np.ndarray | list[np.ndarray]
    masks: np.ndarray | list[np.ndarray]
    ids: list[str]
    diagnosis: list[str | None] | None
    name: str

    def __post_init__(self) -> None:
        # Catch mismatched lengths here rather than as an IndexError deep inside training.
        n = len(self.ids)
        if len(self.images) != n or len(self.masks) != n:
            raise ValueError(
                f"SegmentationDataset {self.name!r}: {len(self.images)} images, "
                f"{len(self.masks)} masks and {n} ids; they must all have the same length."
            )
        if self.diagnosis is not None and len(self.diagnosis) != n:
            raise ValueError(
                f"SegmentationDataset {self.name!r}: {len(self.diagnosis)} diagnoses for {n} cases."
            )

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
            for array in (items if isinstance(items, list) else [items]):
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
