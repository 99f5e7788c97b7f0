"""napari writer: Labels layers as binary masks (png or tif, 0/255); a stack of masks as a tif."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .common import atomic_write
from .data.io import IMAGEJ_UNITS

log = logging.getLogger(__name__)


class MaskFormatError(TypeError):
    """A layer this writer cannot write in the format asked for. (Not a ``ValueError``: napari
    turns a writer's ``ValueError`` into "no writer found" and drops its message.)"""


def write_mask(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer as an 8-bit mask, foreground (any label > 0) = 255: a 2D layer as png
    or tif, a stack ``[N, H, W]`` as a tif of N pages. A name without an extension gets ``.png``
    (``.tif`` for a stack). A tif records the layer's pixel size (scale and length unit) as ImageJ
    does, so that it opens again with its scale. Several labels are merged into one foreground,
    and the user is told."""
    target = Path(path)
    array = np.asarray(data)
    if array.ndim not in (2, 3):
        raise MaskFormatError(f"only 2D masks and stacks of them can be written as masks, got shape {array.shape}")
    if not target.suffix:
        target = target.with_name(target.name + (".png" if array.ndim == 2 else ".tif"))
    suffix = target.suffix.lower()
    if suffix not in (".png", ".tif", ".tiff"):
        raise MaskFormatError(f"unsupported mask format {suffix!r}: use .png or .tif")
    if array.ndim == 3 and suffix == ".png":
        raise MaskFormatError(f"'{meta.get('name', 'the layer')}' is a stack of {array.shape[0]} masks: save it "
                              "as .tif (one page per mask)")
    _say_merged_labels(array, meta.get("name", target.stem))
    mask = (array > 0).astype(np.uint8) * 255
    if suffix == ".png":
        from .data.corrections import png_bytes

        encoded = png_bytes(mask)
        atomic_write(target, lambda tmp: tmp.write_bytes(encoded))
    else:
        import tifffile

        calibration = _imagej_calibration(meta)
        atomic_write(target, lambda tmp: tifffile.imwrite(tmp, mask, **calibration))
    return [str(target)]


def _say_merged_labels(array: np.ndarray, name: str) -> None:
    """A warning (a napari notification when napari runs) when ``array`` holds several labels."""
    if array.dtype.kind == "u" and array.dtype.itemsize <= 2:  # (fast: a 12-megapixel mask in 0.03 s)
        present = np.flatnonzero(np.bincount(array.ravel())[1:])
    else:
        present = np.unique(array[array > 0])
    if len(present) > 1:
        message = (f"'{name}' has {len(present)} labels: written as one foreground (255). To keep the labels, save "
                   "it as .tif with napari's own writer (File > Save Selected Layers, type 'napari builtin')")
        try:
            from napari.utils.notifications import show_warning
        except ImportError:
            log.warning(message)
        else:
            show_warning(message)


def _imagej_calibration(meta: dict[str, Any]) -> dict[str, Any]:
    """tifffile's arguments that record the layer's pixel size and length unit, ImageJ's way
    (empty when its scale is 1 and it has no length unit)."""
    scale = [float(v) for v in (meta.get("scale") or (1.0, 1.0))[-2:]]
    units = [str(u) for u in (meta.get("units") or ())[-2:]]
    unit = IMAGEJ_UNITS.get(units[-1]) if units else None
    if scale == [1.0, 1.0] and unit is None:
        return {}
    return {"imagej": True, "resolution": (1.0 / scale[1], 1.0 / scale[0]),
            **({"metadata": {"unit": unit}} if unit else {})}
