"""Test helpers that write datasets to disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_synthetic_folder(root: Path, n: int = 24, seed: int = 0, mask_suffix: str = "", image_size: int = 64) -> Path:
    """``root/images/<id>.png`` and ``root/masks/<id><mask_suffix>.png`` (0/255) from
    :func:`kseg.data.synthetic`: a folder dataset, as ISIC lays one out with ``_segmentation``."""
    from kseg.data import synthetic

    data = synthetic(n=n, image_size=image_size, seed=seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for case_id, image, mask in zip(data.ids, data.images, data.masks):
        bgr = cv2.cvtColor((np.asarray(image) * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
        assert cv2.imwrite(str(root / "images" / f"{case_id}.png"), bgr)
        assert cv2.imwrite(
            str(root / "masks" / f"{case_id}{mask_suffix}.png"), (np.asarray(mask)[..., 0] * 255).astype(np.uint8)
        )
    return root
