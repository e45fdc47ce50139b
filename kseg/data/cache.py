"""On-disk cache of decoded and resized arrays (``.npz``, uint8).

The key hashes every source file's absolute path, size and mtime plus the working size, so a
changed, added or removed file gives a new key. Files are written to a temporary name and moved
into place with ``os.replace`` (atomic), under a file lock so concurrent loaders decode only once.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from filelock import FileLock

# Bump when the cached content changes meaning (e.g. a different mask threshold).
CACHE_VERSION = 1


def cache_dir() -> Path:
    """``$KSEG_CACHE_DIR``, else ``<keras home>/kseg_cache`` (``$KERAS_HOME`` or ``~/.keras``)."""
    env = os.environ.get("KSEG_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(keras_home) / "kseg_cache"


def cache_key(files: Sequence[Path], size: tuple[int, int] | None) -> str:
    """Hash of the files' paths, sizes and mtimes and the working size."""
    entries = []
    for f in files:
        st = os.stat(f)
        entries.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns])
    payload = json.dumps({"v": CACHE_VERSION, "size": size, "files": entries})
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _path(key: str) -> Path:
    return cache_dir() / f"{key}.npz"


def load(key: str) -> tuple[object, object, list[str]] | None:
    """Return ``(images, masks, warnings)`` for ``key``, or ``None`` when not cached/unreadable."""
    path = _path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            messages = [str(m) for m in z["messages"]]
            if "images" in z:
                return z["images"], z["masks"], messages
            n = int(z["count"])
            images = [z[f"image_{i}"] for i in range(n)]
            masks = [z[f"mask_{i}"] for i in range(n)]
            return images, masks, messages
    except Exception as err:  # a torn or foreign file: rebuild rather than fail
        warnings.warn(f"{path}: unreadable cache file ({err}); rebuilding it", stacklevel=2)
        return None


def save(key: str, images, masks, messages: list[str]) -> Path:
    """Write the arrays for ``key`` atomically; return the cache file path."""
    path = _path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"messages": np.asarray(messages, dtype=str)}
    if isinstance(images, np.ndarray):
        arrays["images"], arrays["masks"] = images, masks
    else:  # own sizes: one entry per case (no pickled object arrays)
        arrays["count"] = np.asarray(len(images))
        for i, (im, m) in enumerate(zip(images, masks)):
            arrays[f"image_{i}"], arrays[f"mask_{i}"] = im, m
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)  # uncompressed: loading speed matters more than disk
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def get_or_build(key: str, build: Callable[[], tuple[object, object, list[str]]]):
    """Load ``key`` or build and save it, holding a lock so parallel loaders decode once."""
    path = _path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        cached = load(key)
        if cached is not None:
            return cached
        result = build()
        try:
            save(key, *result)
        except OSError as err:  # read-only or full disk: still return the data
            warnings.warn(f"could not write cache file {path}: {err}", stacklevel=2)
        return result


__all__ = ["CACHE_VERSION", "cache_dir", "cache_key", "load", "save", "get_or_build"]
