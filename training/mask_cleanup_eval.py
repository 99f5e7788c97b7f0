"""Does cleaning a predicted mask help? Dice of a model's masks on its validation images at the
original resolution, before and after simple clean-ups: another threshold, dropping regions
smaller than a fraction of the largest one, filling holes, moving edges towards the image's own
with a guided filter. It also prints how much of the error lies along the true outline: the Dice
the masks would score if every error within R pixels of it were forgiven.

    python training/mask_cleanup_eval.py default --data ../shared/data/kvasir-seg

The probabilities are computed once (mirror TTA as the model recommends, fp32) and every
clean-up is scored on them; the mean per-image change is printed beside each.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy import ndimage

from napari_medspike.cli.evaluate import select_subset
from napari_medspike.data.dataset import find_pairs, load_pair
from napari_medspike.data.io import to_rgb_float
from napari_medspike.engine.checkpoint import load_model
from napari_medspike.engine.metrics import binary_metrics
from napari_medspike.inference.predictor import predict, recommended_flips


def clean(prob: np.ndarray, threshold: float, min_fraction: float, fill: bool) -> np.ndarray:
    """``prob >= threshold``, without regions smaller than ``min_fraction`` of the largest, holes filled."""
    mask = prob >= threshold
    if min_fraction > 0:
        labels, n = ndimage.label(mask)
        if n > 1:
            sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
            mask = np.isin(labels, np.flatnonzero(sizes >= min_fraction * sizes.max()) + 1)
    return ndimage.binary_fill_holes(mask) if fill else mask


def guided_filter(guide: np.ndarray, prob: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter: ``prob`` smoothed within windows of ``2 radius + 1`` pixels,
    its edges pulled to those of the grey ``guide`` where the guide varies more than ``eps``."""
    def box(a: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(a, size=2 * radius + 1, mode="reflect")

    mean_g, mean_p = box(guide), box(prob)
    a = (box(guide * prob) - mean_g * mean_p) / (box(guide * guide) - mean_g * mean_g + eps)
    b = mean_p - a * mean_g
    return box(a) * guide + box(b)


def edge_forgiven(pred: np.ndarray, truth: np.ndarray, radius: int) -> np.ndarray:
    """``pred`` with every pixel within ``radius`` of ``truth``'s outline set to the truth."""
    band = ndimage.binary_dilation(truth, iterations=radius) & ~ndimage.binary_erosion(truth, iterations=radius)
    return np.where(band, truth, pred)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", help="split.json of a run (instead of the checkpoint's own record)")
    args = parser.parse_args()
    model = load_model(args.checkpoint)
    pairs = select_subset(find_pairs([args.data])[0], "val", model, args.split)
    flips = recommended_flips(model)
    cases = []
    for pair in pairs:
        image, mask = load_pair(pair, as_float=False)
        prob = predict(model, image, device=torch.device("cpu"), flips=flips, precision="fp32")
        guide = to_rgb_float(image).mean(axis=-1).astype(np.float32)
        cases.append((prob.astype(np.float32), np.asarray(mask) > 0, guide))

    def scored(make_mask) -> np.ndarray:  # per-image Dice of make_mask(prob, truth, guide)
        return np.array([binary_metrics(make_mask(p, m, g), m)["dice"] for p, m, g in cases])

    def report(label: str, d: np.ndarray) -> None:
        print(f"{label}  Dice {d.mean():.4f} ({(d - base).mean():+.4f}; "
              f"higher on {(d > base).sum()}, lower on {(d < base).sum()})")

    base = scored(lambda p, m, g: p >= 0.5)
    print(f"{len(cases)} images, flips {'on' if flips else 'off'}: Dice {base.mean():.4f} at threshold 0.5")
    for threshold in (0.4, 0.5, 0.6):
        for min_fraction in (0.0, 0.1, 0.5, 1.0):
            for fill in (False, True):
                kept = "all" if not min_fraction else "largest" if min_fraction == 1 else f">={min_fraction:.0%} of largest"
                report(f"threshold {threshold}  regions {kept:18} fill holes {fill!s:5}",
                       scored(lambda p, m, g: clean(p, threshold, min_fraction, fill)))
    for radius in (4, 8, 16):
        for eps in (1e-3, 1e-2, 1e-1):
            report(f"guided filter, radius {radius:2}, eps {eps:g}",
                   scored(lambda p, m, g: guided_filter(g, p, radius, eps) >= 0.5))
    for radius in (2, 4, 8):
        report(f"errors within {radius} px of the true outline forgiven (not a clean-up: where the errors lie)",
               scored(lambda p, m, g: edge_forgiven(p >= 0.5, m, radius)))

if __name__ == "__main__":
    main()
