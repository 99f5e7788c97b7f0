"""Per-image segmentation metrics (MODEL.md's protocol: threshold 0.5, empty vs empty = 1)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

METRICS = ("dice", "iou", "sensitivity", "specificity")


def confusion(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-image TP, FP, FN, TN counts for boolean ``[B, ...]`` tensors."""
    pred, target = pred.flatten(1).bool(), target.flatten(1).bool()
    tp = (pred & target).sum(1).double()
    fp = (pred & ~target).sum(1).double()
    fn = (~pred & target).sum(1).double()
    tn = (~pred & ~target).sum(1).double()
    return tp, fp, fn, tn


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, with 0/0 = 1 (nothing to find and nothing found is a perfect score)."""
    return torch.where(den > 0, num / den.clamp_min(1), torch.ones_like(num))


def per_image_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Dice, IoU, sensitivity and specificity of each image in a batch of binary masks."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    tp, fp, fn, tn = confusion(pred, target)
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }


def binary_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """The four metrics of one pair of 2D binary masks (numpy)."""
    m = per_image_metrics(torch.from_numpy(np.asarray(pred) > 0)[None], torch.from_numpy(np.asarray(target) > 0)[None])
    return {k: float(v[0]) for k, v in m.items()}


def summarise(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over images, plus ``count``."""
    rows = list(rows)
    out: dict[str, float] = {"count": len(rows)}
    for key in METRICS:
        values = [r[key] for r in rows if key in r]
        out[f"mean_{key}"] = float(np.mean(values)) if values else float("nan")
    return out
