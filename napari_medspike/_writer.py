"""napari writer: Labels layers as binary masks (png or tif, 0/255)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .common import atomic_write


def write_mask(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a 2D Labels layer as an 8-bit mask: foreground (any label > 0) = 255."""
    target = Path(path)
    array = np.asarray(data)
    if array.ndim != 2:
        raise ValueError(f"only 2D label layers can be written as masks, got shape {array.shape}")
    mask = (array > 0).astype(np.uint8) * 255
    suffix = target.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        atomic_write(target, lambda tmp: tifffile.imwrite(tmp, mask))
    elif suffix == ".png":
        from .data.corrections import png_bytes

        encoded = png_bytes(mask)
        atomic_write(target, lambda tmp: tmp.write_bytes(encoded))
    else:
        raise ValueError(f"unsupported mask format {suffix!r}: use .png or .tif")
    return [str(target)]
