"""Training-time augmentation: one geometric transform for image and mask, colour jitter and an
optional illuminant (per-channel gain) change on the image."""

from __future__ import annotations

import cv2
import numpy as np

from kseg._errors import invalid_value

MAX_SCALE = 1.1  # the largest zoom drawn: scales come from Uniform(min_scale, MAX_SCALE)


def check_min_scale(min_scale: float) -> None:
    """Raises ValueError unless ``0 < min_scale <= MAX_SCALE`` (RunConfig checks its knob with it)."""
    if not 0.0 < min_scale <= MAX_SCALE:
        raise invalid_value("min_scale", f"in (0, {MAX_SCALE:g}]", min_scale)


def augment_pair(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    geometric: bool = True,
    photometric: bool = True,
    affine_probability: float = 0.5,
    min_scale: float = 0.9,
    illuminant: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly augment one ``(H, W, 3)`` float32 image and its ``(H, W, 1)`` 0/1 mask.

    Geometric (same for both): horizontal/vertical flips, 90-degree rotations (180 only when
    H != W so the shape is kept) and, with ``affine_probability``, a small rotation/scale/shift
    (image: bilinear, mask: nearest neighbour so it stays exactly 0/1; both reflect at the border),
    the scale drawn from ``Uniform(min_scale, 1.1)``: ``min_scale`` 0.5 shows lesions at down to
    half their size, as in sets whose lesions fill less of the frame than PH2's.
    Photometric (image only): brightness, contrast, saturation and hue shift, clipped to [0, 1].
    Illuminant (image only, last, independent of ``photometric``): with ``illuminant = s > 0``
    each channel is multiplied by its own gain ``g_c = exp(u_c)``, ``u_c ~ Uniform(-s, s)`` (one
    draw per channel from ``rng``), then clipped to [0, 1]: a random colour cast, as from a
    different dermatoscope light, e.g. ``s = 0.2`` gives gains in [0.82, 1.22]. With ``s = 0``
    (the default) nothing is drawn, so the output and the random stream are exactly as before.
    All randomness comes from ``rng``, so a seeded generator reproduces the result.
    """
    illuminant = float(illuminant)
    check_min_scale(min_scale)
    if not illuminant >= 0.0:
        raise ValueError(f"`illuminant` must be >= 0. Received: illuminant={illuminant}")
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.float32)
    squeeze = mask.ndim == 3
    m = mask[..., 0] if squeeze else mask
    if geometric:
        if rng.random() < 0.5:
            image, m = image[:, ::-1], m[:, ::-1]
        if rng.random() < 0.5:
            image, m = image[::-1], m[::-1]
        k = int(rng.integers(4)) if image.shape[0] == image.shape[1] else 2 * int(rng.integers(2))
        if k:
            image, m = np.rot90(image, k), np.rot90(m, k)
        if rng.random() < affine_probability:
            h, w = image.shape[:2]
            angle = rng.uniform(-15, 15)
            scale = rng.uniform(min_scale, MAX_SCALE)
            matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
            matrix[:, 2] += rng.uniform(-0.05, 0.05, 2) * (w, h)
            image = cv2.warpAffine(
                np.ascontiguousarray(image),
                matrix,
                (w, h),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT_101,
            )
            m = cv2.warpAffine(
                np.ascontiguousarray(m),
                matrix,
                (w, h),
                flags=cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_REFLECT_101,
            )
    if photometric:
        image = np.ascontiguousarray(image)
        # Hue and saturation in HSV (float32 HSV: H in degrees, S and V in [0, 1]).
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-8, 8)) % 360
        hsv[..., 1] *= rng.uniform(0.8, 1.2)
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        mean = image.mean()
        image = (image - mean) * rng.uniform(0.8, 1.2) + mean + rng.uniform(-0.1, 0.1)
        image = np.clip(image, 0, 1)
    if illuminant > 0.0:
        gains = np.exp(rng.uniform(-illuminant, illuminant, image.shape[-1])).astype(np.float32)
        image = np.clip(image * gains, 0, 1)
    image = np.ascontiguousarray(image, dtype=np.float32)
    m = np.ascontiguousarray(m, dtype=np.float32)
    return image, (m[..., None] if squeeze else m)


__all__ = ["augment_pair"]
