"""napari reader for 2D TIFF images (grey, RGB, RGBA; 8/16-bit; with the pixel size they record),
for several 2D images opened as one stack, and for videos (mp4, avi, mov, mkv, webm, m4v) as
stacks of RGB frames. napari's own reader opens png, jpg and bmp files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .data.io import IMAGE_SUFFIXES, ImageReadError, _read_array, tiff_pixel_size

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
            f"{path.name}: shape {array.shape} is not a 2D grey or RGB(A) image: open it with napari's "
            "built-in reader (the Segment dock segments a stack slice by slice)"
        )
    meta: dict[str, Any] = {"name": path.stem, "rgb": _is_rgb(array), "metadata": {"path": str(path)}}
    if path.suffix.lower() in (".tif", ".tiff") and (size := tiff_pixel_size(path)) is not None:
        (dy, dx), unit = size  # (a microscope's calibration: areas are then measured in its unit)
        meta["scale"] = (dy, dx)
        if unit is not None:
            meta["units"] = (unit, unit)
    return [(array, meta, "image")]


def read_stack(paths: list[str | Path]) -> list[LayerData]:
    """Read 2D images of one size as one stack layer ``[N, H, W]`` or ``[N, H, W, C]`` (napari's
    File > Open Files as Stack), named after the first; its metadata lists the files in order."""
    from .data.video import is_video

    if any(is_video(p) for p in paths):
        raise ImageReadError("a video cannot be part of a stack of images: open it on its own")
    layers = [read_layer(p)[0] for p in paths]
    shapes = {np.shape(data) for data, _, _ in layers}
    if len(shapes) > 1:
        sizes = ", ".join(f"{Path(p).name} {' x '.join(map(str, np.shape(d)))}" for p, (d, _, _) in zip(paths, layers))
        raise ImageReadError(f"images of different sizes cannot be stacked: {sizes}")
    first = layers[0][1]
    meta: dict[str, Any] = {"name": f"{first['name']} (stack of {len(paths)})", "rgb": first["rgb"],
                            "metadata": {"paths": [str(p) for p in paths]}}
    if all(m.get("scale") == first.get("scale") and m.get("units") == first.get("units") for _, m, _ in layers):
        if "scale" in first:  # the images' pixel size; the stack's own axis counts images
            meta["scale"] = (1.0, *first["scale"])
        if "units" in first:
            meta["units"] = ("pixel", *first["units"])
    return [(np.stack([data for data, _, _ in layers]), meta, "image")]


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def read_video_layer(path: str | Path, max_bytes: int | None = None) -> list[LayerData]:
    """Read a video as one RGB image layer ``[N, H, W, 3]`` (uint8), the frames on napari's first
    axis. A video larger than ``max_bytes`` (2 GiB by default) is read with every k-th frame;
    the layer's name says so and its metadata lists the frames kept."""
    from .data.video import DEFAULT_MAX_BYTES, read_video

    path = Path(path)
    frames, info = read_video(path, max_bytes=max_bytes or DEFAULT_MAX_BYTES)
    every = int(info["every"])  # type: ignore[arg-type]
    name = path.stem if every == 1 else f"{path.stem} (every {_ordinal(every)} frame)"
    if every > 1:
        from napari.utils.notifications import show_info

        show_info(f"{path.name}: every {_ordinal(every)} frame read ({len(frames)} frames), so that the "
                  "video fits in memory; medspike-segment segments all frames of a video file")
    if "cut_short" in info:
        from napari.utils.notifications import show_warning

        show_warning(f"{info['cut_short']}; the {len(frames)} frames read are opened")
    return [(frames, {"name": name, "rgb": True, "metadata": info}, "image")]


def napari_get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return a reader for a supported file, or a list of them to stack; None otherwise."""
    from .data.video import VIDEO_SUFFIXES, is_video

    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(Path(p).suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES for p in paths):
        return None

    def reader(p: str | list[str]) -> list[LayerData]:
        """The layers of a file; a list of files (napari passes one only for Open Files as Stack)
        as one stack. What it cannot read raises, so that napari says why and offers its other
        readers (its own for a z-stack)."""
        if not isinstance(p, str):
            return read_stack(list(p))
        return read_video_layer(p) if is_video(p) else read_layer(p)

    return reader
