"""One call from an image to a probability map and a mask."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np

from ..engine.checkpoint import load_model, resolve_checkpoint
from ..models.base import Segmenter
from ..runtime import requested_device
from .predictor import predict


def segment(
    image: np.ndarray,
    model: Segmenter | str | Path = "default",
    threshold: float = 0.5,
    mode: str | None = None,
    device: str = "auto",
    flips: bool | None = None,
    value_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Segment a 2D image; returns ``(probability [H, W] float32, mask [H, W] uint8 in {0, 1})``.

    ``model`` is a model, a shipped model's name or a checkpoint path; ``mode`` is ``"resize"``
    or ``"tiled"`` (None: the mode the model was trained for); ``device`` is ``auto``, ``cuda``, ``mps`` or ``cpu``; ``flips`` turns flip
    test-time augmentation on or off (``None``: as the checkpoint recommends). ``value_range``
    ``(lo, hi)`` is shown to the model as black and white for images that are not 8-bit (default:
    from 0 to the image's maximum). A model given by name or path is loaded once and kept for the
    next calls (the last two), until its file changes.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    dev, fallback = requested_device(device)
    if fallback:  # asked for a GPU there is not: say so, as the dock and CLI do
        warnings.warn(fallback, RuntimeWarning, stacklevel=2)
    if isinstance(model, Segmenter):
        net = model
    else:
        path = resolve_checkpoint(model)
        net = _loaded(str(path), path.stat().st_mtime_ns)
    prob = predict(net, image, mode=mode, device=dev, flips=flips, value_range=value_range)
    return prob, (prob >= threshold).astype(np.uint8)


@functools.lru_cache(maxsize=2)
def _loaded(path: str, modified_ns: int) -> Segmenter:
    """A checkpoint loaded once per version of its file (``modified_ns`` is part of the key)."""
    return load_model(path)
