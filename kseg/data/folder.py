"""A generic ``images/`` + ``masks/`` folder dataset (e.g. ISIC), paired by file stem."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from kseg._errors import invalid_value
from kseg.data.dataset import SegmentationDataset
from kseg.data.io import IMAGE_EXTENSIONS, ImageSize, image_files, load_pairs


def _image_files(folder: Path, what: str) -> dict[str, Path]:
    if folder.is_file():
        raise NotADirectoryError(f"{folder}: a file, where the {what} folder was expected")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: {what} folder not found")
    files = image_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: {what} folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    by_stem: dict[str, Path] = {}
    for f in files:
        if f.stem in by_stem:
            raise ValueError(f"{folder}: two files with the stem {f.stem!r}: {by_stem[f.stem].name}, {f.name}")
        by_stem[f.stem] = f
    return by_stem


def load_folder(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    mask_suffix: str = "",
    image_size: ImageSize = 256,
    use_cache: bool = True,
) -> SegmentationDataset:
    """Load image/mask pairs matched by stem: ``images/X.jpg`` <-> ``masks/X{mask_suffix}.png``.

    Args:
        images_dir: folder of images (png/jpg/jpeg/bmp/tif/tiff).
        masks_dir: folder of binary masks.
        mask_suffix: appended to the image stem to name its mask (ISIC: ``"_segmentation"``).
        image_size: int, ``(H, W)``, or ``None`` to keep each file's own size.
        use_cache: read/write decoded arrays in the kseg cache.

    An image without a mask is an error; a mask without an image is a warning (it is unused).
    """
    images_dir, masks_dir = Path(images_dir).expanduser(), Path(masks_dir).expanduser()
    images = _image_files(images_dir, "images")
    masks = _image_files(masks_dir, "masks")
    pairs, missing = [], []
    for stem, image in images.items():
        mask = masks.get(stem + mask_suffix)
        if mask is None:
            missing.append(image)
        else:
            pairs.append((stem, image, mask))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) without a mask in {masks_dir} (mask_suffix={mask_suffix!r}): "
            f"e.g. {missing[0]} needs {masks_dir / (missing[0].stem + mask_suffix)}.<ext>; "
            f"all: {[m.name for m in missing[:10]]}"
        )
    used = {stem + mask_suffix for stem in images}
    orphans = sorted(m for s, m in masks.items() if s not in used)
    if orphans:
        warnings.warn(
            f"{masks_dir}: {len(orphans)} mask(s) without an image (not loaded): {[o.name for o in orphans[:10]]}",
            stacklevel=2,
        )
    return load_pairs(
        [(p[1], p[2]) for p in pairs],
        [p[0] for p in pairs],
        image_size,
        "folder",
        None,
        use_cache=use_cache,
    )


def load_folder_dataset(
    path: str | os.PathLike | tuple | list | None, mask_suffix: str = "", image_size: ImageSize = 256
) -> SegmentationDataset:
    """The ``folder`` kind of :func:`kseg.data.load_dataset`: :func:`load_folder` of ``path``, a dir
    with ``images/`` and ``masks/`` or an ``(images_dir, masks_dir)`` pair.

    >>> load_folder_dataset("data/isic", "_segmentation")  # doctest: +SKIP
    """
    if isinstance(path, (tuple, list)):
        if len(path) != 2:
            raise invalid_value("path", "a dir or an (images_dir, masks_dir) pair", path)
        return load_folder(path[0], path[1], mask_suffix, image_size)
    if path is None:
        raise ValueError("kind='folder' needs path= (a dir with images/ and masks/, or a pair of dirs)")
    return load_folder(Path(path) / "images", Path(path) / "masks", mask_suffix, image_size)


__all__ = ["load_folder", "load_folder_dataset"]
