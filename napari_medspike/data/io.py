"""Reading images and masks from disk into the layouts the models expect."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """A file that cannot be used as a 2D image or mask; the message names the file."""


def _read_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        from skimage import io

        return np.asarray(io.imread(path))
    except Exception as err:  # decoders raise many types; all mean "unreadable"
        raise ImageReadError(f"{path}: cannot read image ({type(err).__name__}: {err})") from err


def to_rgb_float(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Grey, RGB or RGBA (8-bit, 16-bit or float) -> float32 ``[H, W, 3]`` in ``[0, 1]``."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a, 0, -1)  # channel-first TIFF
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4):
        raise ImageReadError(
            f"{name}: expected a 2D grey, RGB or RGBA image, got an array of shape {a.shape}"
        )
    if a.shape[-1] == 2:  # grey + alpha
        a = a[..., :1]
    a = a[..., :3]
    if a.dtype == np.bool_:
        out = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        # 8-bit: full range; 16-bit and wider: scale by the image's own maximum (12-bit
        # cameras fill only part of the 16-bit range).
        top = 255.0 if a.dtype == np.uint8 else float(max(a.max(initial=0), 1))
        out = np.clip(a.astype(np.float32) / top, 0.0, 1.0)
    elif np.issubdtype(a.dtype, np.floating):
        out = a.astype(np.float32)
        if not np.isfinite(out).all():
            raise ImageReadError(f"{name}: contains NaN or infinite values")
        lo, hi = float(out.min(initial=0)), float(out.max(initial=0))
        if lo < 0 or hi > 1:
            out = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
    else:
        raise ImageReadError(f"{name}: unsupported pixel type {a.dtype}")
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out)


def read_image(path: str | Path) -> np.ndarray:
    """Read a 2D image file as float32 ``[H, W, 3]`` in ``[0, 1]`` (png, jpg, bmp, tif)."""
    path = Path(path)
    return to_rgb_float(_read_array(path), name=str(path))


def to_binary_mask(array: np.ndarray, name: str = "mask") -> np.ndarray:
    """A mask array -> bool ``[H, W]``: the one rule by which napari-medspike reads masks.

    **0 is background.** A mask with at most two distinct values (0/255, 0/1, a label image
    of one object, all 255, all 0) is foreground wherever it is not 0, so a mask of one value
    is read as it is. A mask with more values (JPEG compression noise, anti-aliased or soft
    masks) is foreground where it reaches half its largest value, so that noise near 0 stays
    background; a warning naming ``name`` says so. Colour masks (``[H, W, 3]`` or
    ``[H, W, 4]``) use their largest colour channel (alpha is ignored); ``[H, W, 1]`` is grey.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
        a = a[..., :3].max(axis=-1) if a.shape[-1] > 1 else a[..., 0]
    if a.ndim != 2:
        raise ImageReadError(f"{name}: expected a 2D mask, got an array of shape {a.shape}")
    if a.dtype == np.bool_:
        return a.copy()
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ImageReadError(f"{name}: unsupported mask pixel type {a.dtype}")
    values = np.unique(a)
    if values.size <= 2:
        return a > 0
    top = float(values[-1])
    log.warning("%s: mask has %d distinct values; foreground where it reaches half of its largest (%g)",
                name, values.size, top)
    return a >= top / 2 if top > 0 else np.zeros(a.shape, bool)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as bool ``[H, W]``; see :func:`to_binary_mask` for the rule (value > 0
    is foreground)."""
    path = Path(path)
    return to_binary_mask(_read_array(path), name=str(path))


def image_to_tensor(image: np.ndarray) -> "torch.Tensor":  # noqa: F821 (torch imported lazily)
    """float ``[H, W, 3]`` -> ``[1, 3, H, W]`` tensor for a model."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
