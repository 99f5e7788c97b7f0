"""Sample data for napari's File > Open Sample menu."""

from __future__ import annotations

from typing import Any

from .data.synthetic import synthetic_lesion


def synthetic_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """A synthetic lesion image and its ground-truth mask."""
    image, mask = synthetic_lesion((256, 256), seed=0)
    return [
        (image, {"name": "synthetic lesion", "rgb": True}, "image"),
        (mask, {"name": "synthetic lesion ground truth", "opacity": 0.4, "visible": False}, "labels"),
    ]
