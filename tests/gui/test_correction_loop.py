"""The correction loop with two images open, as a user goes from one to the next: what is saved
is what was painted for that image, Segment never overwrites a mask it did not make, and the
re-segment after fine-tuning goes to the image it was started for, with Segment's settings."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QApplication

from napari_medspike.widgets.session import session_of

WAIT = 120_000  # ms


def _segment(qtbot, segment, layer):
    segment.image.value = layer
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    QApplication.processEvents()


def _two_images_segmented(plugin, qtbot, tmp_path):
    """The plugin's photo and a second image of the same size ("other"), each segmented, with
    the fine-tune dock storing in ``tmp_path``: ``viewer, segment, tune, photo, other``."""
    viewer, widgets, photo = plugin
    segment, tune = widgets["Segment"], widgets["Correct and fine-tune"]
    tune.store_dir.value = str(tmp_path / "store")
    other = viewer.add_image(np.roll(photo.data, 7, axis=0), name="other", rgb=True)
    _segment(qtbot, segment, photo)
    _segment(qtbot, segment, other)
    return viewer, segment, tune, photo, other


def test_a_mask_is_saved_only_with_its_own_image_and_the_dock_follows_the_mask_painted(plugin, qtbot, tmp_path, notes, save,
                                                                                      load):
    viewer, segment, tune, photo, other = _two_images_segmented(plugin, qtbot, tmp_path)
    photo_mask, other_mask = viewer.layers["photo mask"], viewer.layers["other mask"]
    for mask in (photo_mask, other_mask):
        mask.data[:] = 0
        mask.data[10:30, 20:50] = 1
    # selecting a mask in the layer list (as painting needs) makes it and its image the dock's
    viewer.layers.selection.active = photo_mask
    assert tune.mask.value is photo_mask and tune.image.value is photo
    # the model that made the mask is recorded, even when another is chosen by the time it is saved
    made_by = segment.checkpoint.value
    segment.model_choice.value = "default"
    first = save(tune)
    assert first is not None and first.provenance["labels_layer"] == "photo mask"
    assert first.provenance["model"] == str(made_by)
    # another image's mask with this image: refused, and this image's correction stays
    tune.mask.value = other_mask
    assert tune.image.value is photo and save(tune) is None
    assert any("'other mask' is the mask of 'other', not of 'photo'" in n for n in notes), notes
    assert [c.stem for c in tune.store.list()] == [first.stem]
    viewer.layers.selection.active = other_mask
    assert tune.image.value is other
    second = save(tune)
    assert second.provenance["image_layer"] == "other" and second.replaced == ()
    # Load selected points the dock at the correction it opens: edit it, save it, it is replaced
    tune.corrections.value = first.stem
    load(tune)
    assert tune.image.value.name == "photo (stored)" and tune.mask.value.name == "photo (stored) mask"
    tune.mask.value.data[0:5, 0:5] = 1
    third = save(tune)
    assert third.replaced == (first.stem,) and third.provenance["image_layer"] == "photo"  # its name kept
    assert sorted(c.stem for c in tune.store.list()) == sorted([second.stem, third.stem])


def test_segment_never_overwrites_a_mask_it_did_not_make_and_follows_the_image_scale(plugin, qtbot):
    viewer, widgets, photo = plugin
    segment = widgets["Segment"]
    # a mask saved earlier and opened from a file, under the name Segment would give its result
    opened = viewer.add_labels(np.zeros(photo.data.shape[:2], np.uint8), name="photo mask")
    opened.data[20:40, 20:40] = 1
    _segment(qtbot, segment, photo)
    assert viewer.layers["photo mask"] is opened and int(opened.data.sum()) == 400
    result = viewer.layers["photo mask [2]"]
    assert result.metadata["source_image"] == "photo"
    # its probabilities go by its number: those beside the kept mask are not replaced
    assert "photo probability [2]" in viewer.layers and "photo probability" not in viewer.layers
    # segmenting again updates that result, and puts it where the image now is
    photo.scale, photo.translate = (0.5, 0.25), (1.0, 2.0)
    _segment(qtbot, segment, photo)
    assert "photo mask [3]" not in viewer.layers
    for name in ("photo mask [2]", "photo probability [2]"):
        np.testing.assert_allclose(viewer.layers[name].scale, (0.5, 0.25))
        np.testing.assert_allclose(viewer.layers[name].translate, (1.0, 2.0))


def test_the_resegment_goes_to_the_image_fine_tuned_for_with_segments_settings(
        plugin, qtbot, tmp_path, store_corrections, fine_tune_improves):
    viewer, widgets, photo = plugin
    segment, tune = widgets["Segment"], widgets["Correct and fine-tune"]
    segment.mode.value, segment.flips.value = "tiled", True
    _segment(qtbot, segment, photo)
    mask = viewer.layers["photo mask"]
    store_corrections(viewer, tune, photo, tmp_path / "store", [(slice(10, 40), slice(20, 60))])
    tune.image.value, tune.mask.value = photo, mask
    tune.epochs.value = 1
    worker = tune.run()
    other = viewer.add_image(np.roll(photo.data, 5, axis=1), name="next", rgb=True)
    tune.image.value = other  # the user moves on to the next image while it trains
    with qtbot.waitSignal(worker.finished, timeout=WAIT):
        pass
    qtbot.waitUntil(lambda: tune.resegment_worker is None, timeout=WAIT)
    assert "next mask (fine-tuned)" not in viewer.layers
    tuned = viewer.layers["photo mask (fine-tuned)"]
    # the new mask is for comparing: the selection and the dock's mask stay as the user left them
    assert viewer.layers.selection.active is other and tune.mask.value is mask
    # Segment's settings came along, so correcting this mask and fine-tuning again repeats them
    assert tuned.metadata["segmented_with"] == {"mode": "tiled", "flips": True, "device": "cpu"}
    # and the user's mirror TTA choice in Segment survives the switch to the fine-tuned model
    assert session_of(viewer).source == segment.model_source() and segment.flips.value is True


def test_an_image_closed_during_the_fine_tune_gets_no_orphan_layers(plugin, qtbot, tmp_path, store_corrections,
                                                                    fine_tune_improves):
    viewer, widgets, photo = plugin
    tune = widgets["Correct and fine-tune"]
    mask = store_corrections(viewer, tune, photo, tmp_path / "store", [(slice(10, 40), slice(20, 60))])
    tune.image.value, tune.mask.value = photo, mask
    tune.epochs.value = 1
    worker = tune.run()
    viewer.layers.remove(photo)
    with qtbot.waitSignal(worker.finished, timeout=WAIT):
        pass
    qtbot.waitUntil(lambda: tune.resegment_worker is None, timeout=WAIT)
    assert not [layer.name for layer in viewer.layers if "fine-tuned" in layer.name]
    assert "'photo' was closed" in " ".join(tune.result.value.split())


def test_a_renamed_image_keeps_its_masks(plugin, qtbot, tmp_path, notes, save):
    viewer, segment, tune, photo, other = _two_images_segmented(plugin, qtbot, tmp_path)
    photo_mask, other_mask = viewer.layers["photo mask"], viewer.layers["other mask"]
    photo.name = "patient 12"  # renamed in the layer list after segmenting
    viewer.layers.selection.active = other_mask
    assert tune.image.value is other
    # selecting its mask still brings the renamed image into the dock
    viewer.layers.selection.active = photo_mask
    assert tune.mask.value is photo_mask and tune.image.value is photo
    # the other image (same size) with this mask: refused, naming the image by its new name
    tune.image.value = other
    assert save(tune) is None
    assert any("'photo mask' is the mask of 'patient 12', not of 'other'" in n for n in notes), notes
    assert tune.store.list() == []
    tune.image.value = photo
    saved = save(tune)
    assert saved is not None and saved.provenance["image_layer"] == "patient 12"
    # readying the mask to paint keeps it beside its image, and hides the other image's mask
    viewer.layers.selection.active = other_mask
    viewer.layers.selection.active = photo_mask
    tune._show_mask_for_editing()
    assert photo.visible and photo_mask.visible and not other_mask.visible


def test_a_folder_typed_with_a_tilde_is_the_home_folder_and_an_empty_box_is_refused(
        plugin, qtbot, tmp_path, monkeypatch, notes, save):
    """'~/corrections' typed in the box wrote a folder named '~' where napari started, and every
    fine-tune then failed to find its starting weights (the loader took '~' for the home folder);
    an emptied box stored the corrections in napari's working folder."""
    viewer, widgets, photo = plugin
    home, started_in = tmp_path / "home", tmp_path / "started here"
    home.mkdir(), started_in.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(started_in)
    tune = widgets["Correct and fine-tune"]
    mask = viewer.add_labels(np.zeros(photo.data.shape[:2], np.uint8), name="photo mask", scale=photo.scale,
                             translate=photo.translate)
    mask.data[10:30, 20:50] = 1
    tune.reset_choices()
    tune.image.value, tune.mask.value = photo, mask
    tune.store_dir.line_edit.value = ""  # as typed (magicgui's own value setter expands '~' itself)
    assert save(tune) is None and any("the corrections box is empty" in n for n in notes), notes
    tune.epochs.value = 1
    assert tune.run() is None
    assert not any(started_in.iterdir())
    tune.store_dir.line_edit.value = "~/corrections"
    entry = save(tune)
    assert entry is not None and entry.image.parent == home / "corrections" / "images"
    assert any(str(home / "corrections") in n for n in notes), notes  # where it is, in full
    with qtbot.waitSignal(tune.run().finished, timeout=WAIT):
        pass
    assert not any("failed" in n for n in notes), notes
    assert not any(started_in.iterdir())
    segment = widgets["Segment"]
    segment.folder_in.line_edit.value = "~/corrections/images"
    assert segment.output_folder() == home / "corrections" / "images-masks"


