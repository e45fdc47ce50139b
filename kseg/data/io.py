"""Reading, validating and resizing image/mask files.

Files are decoded with opencv; images come back RGB ``uint8``, masks ``uint8`` in {0, 1}.
The float32 conversion happens last (see :func:`to_float`) so the on-disk cache can stay uint8.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from kseg._errors import invalid_value
from kseg.data import cache
from kseg.data.dataset import SegmentationDataset

#: File extensions recognised as images or masks (lower case, with the dot).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

ImageSize = int | tuple[int, int] | None


def normalize_size(image_size: ImageSize) -> tuple[int, int] | None:
    """Turn ``image_size`` (int, ``(H, W)`` or ``None``) into ``(H, W)`` or ``None``."""
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    else:
        try:
            h, w = image_size  # type: ignore[misc]
            size = (int(h), int(w))
        except (TypeError, ValueError):
            raise invalid_value("image_size", "an int, a (height, width) pair or None", image_size) from None
    if min(size) <= 0:
        raise invalid_value("image_size", "positive", image_size)
    return size


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted; the other files (not hidden ones) are
    named in a warning, so a folder of ``.webp`` or ``.txt`` files is not read as silently empty."""
    files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
    skipped = [f.name for f in files if not is_image_file(f)]
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warnings.warn(
            f"{folder}: skipped {len(skipped)} file(s) that are not {'/'.join(IMAGE_EXTENSIONS)} images: {shown}",
            stacklevel=2,
        )
    return [f for f in files if is_image_file(f)]


def _decode(path: Path, flags: int) -> np.ndarray:
    """Decode one file with opencv; raise naming the file when it is missing or unreadable."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    # np.fromfile + imdecode instead of imread: works with non-ASCII paths on every OS and lets
    # us look at the bytes for truncation.
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise ValueError(f"{path}: file is empty")
    is_jpeg = data[:2].tobytes() == b"\xff\xd8"
    if is_jpeg and b"\xff\xd9" not in data[-4096:].tobytes():
        # libjpeg decodes a truncated JPEG with a grey bottom and only prints a warning.
        raise ValueError(f"{path}: truncated JPEG (no end-of-image marker)")
    array = cv2.imdecode(data, flags)
    if array is None:
        raise ValueError(f"{path}: cannot decode image (unreadable, truncated or not an image)")
    return array


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` RGB ``uint8`` array (grey and RGBA converted)."""
    bgr = _decode(Path(path), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path: str | os.PathLike, messages: list[str] | None = None) -> np.ndarray:
    """Read a mask file as an ``(H, W)`` ``uint8`` array of 0/1.

    Binary masks stored as {0, 255} or {0, 1} (any single value too) are taken as they are.
    Any other grey levels (e.g. JPEG artefacts, anti-aliased edges) are thresholded at 127 with a
    warning naming the file; when ``messages`` is given the text is appended to it instead, for the
    caller to issue (from its own thread) and the cache to replay.
    """
    path = Path(path)
    # IMREAD_GRAYSCALE reads PH2's 1-bit BMPs and its one 24-bit RGB BMP (IMD002) alike.
    grey = _decode(path, cv2.IMREAD_GRAYSCALE)
    values = np.unique(grey)
    if set(values.tolist()) <= {0, 1}:
        return grey.astype(np.uint8, copy=False)
    if set(values.tolist()) <= {0, 255}:
        return (grey > 127).astype(np.uint8)
    message = f"{path}: mask is not binary ({len(values)} grey levels, e.g. {values[:6].tolist()}); thresholding at 127"
    if messages is None:
        warnings.warn(message, stacklevel=2)
    else:
        messages.append(message)
    return (grey > 127).astype(np.uint8)


def resize_pair(image: np.ndarray, mask: np.ndarray, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Resize image (INTER_AREA: no aliasing when shrinking) and mask (INTER_NEAREST: stays 0/1)."""
    if size is None or image.shape[:2] == size:
        return image, mask
    h, w = size
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, mask


def load_case(
    image_path: Path, mask_path: Path, size: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read, validate and resize one image/mask pair; return uint8 arrays and warning texts."""
    messages: list[str] = []
    image = read_image(image_path)
    # Runs in worker threads: the warning text is collected, and load_pairs issues it. (Silencing
    # warnings here with warnings.catch_warnings raced between threads, which share the filters,
    # and could leave every warning of the process ignored.)
    mask = read_mask(mask_path, messages)
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(
            f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from its image "
            f"{image_path} ({image.shape[1]}x{image.shape[0]})"
        )
    image, mask = resize_pair(image, mask, size)
    return image, mask, messages


def to_float(images: np.ndarray | list[np.ndarray], masks: np.ndarray | list[np.ndarray]):
    """uint8 images/masks -> float32 images in [0, 1] and float32 masks ``(..., 1)`` of 0/1."""
    if isinstance(images, np.ndarray):
        out_images = np.multiply(images, np.float32(1.0 / 255.0), dtype=np.float32)
        out_masks = masks.astype(np.float32)[..., None]
        return out_images, out_masks
    out_images = [np.multiply(im, np.float32(1.0 / 255.0), dtype=np.float32) for im in images]
    out_masks = [m.astype(np.float32)[..., None] for m in masks]
    return out_images, out_masks


def load_pairs(
    pairs: Sequence[tuple[Path, Path]],
    ids: list[str],
    image_size: ImageSize,
    name: str,
    diagnosis: list[str | None] | None = None,
    use_cache: bool = True,
) -> SegmentationDataset:
    """Decode (or read from the cache) every image/mask pair into a :class:`SegmentationDataset`."""
    size = normalize_size(image_size)
    key = cache.cache_key([p for pair in pairs for p in pair], size) if use_cache else None
    cached = cache.load(key) if key else None
    if cached is None:

        def build() -> tuple[object, object, list[str]]:
            workers = max(1, min(8, os.cpu_count() or 1))
            # opencv releases the GIL while decoding, so threads overlap the PNG/BMP decode.
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(lambda p: load_case(p[0], p[1], size), pairs))
            imgs = [r[0] for r in results]
            msks = [r[1] for r in results]
            msgs = [m for r in results for m in r[2]]
            if size is not None:
                return np.stack(imgs), np.stack(msks), msgs
            return imgs, msks, msgs

        cached = cache.get_or_build(key, build) if key else build()
        replay = cached[2]
        issued_now = True
    else:
        replay = cached[2]
        issued_now = False
    for message in replay:
        # Re-issue mask warnings on cache hits too, so a thresholded mask is never silent.
        warnings.warn(message if issued_now else f"{message} (cached)", stacklevel=3)
    images, masks = to_float(cached[0], cached[1])
    return SegmentationDataset(images=images, masks=masks, ids=list(ids), diagnosis=diagnosis, name=name)


__all__ = [
    "IMAGE_EXTENSIONS",
    "normalize_size",
    "is_image_file",
    "image_files",
    "read_image",
    "read_mask",
    "resize_pair",
    "load_case",
    "to_float",
    "load_pairs",
]
