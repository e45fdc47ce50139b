"""One entry point that picks a dataset by kind."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from kseg._errors import invalid_value, unknown_name
from kseg.data.dataset import SegmentationDataset
from kseg.data.folder import load_folder
from kseg.data.io import ImageSize
from kseg.data.ph2 import find_ph2, load_ph2, not_found_message
from kseg.data.synthetic import synthetic

logger = logging.getLogger(__name__)
KINDS = ("auto", "ph2", "synthetic", "folder")


def _folder_dirs(path) -> tuple[Path, Path]:
    if isinstance(path, (tuple, list)):
        if len(path) != 2:
            raise invalid_value("path", "a dir or an (images_dir, masks_dir) pair", path)
        return Path(path[0]), Path(path[1])
    if path is None:
        raise ValueError("kind='folder' needs path= (a dir with images/ and masks/, or a pair of dirs)")
    return Path(path) / "images", Path(path) / "masks"


def load_dataset(
    kind: str = "auto",
    path: str | os.PathLike | tuple | None = None,
    image_size: ImageSize = 256,
    mask_suffix: str = "",
    n: int = 200,
    seed: int = 0,
) -> SegmentationDataset:
    """Load a dataset by ``kind``.

    * ``"auto"``: PH2 where :func:`find_ph2` finds it; with an explicit ``path`` that holds
      ``images/`` and ``masks/``, that folder dataset; with no path and no PH2, the synthetic set
      (with a warning saying so). An explicit path that holds neither raises.
    * ``"ph2"``: :func:`load_ph2` (``path`` optional).
    * ``"synthetic"``: :func:`synthetic` with ``n`` and ``seed``.
    * ``"folder"``: ``path`` is a dir with ``images/`` and ``masks/`` or an ``(images_dir,
      masks_dir)`` pair; ``mask_suffix`` names the masks (``"_segmentation"`` for ISIC).
    """
    if kind not in KINDS:
        raise unknown_name("dataset kind", kind, KINDS)
    if kind == "ph2":
        return load_ph2(path, image_size)
    if kind == "synthetic":
        return synthetic(n=n, image_size=image_size, seed=seed)
    if kind == "folder":
        images_dir, masks_dir = _folder_dirs(path)
        return load_folder(images_dir, masks_dir, mask_suffix, image_size)
    # auto
    if isinstance(path, (tuple, list)):
        return load_folder(*_folder_dirs(path), mask_suffix, image_size)
    root = find_ph2(path)
    if root is not None:
        return load_ph2(root, image_size)
    if path is not None:
        if (Path(path) / "images").is_dir() and (Path(path) / "masks").is_dir():
            return load_folder(*_folder_dirs(path), mask_suffix, image_size)
        raise FileNotFoundError(
            f"{path}: neither a PH2 folder nor a folder with images/ and masks/.\n" + not_found_message(path)
        )
    notice = "PH2 not found; using the synthetic dataset instead (results are NOT PH2 results).\n" + not_found_message(
        None
    )
    logger.warning(notice)
    warnings.warn(notice, stacklevel=2)
    return synthetic(n=n, image_size=image_size, seed=seed)


__all__ = ["KINDS", "load_dataset"]