def test_the_models_mask_never_replaces_a_painted_correction_of_the_same_image(plugin, qtbot, tmp_path, save, notes):
    """Segmenting again after saving a painted correction made the new, unpainted mask the dock's
    mask; Save correction then replaced the painted correction with the model's mask."""
    import json

    viewer, widgets, image = plugin
    segment, tune = widgets["Segment"], widgets["Correct and fine-tune"]
    tune.store_dir.value = str(tmp_path / "store")
    with qtbot.waitSignal(segment.run().finished, timeout=120_000):
        pass
    painted = viewer.layers["photo mask"]
    painted.paint((20, 30), 0 if painted.data[20, 30] else 1)  # a brush stroke that changes the mask
    tune.reset_choices()
    tune.image.value, tune.mask.value = image, painted
    first = save(tune)
    assert first is not None and first.provenance["painted"] is True
    with qtbot.waitSignal(segment.run().finished, timeout=120_000):
        pass
    fresh = viewer.layers["photo mask [2]"]  # the painted mask is kept; the new one beside it
    viewer.layers.selection.active = fresh  # what Segment leaves selected: the dock follows it
    assert tune.mask.value is fresh
    assert save(tune) is None
    assert any("was painted by hand" in n and "Paint on this mask first" in n for n in notes), notes
    assert [entry.stem for entry in tune.store.list()] == [first.stem]
    fresh.paint((10, 10), 0 if fresh.data[10, 10] else 1)  # painted now: it replaces the earlier correction
    second = save(tune)
    assert second is not None and second.replaced == (first.stem,)
    assert json.loads((tmp_path / "store" / "provenance" / f"{second.stem}.json").read_text())["painted"] is True


