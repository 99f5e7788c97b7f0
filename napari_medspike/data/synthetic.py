"""Synthetic images with known masks, for demos and tests that must run without real data."""

from __future__ import annotations

import numpy as np


def synthetic_lesion(
    shape: tuple[int, int] = (256, 256), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 image of a smooth reddish background with one brighter, textured ellipse.

    Returns ``(image [H, W, 3] uint8, mask [H, W] uint8 in {0, 1})``; the same seed gives the
    same pair.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    ry, rx = rng.uniform(0.12, 0.25) * h, rng.uniform(0.12, 0.25) * w
    theta = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
    mask = (u**2 + v**2 <= 1.0).astype(np.uint8)

    vignette = 1.0 - 0.5 * (((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2)
    base = np.stack([0.75 * vignette, 0.35 * vignette, 0.3 * vignette], axis=-1)
    texture = rng.normal(0.0, 0.03, size=(h, w, 1)).astype(np.float32)
    lesion = np.array([0.95, 0.6, 0.45], dtype=np.float32) * (1.0 - 0.3 * (u**2 + v**2))[..., None]
    image = np.where(mask[..., None] > 0, lesion, base) + texture
    return (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8), mask
