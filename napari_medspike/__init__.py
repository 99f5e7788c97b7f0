"""napari-medspike: spiking-transformer segmentation of 2D medical images in napari.

The public names below are imported on first use, so that importing the package (as napari does
to read an image or list the plugin's samples) does not load torch and spikingjelly.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "ARCHITECTURES": ".models",
    "ImageReadError": ".data.io",
    "InputError": ".models",
    "alignment_loss": ".models",
    "create_model": ".models",
    "segmentation_loss": ".models",
    "list_models": ".engine.checkpoint",
    "load_model": ".engine.checkpoint",
    "save_checkpoint": ".engine.checkpoint",
    "segment": ".inference.segment",
    "tune_malloc": ".runtime",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
