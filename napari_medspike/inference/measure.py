"""Numbers from a mask: area, connected regions and their mean probability, per image or slice."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Columns of a measurement table (one row per connected region).
COLUMNS = ("image", "slice", "region", "area_px", "area", "area_unit", "mean_probability", "centroid_y", "centroid_x")


def measure_regions(
    mask: np.ndarray,
    prob: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0),
    unit: str = "px²",
    image: str = "",
    slice_index: int = 0,
) -> list[dict[str, object]]:
    """One row per 8-connected foreground region of a 2D ``mask``: its area in pixels and in
    physical units (``spacing`` = pixel size along y and x, e.g. a napari layer's scale; ``unit``
    names the squared unit), the mean probability inside it and its centroid (pixels)."""
    from skimage.measure import label, regionprops

    mask = np.asarray(mask) > 0
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D mask, got shape {mask.shape}")
    if prob is not None and np.shape(prob) != mask.shape:
        raise ValueError(f"probability map {np.shape(prob)} and mask {mask.shape} differ in size")
    pixel_area = float(spacing[0]) * float(spacing[1])
    rows = []
    for region in regionprops(label(mask, connectivity=2), intensity_image=prob):
        rows.append({
            "image": image,
            "slice": slice_index,
            "region": region.label,
            "area_px": int(region.area),
            "area": float(region.area) * pixel_area,
            "area_unit": unit,
            "mean_probability": float(region.intensity_mean) if prob is not None else float("nan"),
            "centroid_y": float(region.centroid[0]),
            "centroid_x": float(region.centroid[1]),
        })
    return rows


def measure_slices(
    masks: np.ndarray,
    probs: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0),
    unit: str = "px²",
    image: str = "",
    slice_numbers: Sequence[int] | None = None,
) -> list[dict[str, object]]:
    """:func:`measure_regions` of a 2D mask or of each slice of a stack ``[N, H, W]`` (rows
    numbered by ``slice``: the slice's index, or its number in ``slice_numbers``, e.g. the video
    frame it shows), with the matching probability map or maps."""
    masks = np.asarray(masks)
    masks = masks[None] if masks.ndim == 2 else masks
    if probs is not None:
        probs = np.asarray(probs)
        probs = probs[None] if probs.ndim == 2 else probs
    rows: list[dict[str, object]] = []
    for i, mask in enumerate(masks):
        number = i if slice_numbers is None else int(slice_numbers[i])
        rows += measure_regions(mask, None if probs is None else probs[i], spacing, unit, image=image, slice_index=number)
    return rows


def summarise(rows: list[dict[str, object]]) -> dict[str, object]:
    """Totals over a table: regions, foreground area (pixels and units)."""
    return {
        "regions": len(rows),
        "area_px": sum(int(r["area_px"]) for r in rows),
        "area": sum(float(r["area"]) for r in rows),
        "area_unit": rows[0]["area_unit"] if rows else "",
    }


#: A folder job's measurements: :data:`COLUMNS` and the mask file each region is in.
FOLDER_COLUMNS = (*COLUMNS, "mask")


def write_csv(rows: list[dict[str, object]], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    """Write a measurement table as CSV (atomically); an empty table writes the header only.
    ``columns``: by default :data:`COLUMNS`, or :data:`FOLDER_COLUMNS` where the rows name their
    mask file."""
    if columns is None:
        columns = FOLDER_COLUMNS if any("mask" in row for row in rows) else COLUMNS
    from ..common import atomic_write

    def write(tmp: Path) -> None:
        # with a byte-order mark: Excel then reads "px²" and non-ASCII file names as written
        with tmp.open("w", newline="", encoding="utf-8-sig") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(rows)

    return atomic_write(path, write)
