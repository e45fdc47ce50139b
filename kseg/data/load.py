"""The dataset registry: one entry point, :func:`load_dataset`, that picks a loader by kind.

A loader is a function that returns a :class:`SegmentationDataset` and takes keyword arguments;
a new one is its module plus one line in :data:`LOADERS` (or, outside kseg, one assignment to
it). :func:`load_dataset` gives each loader the options its signature names, so one call (the
grid's, with ``path``, ``image_size``, ``mask_suffix`` and ``n``) serves every kind, and a loader
that needs a new argument declares it in its own signature.
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Callable

from kseg._errors import unknown_name
from kseg.data.dataset import SegmentationDataset
from kseg.data.folder import load_folder_dataset
from kseg.data.io import ImageSize
from kseg.data.ph2 import find_ph2, load_ph2, not_found_message
from kseg.data.synthetic import synthetic

logger = logging.getLogger(__name__)


def _load_auto(
    path: str | os.PathLike | tuple | list | None = None,
    image_size: ImageSize = 256,
    mask_suffix: str = "",
    n: int = 200,
    seed: int = 0,
) -> SegmentationDataset:
    """The ``auto`` kind (:func:`load_dataset`); a pair of dirs is a folder dataset."""
    if isinstance(path, (tuple, list)):
        return load_folder_dataset(path, mask_suffix, image_size)
    root = find_ph2(path)
    if root is not None:
        return load_ph2(root, image_size)
    if path is not None:
        if (Path(path) / "images").is_dir() and (Path(path) / "masks").is_dir():
            return load_folder_dataset(path, mask_suffix, image_size)
        raise FileNotFoundError(
            f"{path}: neither a PH2 folder nor a folder with images/ and masks/.\n" + not_found_message(path)
        )
    notice = "PH2 not found; using the synthetic dataset instead (results are NOT PH2 results).\n" + not_found_message(
        None
    )
    logger.warning(notice)
    warnings.warn(notice, stacklevel=3)  # the caller of load_dataset
    return synthetic(n=n, image_size=image_size, seed=seed)


#: Each dataset kind and its loader; ``--dataset`` offers these names.
LOADERS: dict[str, Callable[..., SegmentationDataset]] = {
    "auto": _load_auto,
    "ph2": load_ph2,
    "synthetic": synthetic,
    "folder": load_folder_dataset,
}


def _options(loader: Callable[..., SegmentationDataset]) -> set[str]:
    return set(inspect.signature(loader).parameters)


def load_dataset(kind: str = "auto", **options: Any) -> SegmentationDataset:
    """Load a dataset by ``kind``, a name in :data:`LOADERS`:

    * ``"auto"``: PH2 where :func:`kseg.data.find_ph2` finds it; with an explicit ``path`` that
      holds ``images/`` and ``masks/``, that folder dataset; with no path and no PH2, the
      synthetic set (with a warning saying so); an explicit path that holds neither raises;
    * ``"ph2"``: :func:`kseg.data.load_ph2` (``path`` optional);
    * ``"synthetic"``: :func:`kseg.data.synthetic` with ``n`` and ``seed``;
    * ``"folder"``: :func:`kseg.data.folder.load_folder_dataset`: ``path`` is a dir with ``images/`` and
      ``masks/`` or an ``(images_dir, masks_dir)`` pair; ``mask_suffix`` names the masks
      (``"_segmentation"`` for ISIC).

    Args:
        kind: the loader's name.
        **options: keyword arguments for the loaders (``path``, ``image_size``, ``mask_suffix``,
            ``n``, ``seed``, ...): the chosen loader gets those its signature names, so one call
            serves every kind; a name that no loader takes is refused.

    Example:

    >>> load_dataset("synthetic", image_size=64, n=8, path=None).name  # doctest: +SKIP
    'synthetic'
    """
    if kind not in LOADERS:
        raise unknown_name("dataset kind", kind, tuple(LOADERS))
    known = set().union(*map(_options, LOADERS.values()))
    for name in options:
        if name not in known:
            raise unknown_name("dataset option", name, sorted(known))
    taken = _options(LOADERS[kind])
    return LOADERS[kind](**{name: value for name, value in options.items() if name in taken})


__all__ = ["LOADERS", "load_dataset"]
