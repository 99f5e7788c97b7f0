"""Load and soak: many jobs in a row, and painting while a fine-tune runs."""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtWidgets import QApplication

WAIT = 120_000


def rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20


def test_two_hundred_segmentations_in_a_row_keep_memory_flat(plugin, qtbot):
    viewer, widgets, image = plugin
    segment = widgets["Segment"]
    samples = []
    for i in range(200):
        image.data = np.roll(image.data, 3, axis=1)  # a new frame each time
        with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
            pass
        if i % 20 == 19:
            QApplication.processEvents()
            samples.append(rss_mb())
    # the first rounds warm caches up; after that, nothing may accumulate per image
    print("RSS MB after every 20 segmentations:", [round(s) for s in samples])
    growth = max(samples[1:]) - samples[1]
    assert growth < 60, samples
    assert len([layer for layer in viewer.layers if layer.name.startswith("photo mask")]) == 1


def test_painting_while_a_finetune_runs_keeps_drafts_and_store_consistent(plugin, qtbot, tmp_path, monkeypatch, save):
    from napari_medspike.data.corrections import CorrectionStore, read_draft_names
    from napari_medspike.data.dataset import find_pairs
    from napari_medspike.data.io import read_mask
    from napari_medspike.widgets import masks

    monkeypatch.setattr(masks, "drafts_folder", lambda: tmp_path / "drafts")
    viewer, widgets, image = plugin
    with qtbot.waitSignal(widgets["Segment"].run().finished, timeout=WAIT):
        pass
    mask = viewer.layers["photo mask"]
    tune = widgets["Correct and fine-tune"]
    tune.store_dir.value = str(tmp_path / "store")
    tune.reset_choices()
    tune.image.value, tune.mask.value = image, mask
    for i in range(3):
        image.data = np.roll(image.data, 3, axis=1)  # three pictures (one correction per picture)
        mask.data[:] = 0
        mask.data[5 + 10 * i : 30 + 10 * i, 10:50] = 1
        save(tune)
    tune.epochs.value = 3
    worker = tune.run()
    strokes = 0
    while worker is not None and tune.worker is not None and strokes < 40:
        mask.paint((10 + strokes % 50, 10 + (7 * strokes) % 70), strokes % 2)
        strokes += 1
        QApplication.processEvents()
        time.sleep(0.05)
    # the dock clears tune.worker when the job has finished (waiting for the `finished` signal
    # here could miss one emitted just before the wait began)
    qtbot.waitUntil(lambda: tune.worker is None, timeout=WAIT)
    qtbot.waitUntil(lambda: tune.resegment_worker is None, timeout=WAIT)
    # the last strokes reach the draft, and the draft is the layer as painted
    mask.paint((1, 1), 1)
    qtbot.waitUntil(lambda: "photo mask" in read_draft_names(tmp_path / "drafts"), timeout=10_000)
    qtbot.wait(2000)
    np.testing.assert_array_equal(read_mask(read_draft_names(tmp_path / "drafts")["photo mask"]), mask.data > 0)
    # the store lists exactly what training would use, and still holds the three corrections
    store = CorrectionStore(tmp_path / "store")
    listed = sorted(c.stem for c in store.list())
    pairs, _ = find_pairs([tmp_path / "store"])
    assert len(listed) == 3 and sorted(p.image.stem for p in pairs) == listed
