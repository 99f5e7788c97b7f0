"""training/mask_cleanup_eval.py's clean-up of a probability map (training/README.md, the default's table)."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "training" / "mask_cleanup_eval.py"
clean = runpy.run_path(str(SCRIPT))["clean"]


def probability_map() -> np.ndarray:
    """A large ring (a hole in the middle), a small blob and a faint region below 0.5."""
    prob = np.zeros((40, 40), np.float32)
    prob[5:25, 5:25] = 0.9
    prob[12:18, 12:18] = 0.1  # the hole
    prob[30:33, 30:33] = 0.8  # 9 px, under 10 % of the ring's 364
    prob[30:38, 5:15] = 0.45  # foreground only at threshold 0.4
    return prob


def test_threshold_alone_keeps_every_region_and_hole():
    prob = probability_map()
    assert clean(prob, 0.5, 0.0, False).sum() == 364 + 9
    assert clean(prob, 0.4, 0.0, False).sum() == 364 + 9 + 80


def test_small_regions_are_dropped_relative_to_the_largest_and_holes_filled():
    prob = probability_map()
    cleaned = clean(prob, 0.5, 0.1, False)
    assert cleaned.sum() == 364 and not cleaned[31, 31]
    filled = clean(prob, 0.5, 0.1, True)
    assert filled.sum() == 400 and filled[15, 15]
    largest = clean(prob, 0.4, 1.0, False)  # the ring (364 px) beats the faint region (80 px)
    assert largest.sum() == 364
