"""Resizing images, masks and probability maps: the one place that decides how (bilinear with
antialiasing for images going down to the model's size, nearest for masks, bilinear for maps
going back up)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

Size = int | tuple[int, int] | list[int]


def _hw(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_image(x: torch.Tensor, size: Size) -> torch.Tensor:
    """Images ``[B, C, H, W]`` (float) to ``size``: bilinear, antialiased when shrinking, so the
    model sees the same input in training, prediction and inspection."""
    return F.interpolate(x, size=_hw(size), mode="bilinear", antialias=True, align_corners=False)


def resize_mask(m: torch.Tensor, size: Size) -> torch.Tensor:
    """Masks ``[B, 1, H, W]`` to ``size`` by nearest neighbour (labels stay labels)."""
    return F.interpolate(m, size=_hw(size), mode="nearest")


def resize_map(x: torch.Tensor, size: Size) -> torch.Tensor:
    """Logits or probability maps ``[B, C, h, w]`` back to an image's ``size``: bilinear, no
    antialiasing (the map only grows)."""
    return F.interpolate(x, size=_hw(size), mode="bilinear", align_corners=False)
