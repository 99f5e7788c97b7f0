"""napari reader for 2D medical images (png, jpg, bmp, tif/tiff; grey, RGB, RGBA; 8/16-bit) and for
videos (mp4, avi, mov, mkv, webm) as stacks of RGB frames."""

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
            f"{path.name}: shape {array.shape} is not a 2D grey or RGB(A) image: open it with napari's "
            "built-in reader (the Segment dock segments a stack slice by slice)"
        )
    return [(array, {"name": path.stem, "rgb": _is_rgb(array), "metadata": {"path": str(path)}}, "image")]


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
    return [(frames, {"name": name, "rgb": True, "metadata": info}, "image")]


def napari_get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return a reader for supported single files or lists of them; None otherwise."""
    from .data.video import VIDEO_SUFFIXES

    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(Path(p).suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES for p in paths):
        return None

    def reader(p: str | list[str]) -> list[LayerData]:
        """The layers of the files it can read; the others are named in a notification. When it
        reads none, it raises, so that napari offers its other readers (its own for a stack)."""
        from napari.utils.notifications import show_error

        layers: list[LayerData] = []
        problems: list[str] = []
        for one in [p] if isinstance(p, str) else p:
            try:
                is_video = Path(one).suffix.lower() in VIDEO_SUFFIXES
                layers.extend(read_video_layer(one) if is_video else read_layer(one))
            except ImageReadError as err:
                problems.append(str(err))
        if problems:
            show_error("\n".join(problems))
            if not layers:
                raise ImageReadError("; ".join(problems))
        return layers

    return reader
