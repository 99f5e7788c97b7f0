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
    return metrics_from_counts(*confusion(pred, target))


def metrics_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor) -> dict[str, torch.Tensor]:
    """Dice, IoU, sensitivity and specificity from per-image confusion counts."""
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }


def binary_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """The four metrics of one pair of 2D binary masks (numpy), counted with one temporary
    boolean image (a 12k x 12k pair needs 144 MB more, not the gigabytes of integer sums)."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ")
    pred = pred if pred.dtype == np.bool_ else pred > 0
    target = target if target.dtype == np.bool_ else target > 0
    tp = np.count_nonzero(np.logical_and(pred, target))
    fp, fn = np.count_nonzero(pred) - tp, np.count_nonzero(target) - tp
    tn = pred.size - tp - fp - fn
    counts = torch.tensor([[tp, fp, fn, tn]], dtype=torch.float64).unbind(1)
    return {k: float(v[0]) for k, v in metrics_from_counts(*counts).items()}


def summarise(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over images, plus ``count``."""
    rows = list(rows)
    out: dict[str, float] = {"count": len(rows)}
    for key in METRICS:
        values = [r[key] for r in rows if key in r]
        out[f"mean_{key}"] = float(np.mean(values)) if values else float("nan")
    return out
