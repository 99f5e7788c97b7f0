"""training/mask_cleanup_eval.py's clean-up of a probability map (training/README.md, the default's table)."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "training" / "mask_cleanup_eval.py"
SCRIPT_GLOBALS = runpy.run_path(str(SCRIPT))
clean, guided_filter, edge_forgiven = (SCRIPT_GLOBALS[name] for name in ("clean", "guided_filter", "edge_forgiven"))


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


def test_guided_filter_pulls_a_blurred_edge_to_the_image_edge():
    guide = np.zeros((32, 32), np.float32)
    guide[:, 10:] = 1.0  # the image's edge: between columns 9 and 10
    prob = np.clip((np.arange(32, dtype=np.float32) - 11.5) / 6 + 0.5, 0, 1)[None].repeat(32, 0)  # 0.5 at 11.5
    before = int((prob[16] >= 0.5).argmax())
    after = int((guided_filter(guide, prob, 4, 1e-3)[16] >= 0.5).argmax())
    assert before == 12 and after == 10
    flat = guided_filter(np.full_like(guide, 0.5), prob, 2, 1e-3)  # no edge to follow: a plain blur
    assert int((flat[16] >= 0.5).argmax()) == before


def test_edge_forgiven_clears_errors_near_the_outline_only():
    truth = np.zeros((40, 40), bool)
    truth[10:30, 10:30] = True
    pred = np.roll(truth, 1, axis=1)  # one pixel off
    pred[2, 2] = True  # a speck far from the outline
    forgiven = edge_forgiven(pred, truth, 2)
    assert (forgiven ^ truth).sum() == 1 and forgiven[2, 2]
