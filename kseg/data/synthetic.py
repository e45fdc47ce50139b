"""A synthetic dermoscopy dataset generated on the fly (no download needed).

Each image imitates a PH2 dermoscopy photo: textured skin of varied tone under uneven lighting,
the dark circular vignette of the dermatoscope, an irregular pigmented lesion with colour
variation, dots and a soft (sometimes faint) border, and hairs crossing it. The mask is the exact
filled lesion polygon. Case ``i`` depends only on ``(seed, i)``, so ``synthetic(n=10)`` starts with
``synthetic(n=5)``, and shapes are drawn in relative units, so sizes give the same scene.
"""

from __future__ import annotations

import cv2
import numpy as np

from kseg._errors import invalid_value
from kseg.data.dataset import SegmentationDataset
from kseg.data.io import ImageSize, normalize_size

# RGB in [0, 1]; light to dark skin as seen under a dermatoscope's white LEDs (PH2 is pinkish).
_SKIN = np.array(
    [[0.96, 0.84, 0.80], [0.93, 0.76, 0.70], [0.88, 0.68, 0.60], [0.84, 0.64, 0.52], [0.74, 0.54, 0.44]],
    dtype=np.float32,
)
_LESION_LIGHT = np.array([[0.66, 0.45, 0.33], [0.58, 0.38, 0.28], [0.70, 0.50, 0.42]], dtype=np.float32)
_LESION_DARK = np.array([[0.30, 0.17, 0.11], [0.20, 0.12, 0.10], [0.36, 0.24, 0.20]], dtype=np.float32)
_BLUE_GREY = np.array([0.36, 0.38, 0.46], dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise (about unit std): a small random grid upsampled with bicubic."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _lesion_polygon(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Irregular closed outline: a rotated ellipse whose radius wobbles with a few harmonics."""
    m = min(h, w)
    cx = w * rng.uniform(0.3, 0.7)
    cy = h * rng.uniform(0.3, 0.7)
    r0 = m * rng.uniform(0.08, 0.36)
    aspect = rng.uniform(0.6, 1.0)
    angle = rng.uniform(0, np.pi)
    theta = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    radius = np.ones_like(theta)
    irregular = rng.uniform(0.3, 1.6)  # melanoma-like outlines wobble more
    for k in range(2, 9):
        radius += irregular * rng.normal(0, 0.10 / k**0.8) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    radius = np.clip(radius, 0.4, None) * r0
    x, y = radius * np.cos(theta), radius * np.sin(theta) * aspect
    xr = cx + x * np.cos(angle) - y * np.sin(angle)
    yr = cy + x * np.sin(angle) + y * np.cos(angle)
    return np.stack([xr, yr], axis=1)


def _draw_hairs(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Hair layer in [0, 1]: curved anti-aliased strokes, many crossing the centre."""
    layer = np.zeros((h, w), np.float32)
    count = int(rng.choice([0, 0, 1, 2, 3, 4, 6, 10]))
    t = np.linspace(0, 1, 24)[:, None]
    for _ in range(count):
        p0 = rng.uniform([0, 0], [w, h])
        p2 = rng.uniform([0, 0], [w, h])
        mid = (p0 + p2) / 2 + rng.normal(0, 0.15 * min(h, w), 2)
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * mid + t**2 * p2  # quadratic Bezier
        thickness = max(1, int(round(rng.uniform(0.6, 1.8) * scale)))
        cv2.polylines(layer, [np.round(pts * 16).astype(np.int32)], False, 1.0, thickness, cv2.LINE_AA, 4)
    return np.clip(layer, 0, 1)


def synthetic_case(seed: int, index: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image (H,W,3) float32 in [0,1], mask (H,W) uint8 0/1)`` pair for ``(seed, index)``."""
    h, w = size
    rng = np.random.default_rng([seed, index])
    scale = min(h, w) / 256.0

    # Skin: tone, uneven lighting and fine texture.
    skin = _SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.92, 1.05, 3).astype(np.float32)
    light = 1 + 0.07 * _smooth_noise(rng, h, w, 4)
    texture = cv2.GaussianBlur(rng.standard_normal((h, w), dtype=np.float32), (0, 0), 0.8 * scale)
    image = skin[None, None, :] * (light + 0.05 * texture)[..., None]

    # Lesion: exact mask from the polygon (sub-pixel vertices via shift=4).
    poly = _lesion_polygon(rng, h, w)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1, cv2.LINE_8, 4)

    # Colour varies across the lesion and is often darker towards its centre.
    light_c = _LESION_LIGHT[rng.integers(len(_LESION_LIGHT))]
    dark_c = _LESION_DARK[rng.integers(len(_LESION_DARK))]
    depth = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    depth = depth / max(float(depth.max()), 1.0)
    mix = np.clip(0.35 + 0.6 * depth * rng.uniform(0, 1) + 0.25 * _smooth_noise(rng, h, w, 6), 0, 1)
    colour = light_c + (dark_c - light_c) * mix[..., None]
    if rng.random() < 0.25:  # blue-whitish veil patch
        veil = np.clip(_smooth_noise(rng, h, w, 5) - 0.5, 0, 1)[..., None]
        colour = colour * (1 - veil) + _BLUE_GREY * veil
    # Dots/globules inside the lesion.
    dots = np.zeros((h, w), np.float32)
    ys, xs = np.nonzero(mask)
    if len(xs) and rng.random() < 0.5:
        for j in rng.integers(0, len(xs), int(rng.integers(3, 25))):
            radius = max(1, int(round(rng.uniform(0.8, 2.5) * scale)))
            cv2.circle(dots, (int(xs[j]), int(ys[j])), radius, 1.0, -1, cv2.LINE_AA)
    # Granular pigment: blurred noise thresholded into a blotchy network.
    grain = cv2.GaussianBlur(rng.standard_normal((h, w), dtype=np.float32), (0, 0), 1.2 * scale)
    grain = np.clip(grain * 4 - 0.2, 0, 1) * rng.uniform(0.1, 0.5)
    colour = colour * (1 - np.maximum(0.5 * dots, grain)[..., None])

    # Soft border and contrast: the blurred mask is the blend weight, so the true edge sits at
    # the middle of the ramp; faint lesions (low opacity) make the task harder.
    softness = rng.uniform(0.6, 5.0) * scale
    opacity = rng.uniform(0.25, 0.45) if rng.random() < 0.2 else rng.uniform(0.55, 0.95)
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), softness) * opacity
    alpha = alpha * (1 + 0.1 * _smooth_noise(rng, h, w, 8))
    alpha = np.clip(alpha, 0, 1)[..., None]
    image = image * (1 - alpha) + colour * alpha

    # Hairs over everything (PH2 masks include hair-covered lesion, so the mask is unchanged).
    hair = _draw_hairs(rng, h, w, scale)[..., None] * rng.uniform(0.6, 0.9)
    hair_colour = np.array([0.12, 0.08, 0.06], np.float32) * rng.uniform(0.5, 1.5)
    image = image * (1 - hair) + hair_colour * hair

    # Dermatoscope vignette: dark corners outside a soft circle.
    if rng.random() < 0.75:
        cy, cx = h / 2 + rng.normal(0, 0.03 * h), w / 2 + rng.normal(0, 0.03 * w)
        yy = (np.arange(h, dtype=np.float32)[:, None] - cy) ** 2
        xx = (np.arange(w, dtype=np.float32)[None, :] - cx) ** 2
        dist = np.sqrt(yy + xx) / np.float32(0.5 * np.hypot(h, w))
        r = rng.uniform(0.72, 0.98)
        edge = rng.uniform(0.04, 0.12)
        vignette = np.clip((r - dist) / edge + 0.5, 0, 1)
        vignette = vignette * vignette * (3 - 2 * vignette)  # smoothstep
        image = image * (0.06 + 0.94 * vignette)[..., None]

    image = image + 0.012 * rng.standard_normal(image.shape, dtype=np.float32)
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.5 * scale)
    return np.clip(image, 0, 1).astype(np.float32), mask


def synthetic(n: int = 200, image_size: ImageSize = 256, seed: int = 0) -> SegmentationDataset:
    """Generate ``n`` synthetic dermoscopy images with exact 0/1 masks, deterministic per seed.

    Args:
        n: number of cases.
        image_size: int or ``(H, W)``; ``None`` means 256 (generated images have no own size).
        seed: the same seed always gives the same arrays.
    """
    if n < 1:
        raise invalid_value("n", "at least 1", n)
    size = normalize_size(image_size) or (256, 256)
    images = np.empty((n, *size, 3), np.float32)
    masks = np.empty((n, *size, 1), np.float32)
    for i in range(n):
        images[i], mask = synthetic_case(seed, i, size)
        masks[i, ..., 0] = mask
    return SegmentationDataset(
        images=images,
        masks=masks,
        ids=[f"synthetic_{seed}_{i:04d}" for i in range(n)],
        diagnosis=None,
        name="synthetic",
    )


__all__ = ["synthetic_case", "synthetic"]
