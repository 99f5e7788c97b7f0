"""The correction store: images, corrected masks and their provenance, written atomically.

Layout (the same as a training folder, so the trainer reads it directly)::

    <store>/images/<stem>.png        RGB uint8
    <store>/masks/<stem>.png         uint8 0/255
    <store>/provenance/<stem>.json   source file, layer, model, time, shape
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.checkpoint import atomic_write
from .io import read_image, read_mask, to_binary_mask, to_rgb_float


def default_store() -> Path:
    """``<user data dir>/napari-medspike/corrections`` (platformdirs)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-medspike", appauthor=False)) / "corrections"


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 grey or RGB array as PNG (imageio, a scikit-image dependency)."""
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", array, extension=".png")


@dataclass
class Correction:
    """One stored correction."""

    stem: str
    image: Path
    mask: Path
    provenance: dict[str, Any]


class CorrectionStore:
    """Save, list and load corrections in a folder (created on first save)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_store()

    def save(self, image: np.ndarray, mask: np.ndarray, provenance: dict[str, Any] | None = None,
             name: str = "correction") -> Correction:
        """Store an image (any 2D grey/RGB/RGBA array) and its mask; return the stored entry.

        Raises ``ValueError`` for an empty mask or a mask that does not match the image size.
        """
        rgb = to_rgb_float(image, name="image")
        binary = to_binary_mask(mask, name="mask") if np.asarray(mask).dtype != bool else np.asarray(mask)
        if binary.shape != rgb.shape[:2]:
            raise ValueError(f"mask {binary.shape} and image {rgb.shape[:2]} differ in size")
        if not binary.any():
            raise ValueError("the mask is empty: paint the foreground before saving a correction")
        safe = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "correction"
        stem = f"{safe}_{time.strftime('%Y%m%d-%H%M%S')}_{time.time_ns() % 1_000_000:06d}"
        paths = {k: self.root / k for k in ("images", "masks", "provenance")}
        for p in paths.values():
            p.mkdir(parents=True, exist_ok=True)
        meta = {
            "stem": stem,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "shape": list(binary.shape),
            "foreground_fraction": float(binary.mean()),
            **(provenance or {}),
        }
        image_png = png_bytes((rgb * 255).round().astype(np.uint8))
        mask_png = png_bytes(binary.astype(np.uint8) * 255)
        # Provenance last: an entry is listed only once its image and mask are complete.
        atomic_write(paths["images"] / f"{stem}.png", lambda t: t.write_bytes(image_png))
        atomic_write(paths["masks"] / f"{stem}.png", lambda t: t.write_bytes(mask_png))
        atomic_write(paths["provenance"] / f"{stem}.json", lambda t: t.write_text(json.dumps(meta, indent=1, default=str)))
        return Correction(stem, paths["images"] / f"{stem}.png", paths["masks"] / f"{stem}.png", meta)

    def list(self) -> list[Correction]:
        """Complete entries, oldest first."""
        entries = []
        for meta_file in sorted((self.root / "provenance").glob("*.json")):
            stem = meta_file.stem
            image, mask = self.root / "images" / f"{stem}.png", self.root / "masks" / f"{stem}.png"
            if image.is_file() and mask.is_file():
                entries.append(Correction(stem, image, mask, json.loads(meta_file.read_text())))
        return entries

    def load(self, stem: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Image (float RGB), mask (bool) and provenance of one entry."""
        entry = next((c for c in self.list() if c.stem == stem), None)
        if entry is None:
            raise KeyError(f"no correction {stem!r} in {self.root}")
        return read_image(entry.image), read_mask(entry.mask), entry.provenance
