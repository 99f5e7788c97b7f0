"""Per-image segmentation metrics (MODEL.md's protocol: threshold 0.5, empty vs empty = 1)."""

from __future__ import annotations

import warnings
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


#: Confidence level and bootstrap resamples of the intervals :func:`summarise` reports.
CONFIDENCE = 0.95
RESAMPLES = 2000
#: Largest set whose interval is bias-corrected (BCa); larger ones take plain percentiles.
BCA_MAX_VALUES = 2000
#: Values resampled at once (memory of a bootstrap batch: 8 bytes each).
BATCH_ELEMENTS = 4_000_000


def mean_interval(values: Iterable[float], level: float = CONFIDENCE, resamples: int = RESAMPLES,
                  seed: int = 0) -> tuple[float, float]:
    """Bootstrap confidence interval (BCa, seeded) of the mean of per-image ``values``.

    How far the mean could move on another draw of images like these: on 88 validation images
    a mean Dice is uncertain by several hundredths. One value says nothing of that, so fewer
    than two give NaN at both ends; values all equal give the mean itself at both ends."""
    from scipy.stats import bootstrap

    values = np.asarray(list(values), dtype=np.float64)
    if not 0 < level < 1:
        raise ValueError(f"a confidence level lies in (0, 1), got {level}")
    if values.size < 2:
        return float("nan"), float("nan")
    mean = float(values.mean())
    if np.ptp(values) == 0:
        return mean, mean
    # BCa corrects the skew of per-image scores; its jackknife costs n means of n values, so
    # large sets (where skew matters little) take percentiles; batches bound the memory
    methods = ("BCa", "percentile") if values.size <= BCA_MAX_VALUES else ("percentile",)
    batch = max(1, min(resamples, BATCH_ELEMENTS // values.size))
    with warnings.catch_warnings():  # BCa warns (and returns NaN) on data with few distinct values
        warnings.simplefilter("ignore")
        for method in methods:
            result = bootstrap((values,), np.mean, confidence_level=level, n_resamples=resamples, batch=batch,
                               method=method, vectorized=True, random_state=np.random.default_rng(seed))
            low, high = (float(v) for v in (result.confidence_interval.low, result.confidence_interval.high))
            if np.isfinite(low) and np.isfinite(high):
                return low, high
    return mean, mean


def summarise(rows: Iterable[dict[str, float]]) -> dict[str, float | list[float]]:
    """Mean of each metric over images, its 95 % bootstrap interval (``ci95_<metric>``, see
    :func:`mean_interval`), plus ``count``."""
    rows = list(rows)
    out: dict[str, float | list[float]] = {"count": len(rows)}
    for key in METRICS:
        values = [r[key] for r in rows if key in r]
        out[f"mean_{key}"] = float(np.mean(values)) if values else float("nan")
        out[f"ci95_{key}"] = list(mean_interval(values))
    return out


def paired_difference(rows: Iterable[dict], baseline: Iterable[dict], metric: str = "dice",
                      level: float = CONFIDENCE) -> dict[str, float | int | list[float]]:
    """Mean per-image difference ``rows - baseline`` of ``metric`` over the images (by ``key``)
    both evaluated, with its bootstrap interval (:func:`mean_interval` of the differences: a
    paired comparison, much tighter than comparing two means with their own intervals).

    Raises ``ValueError`` if the two share no image or lack ``metric``."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: one of {', '.join(METRICS)}")
    ours = {r["key"]: r for r in rows}
    theirs = {r["key"]: r for r in baseline}
    shared = [k for k in ours if k in theirs]
    if not shared:
        raise ValueError("the two evaluations share no image (compare evaluations of the same images)")
    try:
        diff = [float(ours[k][metric]) - float(theirs[k][metric]) for k in shared]
    except KeyError:
        raise ValueError(f"an evaluation row has no {metric!r}") from None
    low, high = mean_interval(diff, level)
    return {"images": len(shared), "mean_difference": float(np.mean(diff)), "interval": [low, high],
            "better": int(sum(d > 0 for d in diff)), "worse": int(sum(d < 0 for d in diff))}
