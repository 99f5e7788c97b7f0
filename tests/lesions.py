"""Synthetic lesion datasets on disk for training and fine-tuning tests."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from skimage import io

from napari_medspike.data.synthetic import synthetic_lesion


def write_lesion_pairs(root: Path, seeds: Iterable[int], shape: tuple[int, int] = (48, 64),
                       stem: str = "l{:02d}") -> Path:
    """Write ``root/images`` and ``root/masks`` (0/255) with one synthetic lesion per seed."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for seed in seeds:
        image, mask = synthetic_lesion(shape, seed=seed)
        name = stem.format(seed) + ".png"
        io.imsave(root / "images" / name, image, check_contrast=False)
        io.imsave(root / "masks" / name, mask * 255, check_contrast=False)
    return root
