"""Metric edge cases of the evaluation protocol."""

import numpy as np
import pytest

from napari_medspike.engine.metrics import binary_metrics, summarise


def test_empty_prediction_on_empty_mask_scores_one():
    z = np.zeros((8, 8), bool)
    assert binary_metrics(z, z) == {"dice": 1.0, "iou": 1.0, "sensitivity": 1.0, "specificity": 1.0}


def test_missed_object_and_false_alarm():
    z, m = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    m[2:4, 2:4] = True
    missed = binary_metrics(z, m)
    assert missed["dice"] == 0 and missed["sensitivity"] == 0 and missed["specificity"] == 1
    alarm = binary_metrics(m, z)
    assert alarm["dice"] == 0 and alarm["specificity"] == pytest.approx(60 / 64)


def test_partial_overlap():
    p, m = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    p[0, :2] = True  # TP 1, FP 1
    m[0, 1:4] = True  # FN 2
    r = binary_metrics(p, m)
    assert r["dice"] == pytest.approx(2 / 5) and r["iou"] == pytest.approx(1 / 4)
    assert r["sensitivity"] == pytest.approx(1 / 3) and r["specificity"] == pytest.approx(12 / 13)


def test_summary_means_and_count():
    s = summarise([{"dice": 1.0, "iou": 1.0, "sensitivity": 1, "specificity": 1},
                   {"dice": 0.0, "iou": 0.0, "sensitivity": 0, "specificity": 1}])
    assert s["count"] == 2 and s["mean_dice"] == 0.5 and s["mean_specificity"] == 1.0


def test_gallery_never_shows_an_image_twice(tmp_path):
    import numpy as np

    from napari_medspike.cli.evaluate import write_gallery

    image, mask = np.zeros((8, 8, 3)), np.zeros((8, 8), bool)
    for n_rows in (1, 2, 3, 5, 9):
        rows = [{"key": f"k{i}", "dice": i / 10} for i in range(n_rows)]
        picks = write_gallery(rows, {r["key"]: (image, mask, mask) for r in rows}, tmp_path / f"g{n_rows}.png")
        keys = [key for _, key in picks]
        assert len(keys) == len(set(keys)) and (tmp_path / f"g{n_rows}.png").is_file()
        if n_rows >= 8:
            assert len(keys) == 8
