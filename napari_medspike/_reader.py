"""napari reader for 2D medical images (png, jpg, bmp, tif/tiff; grey, RGB, RGBA; 8/16-bit)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .data.io import IMAGE_SUFFIXES, ImageReadError, _read_array

LayerData = tuple[Any, dict[str, Any], str]


def _is_rgb(array: np.ndarray) -> bool:
    return array.ndim == 3 and array.shape[-1] in (3, 4)


def read_layer(path: str | Path) -> list[LayerData]:
    """Read one 2D image as an image layer (original pixel values, for display)."""
    path = Path(path)
    array = _read_array(path)
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # channel-first TIFF
    if not (array.ndim == 2 or _is_rgb(array)):
        raise ImageReadError(
            f"{path.name}: shape {array.shape} is not a 2D grey or RGB(A) image. napari-medspike "
            "segments 2D images; open a stack with napari's built-in reader and choose a slice."
        )
    return [(array, {"name": path.stem, "rgb": _is_rgb(array), "metadata": {"path": str(path)}}, "image")]


def napari_get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return a reader for supported single files or lists of them; None otherwise."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(Path(p).suffix.lower() in IMAGE_SUFFIXES for p in paths):
        return None

    def reader(p: str | list[str]) -> list[LayerData]:
        from napari.utils.notifications import show_error

        layers: list[LayerData] = []
        for one in [p] if isinstance(p, str) else p:
            try:
                layers.extend(read_layer(one))
            except ImageReadError as err:
                show_error(str(err))
        return layers

    return reader