def test_a_negative_label_is_foreground_as_napari_paints_it(plugin, qtbot, tmp_path, save):
    """napari paints negative label numbers in colour like any other; they were stored as background."""
    from napari_medspike.data.io import read_mask

    viewer, widgets, photo = plugin
    tune = widgets["Correct and fine-tune"]
    tune.store_dir.value = str(tmp_path / "store")
    labels = np.zeros(photo.data.shape[:2], np.int32)
    labels[5:15, 5:15] = 1
    labels[20:30, 5:15] = -3
    tune.reset_choices()
    tune.image.value = photo
    tune.mask.value = viewer.add_labels(labels, name="photo mask", scale=photo.scale)
    saved = save(tune)
    assert saved is not None and int(read_mask(saved.mask).sum()) == 200


def test_a_mask_given_new_data_from_the_console_is_kept_as_a_painted_one(plugin, qtbot):
    """Only napari's paint tools marked a mask as corrected: a mask set from the console (or by
    another plugin) was redrawn by the next threshold and replaced by the next segmentation."""
    viewer, widgets, photo = plugin
    segment = widgets["Segment"]
    _segment(qtbot, segment, photo)
    mask = viewer.layers["photo mask"]
    segment.threshold.value = 0.3  # Segment's own redraws do not count as edits
    qtbot.waitUntil(lambda: mask.metadata.get("threshold") == 0.3, timeout=5000)
    assert not mask.metadata.get("edited")
    edited = np.zeros_like(mask.data)
    edited[10:30, 10:40] = 1
    mask.data = edited
    segment.threshold.value = 0.7
    QApplication.processEvents()
    np.testing.assert_array_equal(mask.data, edited)
    _segment(qtbot, segment, photo)
    np.testing.assert_array_equal(viewer.layers["photo mask"].data, edited)
    assert "photo mask [2]" in viewer.layers


def test_a_16_bit_picture_saved_at_two_contrasts_is_one_correction(plugin, tmp_path, save):
    """Stored as napari shows it, the picture was known by the shown pixels: saved again after
    moving the contrast slider, it was kept twice (a split could put it on both sides)."""
    viewer, widgets, _ = plugin
    tune = widgets["Correct and fine-tune"]
    tune.store_dir.value = str(tmp_path / "store")
    scan = viewer.add_image((np.random.default_rng(4).random((48, 64)) * 1020 + 1000).astype(np.uint16), name="scan")
    labels = np.zeros((48, 64), np.uint8)
    labels[10:30, 10:40] = 1
    tune.reset_choices()
    tune.image.value = scan
    tune.mask.value = viewer.add_labels(labels, name="scan mask")
    first = save(tune)
    scan.contrast_limits = (1200, 1800)
    second = save(tune)
    assert second.replaced == (first.stem,) and [c.stem for c in tune.store.list()] == [second.stem]
