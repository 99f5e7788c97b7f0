"""The plugin as people use it: a fine-tuned model that stays, a canvas that stays, legible maps."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import QApplication, QPushButton

from napari_medspike import create_model, load_model, save_checkpoint
from napari_medspike.widgets.layers import MAP_TAG
from napari_medspike.widgets.masks import mask_look
from napari_medspike.widgets.session import session_of
from napari_medspike.widgets.inspector import viewer_grid

WAIT = 120_000  # ms


def text(label) -> str:
    """A label's text with the dock's line wrapping undone."""
    return " ".join(str(label.value).split())


def settle(seconds: float = 0.3) -> None:
    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def test_a_finetuned_model_is_offered_stays_selected_and_is_used(plugin, qtbot, tmp_path):
    viewer, widgets, _ = plugin
    segment = widgets["Segment"]
    tuned_path = tmp_path / "models" / "finetuned_20261125-101112.safetensors"
    tuned = create_model("medspikeformer", widths=(8, 16, 32, 64), timesteps=2)
    save_checkpoint(tuned, tuned_path, input_size=64)
    session_of(viewer).set(load_model(tuned_path), str(tuned_path))  # what the fine-tune dock does at the end
    assert str(tuned_path) in segment.model_choice.choices
    assert segment.model_choice.value == str(tuned_path)
    combo = segment.model_choice.native
    assert combo.itemText(combo.currentIndex()) == "fine-tuned 10:11:12 (2026-11-25)"
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    assert session_of(viewer).source == str(tuned_path)  # Segment did not switch back to the default
    assert segment.model_choice.value == str(tuned_path)
    assert "current:" not in text(segment.card) and str(tuned_path) == segment.card.tooltip
    # the inspector names the same model
    assert "fine-tuned 10:11:12" in text(widgets["Spike inspector"].model_note)


def test_a_closed_dock_is_unsubscribed_and_changing_model_works(plugin, qtbot, tmp_path, notes):
    import gc


    from napari_medspike.widgets import SegmentWidget

    viewer, widgets, _ = plugin
    before = len(session_of(viewer)._listeners)
    extra = SegmentWidget(viewer)
    assert len(session_of(viewer)._listeners) == before + 1
    extra.native.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    del extra
    gc.collect()
    session_of(viewer).set(session_of(viewer).get(), session_of(viewer).source)  # a notification drops listeners that are gone
    assert len(session_of(viewer)._listeners) == before
    other = save_checkpoint(create_model("medqkformer", widths=(8, 16, 32, 64)), tmp_path / "o.safetensors",
                            input_size=32)
    widgets["Segment"].checkpoint.value = str(other)
    assert session_of(viewer).model.arch == "medqkformer" and not any("rror" in n for n in notes)
    assert "medqkformer" in text(widgets["Spike inspector"].model_note)


def test_stored_corrections_stay_listed(plugin, tmp_path, save, load):
    viewer, widgets, image = plugin
    tune = widgets["Correct and fine-tune"]
    tune.store_dir.value = str(tmp_path / "store")
    mask = viewer.add_labels(np.zeros((70, 90), np.uint8), name="photo mask")
    mask.data[10:30, 20:50] = 1
    tune.reset_choices()
    tune.image.value, tune.mask.value = image, mask
    entry = save(tune)
    assert tune.corrections.choices == (entry.stem,)
    viewer.add_image(np.zeros((5, 5)), name="another")  # any layer change re-lists the store
    viewer.layers.remove("another")
    assert tune.corrections.choices == (entry.stem,)
    listed = tune.corrections.native  # a long name: cut in the list, whole in its tooltip, no sideways scrolling
    assert listed.item(0).toolTip() == listed.item(0).text() and listed.item(0).text().startswith("photo")
    assert listed.horizontalScrollBarPolicy() == Qt.ScrollBarPolicy.ScrollBarAlwaysOff
    tune.corrections.value = entry.stem
    assert tune.load_selected() is not None and "photo (stored)" not in viewer.layers  # read in a worker ...
    assert tune.load_selected() is None  # (one at a time)
    while tune.load_worker is not None:
        QApplication.processEvents()
    assert viewer.layers["photo (stored)"].data.dtype == np.uint8  # ... as stored, not as float32 (4x the memory)
    # a name in another script survives opening and saving again (the file name is its ASCII form)
    image.name = "Läsion Mücke"
    tune.reset_choices()
    tune.image.value, tune.mask.value = image, mask
    mask.data[0:5, 0:5] = 1
    named = save(tune)
    tune.corrections.value = named.stem
    load(tune)
    assert tune.image.value.name == "Läsion Mücke (stored)"
    again = save(tune)
    assert again.provenance["image_layer"] == "Läsion Mücke" and again.replaced == (named.stem,)
    assert tune.corrections.native.item(0).text().startswith("Läsion Mücke · ")


def test_one_correction_gives_a_number_and_says_on_what(plugin, qtbot, tmp_path, store_corrections,
                                                       fine_tune_improves):
    viewer, widgets, image = plugin
    tune = widgets["Correct and fine-tune"]
    store_corrections(viewer, tune, image, tmp_path / "store", [(slice(10, 40), slice(20, 60))])
    tune.epochs.value = 1
    with qtbot.waitSignal(tune.run().finished, timeout=WAIT):
        pass
    qtbot.waitUntil(lambda: tune.resegment_worker is None, timeout=WAIT)  # segmented again with the new model
    assert "photo mask (fine-tuned)" in viewer.layers
    shown = text(tune.result)
    assert "nan" not in shown.lower() and "corrected image itself" in shown
    card = session_of(viewer).source.replace(".safetensors", ".md")
    card_text = open(card).read()
    assert "nan" not in card_text.lower() and "training images (nothing held out)" in card_text


def tab_titles(window) -> list[str]:
    """The titles on the window's visible row of dock tabs."""
    from qtpy.QtWidgets import QTabBar

    bars = [bar for bar in window.findChildren(QTabBar) if bar.isVisible() and bar.count()]
    assert len(bars) == 1, [[bar.tabText(i) for i in range(bar.count())] for bar in bars]
    return [bars[0].tabText(i) for i in range(bars[0].count())]


def test_docks_opened_one_by_one_from_the_plugins_menu_become_tabs(make_napari_viewer, qtbot):
    """Opened one after another from the Plugins menu (no ``tabify``), the docks were stacked in
    one column, each a third of its height: Segment showed two fields at 1280x800. Each dock
    of this plugin now joins the others' tab group, in front; one closed and opened again too."""
    from napari_medspike.demo import plugin_dock

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 800)
    names = ("Segment", "Spike inspector", "Correct and fine-tune")
    for i, name in enumerate(names):
        viewer.window.add_plugin_dock_widget("napari-medspike", name)  # what the menu entry does
        dock = plugin_dock(viewer, name)
        # in the others' tab group, in front (Qt makes and lays out tabs a few turns later)
        qtbot.waitUntil(lambda: len(window.tabifiedDockWidgets(dock)) == i and not dock.visibleRegion().isEmpty(),
                        timeout=5000)
    docks = [plugin_dock(viewer, name) for name in names]
    assert set(window.tabifiedDockWidgets(docks[0])) == set(docks[1:])
    assert tab_titles(window) == [f"{name} (napari-medspike)" for name in names]  # in the order opened
    # (a dock behind another tab stays "visible" to Qt, with nothing of it on screen)
    assert [dock.visibleRegion().isEmpty() for dock in docks] == [True, True, False]
    area = docks[2].widget()  # the plugin's scroll area: the whole column, not a third of it
    qtbot.waitUntil(lambda: area.viewport().height() > 0.6 * window.height(), timeout=5000)
    inspector = docks[1].widget()
    viewer.window.remove_dock_widget(docks[1])  # the inspector's ✕, then the menu entry again
    inspector.deleteLater()  # (what napari's event loop does with a closed dock's contents)
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    settle(0.2)
    viewer.window.add_plugin_dock_widget("napari-medspike", names[1])
    again = plugin_dock(viewer, names[1])
    qtbot.waitUntil(lambda: again in window.tabifiedDockWidgets(docks[0]) and not again.visibleRegion().isEmpty(),
                    timeout=5000)


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)])
def test_the_canvas_keeps_room_and_every_button_can_be_reached(make_napari_viewer, size):
    from napari_medspike.demo import open_plugin, plugin_dock

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(*size)
    settle()
    widgets = open_plugin(viewer, "synthetic")
    settle(0.5)
    assert tab_titles(window) == [f"{name} (napari-medspike)" for name in widgets]  # the loop's order
    canvas = viewer.window._qt_viewer.canvas.native
    assert canvas.width() >= 0.55 * window.width(), (canvas.width(), window.width())
    for name, widget in widgets.items():
        dock = plugin_dock(viewer, name)
        dock.raise_()
        settle(0.2)
        scroll = widget.native  # the scroll area napari docks
        assert dock.isVisible() and scroll.viewport().height() > 100
        for button in widget.inner.findChildren(QPushButton):
            if not button.isVisibleTo(widget.inner):
                continue
            scroll.ensureWidgetVisible(button)
            settle(0.05)
            top_left = button.mapTo(scroll.viewport(), button.rect().topLeft())
            bottom_right = button.mapTo(scroll.viewport(), button.rect().bottomRight())
            viewport = scroll.viewport().rect()
            assert viewport.contains(top_left) and viewport.contains(bottom_right), (name, button.text())


def test_inspector_grid_names_time_axis_and_recorded_spikes(plugin, qtbot):
    viewer, widgets, image = plugin
    inspector = widgets["Spike inspector"]
    assert inspector.spikes.choices == ("q", "k", "v")  # what MedSpikeFormer records
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
        pass
    assert viewer_grid(viewer).enabled
    assert viewer.layers.selection.active.name == "spikes v (stage 0, t)"  # not the hidden firing-rate layer
    shown = ["photo", "spikes v (stage 0, t)", "AA (stage 0)", "AI (stage 0)", "IA (stage 0)", "II (stage 0)"]
    for name in shown:
        layer = viewer.layers[name]
        assert layer.visible and layer.name_overlay.visible and layer.opacity == 1.0
    assert not viewer.layers["photo mask"].visible if "photo mask" in viewer.layers else True
    maps = [viewer.layers[n] for n in shown[2:]]
    assert len({layer.colormap.name for layer in maps}) == 1  # one colormap for the four interactions
    # each map in its own range, so each says in a colour bar what its colours stand for
    assert all(viewer.layers[n].colorbar.visible for n in shown[1:]) and not viewer.layers["photo"].colorbar.visible
    assert viewer.dims.axis_labels[0] == "t"
    summary = text(inspector.summary)
    assert "T = 2 timesteps" in summary and "t slider" in summary
    assert "active or inactive Q" in summary and "inactive" in inspector.run_button.tooltip
    lines = inspector.plot.figure.axes[0].get_lines()
    assert lines and len(lines[0].get_xdata()) == 2  # firing rate per timestep, per part of the network
    per_layer = inspector.plot.figure.axes[1]  # layers numbered 1..n, as its label says, on whole ticks
    rows = per_layer.images[0].get_array().shape[0]
    assert per_layer.get_ylabel() == f"layer 1-{rows}" and per_layer.images[0].get_extent()[2:] == [rows + 0.5, 0.5]
    assert all(float(tick).is_integer() for tick in per_layer.get_yticks())
    spikes = viewer.layers["spikes v (stage 0, t)"]
    assert spikes.colormap.name == "gray"
    inspector.view.value = "overlay"
    assert not viewer_grid(viewer).enabled
    assert spikes.visible and not viewer.layers["AA (stage 0)"].visible
    assert not any(viewer.layers[n].colorbar.visible for n in shown)  # (they would pile up in one corner)
    # over the image the spikes add light where they fire (not a grey veil over the whole picture)
    assert (spikes.blending, spikes.opacity, spikes.colormap.name) == ("additive", 1.0, "inferno")
    lo, hi = spikes.contrast_limits  # from the median (adds nothing) to the most firing
    assert hi == pytest.approx(max(float(spikes.data.max()), 1e-6))
    assert lo == pytest.approx(min(float(np.median(spikes.data)), 0.99 * hi))
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):  # a new inspection keeps the overlay's look
        pass
    assert (spikes.blending, spikes.colormap.name) == ("additive", "inferno") and not viewer_grid(viewer).enabled
    inspector.view.value = "side by side"
    assert (spikes.blending, spikes.opacity, spikes.colormap.name) == ("translucent", 1.0, "gray")
    assert spikes.contrast_limits[0] == 0.0
    # the image renamed in the layer list is still the inspected image: in the grid, and under
    # the spikes alone in the overlay (it was hidden, and AA drawn over it)
    photo = viewer.layers["photo"]
    photo.name = "patient 12"
    inspector.view.value = "overlay"
    assert photo.visible and spikes.visible and not viewer.layers["AA (stage 0)"].visible
    inspector.view.value = "side by side"
    assert photo.visible and photo.name_overlay.visible and viewer_grid(viewer).enabled


def test_integer_spikes_shown_as_virtual_timesteps(plugin, qtbot, tmp_path):
    viewer, widgets, _ = plugin
    qk = save_checkpoint(create_model("medqkformer", widths=(8, 16, 32, 64)), tmp_path / "qk.safetensors",
                         input_size=32)
    widgets["Segment"].checkpoint.value = str(qk)
    inspector = widgets["Spike inspector"]
    assert inspector.spikes.choices == ("q", "k")  # MedQKFormer records no v: not offered
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
        pass
    spikes = viewer.layers["spikes q (stage 0, virtual t)"]
    assert spikes.data.shape[0] == 4  # D = 4 virtual timesteps
    assert viewer.layers["AA (stage 0)"].data.ndim == 2  # its interactions have no time axis
    assert "4 virtual timesteps" in text(inspector.summary)
    # sum, shares and φ describe SDSA; MedQKFormer keeps its four maps and the dock says why
    inspector.interactions.value = "sum, shares, φ"
    assert "sum (stage 0)" not in viewer.layers and viewer.layers["AA (stage 0)"].visible
    assert "is for SDSA (MedSpikeFormer)" in text(inspector.summary)


def test_masks_are_drawn_in_a_contrasting_colour_the_user_can_change(plugin, qtbot):
    viewer, widgets, _ = plugin
    segment = widgets["Segment"]
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    mask = viewer.layers["photo mask"]
    assert mask.contour == 2
    # how it was made, for the re-segment after fine-tuning to repeat
    assert mask.metadata["segmented_with"] == {"mode": segment.mode.value, "flips": bool(segment.flips.value),
                                               "device": "cpu"}
    np.testing.assert_allclose(mask.colormap.map(np.array([1]))[0], [0, 1, 1, 1])  # cyan outline
    # any label a user paints with (M picks a new one) is foreground and drawn so, 0 stays clear
    np.testing.assert_allclose(mask.colormap.map(np.array([0, 2, 7])), [[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 1, 1]])
    segment.mask_colour.value = "yellow"
    segment.mask_style.value = "filled"
    assert mask.contour == 0
    np.testing.assert_allclose(mask.colormap.map(np.array([1]))[0], [1, 1, 0, 1])


@pytest.mark.parametrize("job", ["Segment", "Spike inspector", "Correct and fine-tune"])
def test_the_event_loop_never_waits_long_while_a_job_runs(plugin, qtbot, job, tmp_path, store_corrections):
    viewer, widgets, image = plugin
    gaps, last = [], [time.perf_counter(), False]
    worker = None

    def tick() -> None:
        # a gap counts when the job ran at both of its ends: adding the result layers happens on
        # the GUI thread after the job and may take longer; while the job runs the loop must
        # stay responsive
        now, running = time.perf_counter(), worker is not None and worker.is_running
        if running and last[1]:
            gaps.append(now - last[0])
        last[:] = [now, running]

    if job == "Segment":  # one small image takes a few ms: segment a stack, slice by slice
        frames = (np.random.default_rng(1).random((24, 70, 90, 3)) * 255).astype(np.uint8)
        widgets[job].image.value = viewer.add_image(frames, name="frames", rgb=True)
    if job == "Correct and fine-tune":
        tune = widgets[job]
        store_corrections(viewer, tune, image, tmp_path / "store",
                          [(slice(10, 40), slice(20, 60)), (slice(30, 60), slice(20, 60))])
        tune.epochs.value = 2
    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(5)
    worker = widgets[job].run()
    with qtbot.waitSignal(worker.finished, timeout=WAIT):
        pass
    settle(0.2)
    timer.stop()
    assert len(gaps) > 5, gaps
    p99 = sorted(gaps)[int(0.99 * (len(gaps) - 1))]
    print(f"{job}: {len(gaps)} gaps while the job ran, 99th percentile {p99 * 1e3:.0f} ms, "
          f"longest {max(gaps) * 1e3:.0f} ms")
    assert p99 < 0.1, sorted(gaps)[-5:]


def test_segment_warns_when_resize_mode_would_squeeze_an_image_out_of_shape(plugin, qtbot, notes):
    viewer, widgets, _ = plugin
    segment = widgets["Segment"]
    strip = viewer.add_image(np.zeros((40, 200), np.uint8), name="strip")
    segment.reset_choices()
    segment.image.value = strip
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    assert any(n.startswith("a 40 x 200 image is squeezed into a square") for n in notes), notes


def test_segmenting_again_redraws_only_what_changed_and_keeps_the_docks_mask_look(plugin, qtbot):
    """Segmenting an image again set its layers' scale, translate, rotate, shear and affine even
    when unchanged, each a redraw with the outline worked out again (2.2 s on the GUI thread for a
    12-megapixel image; benchmarks/resegment_gui_time.py: 2.5 s before, 0.5 s after). Its mask
    also kept its old look while the dock's boxes showed another."""
    viewer, widgets, photo = plugin
    segment = widgets["Segment"]
    other = viewer.add_image(np.roll(photo.data, 5, axis=0), name="other", rgb=True)

    def run(layer):
        segment.reset_choices()
        segment.image.value = layer
        with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
            pass

    run(photo)
    mask = viewer.layers["photo mask"]
    redraws = []
    for name in ("scale", "translate", "rotate", "shear", "affine", "units"):
        getattr(mask.events, name).connect(lambda e, name=name: redraws.append(name))
    run(other)
    segment.mask_style.value, segment.mask_colour.value = "filled", "magenta"  # (applied to 'other mask')
    run(photo)
    assert redraws == []
    assert mask_look(viewer.layers["photo mask"]) == ("magenta", "filled") == mask_look(viewer.layers["other mask"])


def test_areas_are_in_one_unit_when_the_axes_have_two():
    """Rows in mm and columns in µm: the area was called mm² and came out 1000 times too large."""
    from napari.layers import Image

    from napari_medspike.widgets.segment import layer_spacing

    assert layer_spacing(Image(np.zeros((4, 4)), scale=(0.001, 1), units=("mm", "um"))) == ((0.001, 0.001), "millimeter²")
    assert layer_spacing(Image(np.zeros((4, 4)), scale=(0.5, 0.25), units=("um", "um"))) == ((0.5, 0.25), "micrometer²")
    assert layer_spacing(Image(np.zeros((4, 4)), scale=(2, 3)))[1] == "scale units²"
    assert layer_spacing(Image(np.zeros((4, 4))))[1] == "px²"


def test_small_areas_show_in_the_table_and_a_failed_export_is_said(plugin, tmp_path, notes):
    """The table rounded to three decimals: a 2233-pixel region of 1.4e-4 mm² showed 0.0. A CSV
    that could not be written raised through napari's generic 'error in a callback'."""
    _, widgets, _ = plugin
    segment = widgets["Segment"]
    segment.measurements = [{"image": "photo", "slice": 0, "region": 1, "area_px": 2233, "area": 1.3956e-4,
                             "area_unit": "mm²", "mean_probability": 0.87269, "centroid_y": 10.0, "centroid_x": 12.0}]
    segment._show_measurements("mm²", 1)
    assert segment.table.data[0] == [2233, 0.0001396, 0.8727]
    (tmp_path / "a file").write_text("")
    assert segment.export_measurements(tmp_path / "a file" / "m.csv") is None
    assert any(n.startswith("measurements not written: ") for n in notes), notes


def test_a_stack_is_segmented_into_a_labels_stack_with_measurements(plugin, qtbot, tmp_path):
    import csv

    from napari_medspike.data.synthetic import synthetic_lesion

    viewer, widgets, _ = plugin
    frames = np.stack([synthetic_lesion((40, 48), seed=i)[0] for i in range(3)])
    video = viewer.add_image(frames, name="video", rgb=True, scale=(1.0, 0.5, 0.5))
    segment = widgets["Segment"]
    segment.reset_choices()
    segment.image.value = video
    segment.threshold.value = 0.3
    worker = segment.run()
    steps = []
    worker.yielded.connect(lambda e: steps.append(getattr(e, "done", None)))
    with qtbot.waitSignal(worker.finished, timeout=WAIT):
        pass
    mask = viewer.layers["video mask"]
    assert mask.data.shape == (3, 40, 48) and tuple(mask.scale) == (1.0, 0.5, 0.5)
    assert steps[-1] == 3  # progress per image
    assert "3 images" in text(segment.status)
    rows = segment.measurements
    assert mask.metadata["measurements"] == rows
    if rows:
        assert {r["slice"] for r in rows} <= {0, 1, 2} and rows[0]["area"] == pytest.approx(rows[0]["area_px"] * 0.25)
    # scaled but without units: the area in the layer's scale, not called px² (it was, in the CSV)
    assert "area" in segment.table.column_headers and rows and rows[0]["area_unit"] == "scale units²"
    # each row headed by its region's number (from 1, per slice), not by Qt's count from 0 beside it
    assert [str(h) for h in segment.table.row_headers] == [str(r["region"]) for r in rows]
    assert "region" not in segment.table.column_headers and rows and rows[0]["region"] == 1
    written = segment.export_measurements(tmp_path / "m.csv")
    with written.open() as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert not segment.table.native.isHidden() and "region" in text(segment.table_note)


def test_measurements_follow_the_mask_as_painted(plugin, qtbot, tmp_path):
    """A researcher corrects the mask, then exports its areas: the table and the CSV are those of
    the corrected mask, not of the model's."""
    import csv

    viewer, widgets, image = plugin
    segment = widgets["Segment"]
    segment.threshold.value = 0.05  # the tiny model's mask: most of the picture
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    mask = viewer.layers["photo mask"]
    before = int((mask.data > 0).sum())
    assert sum(r["area_px"] for r in segment.measurements) == before > 0
    mask.paint((35, 45), 0, refresh=True)  # an eraser stroke, as the brush makes it (brush size 10)
    painted = int((mask.data > 0).sum())
    assert painted < before
    qtbot.waitUntil(lambda: sum(r["area_px"] for r in segment.measurements) == painted, timeout=5000)
    assert f"{painted} px" in text(segment.table_note)
    mask.data[:] = 0  # a change without a paint event: the export measures the mask as it is
    mask.data[5:15, 5:25] = 1
    with segment.export_measurements(tmp_path / "m.csv").open(encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["area_px"]) for r in rows] == [200]
    # once another image is segmented, painting this mask no longer measures the new one again
    other = viewer.add_image(np.roll(image.data, 9, axis=1), name="other", rgb=True)
    segment.image.value = other
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    mask.paint((10, 10), 1, refresh=True)
    assert not segment._remeasure_timer.isActive()
    viewer.layers["other mask"].paint((10, 10), 0, refresh=True)
    assert segment._remeasure_timer.isActive()


def test_the_threshold_slider_redraws_the_last_mask_but_never_a_painted_one(plugin, qtbot):
    """Moving the threshold after segmenting redraws the mask from its probabilities and its
    measurements follow; once the mask has corrections, it stays as painted."""
    viewer, widgets, _ = plugin
    segment = widgets["Segment"]
    segment.threshold.value = 0.5
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    mask, prob = viewer.layers["photo mask"], viewer.layers["photo probability"].data
    # a slider position that changes the tiny model's mask, and back
    steps = [round(t, 2) for t in np.arange(0.05, 0.951, 0.05)]
    counts = {t: int((prob >= t).sum()) for t in steps}
    other = next(t for t in steps[::-1] if counts[t] != counts[0.5])
    for threshold in (other, 0.5):
        expected = counts[threshold]
        assert expected != int((mask.data > 0).sum())
        segment.threshold.value = threshold
        qtbot.waitUntil(lambda: sum(r["area_px"] for r in segment.measurements) == expected, timeout=5000)
        assert int((mask.data > 0).sum()) == expected and mask.metadata["threshold"] == threshold
        assert f"threshold {threshold:.2f}" in text(segment.status)
    worker = segment.run()  # moved while segmenting: the new mask is drawn at the slider's value
    segment.threshold.value = other
    with qtbot.waitSignal(worker.finished, timeout=WAIT):
        pass
    assert int((mask.data > 0).sum()) == counts[other] and mask.metadata["threshold"] == other
    qtbot.waitUntil(lambda: sum(r["area_px"] for r in segment.measurements) == counts[other], timeout=5000)
    segment.threshold.value = 0.5
    qtbot.waitUntil(lambda: int((mask.data > 0).sum()) == counts[0.5], timeout=5000)
    mask.paint((35, 45), 0, refresh=True)  # an eraser stroke (at 0.5 the tiny model's mask is all foreground)
    painted = mask.data.copy()
    assert mask.metadata.get("edited")
    segment.threshold.value = 0.95
    qtbot.waitUntil(lambda: "stays as painted" in text(segment.status), timeout=5000)
    np.testing.assert_array_equal(mask.data, painted)


def test_results_lie_on_the_image_with_its_units_and_rotation_and_a_failure_shows_in_the_dock(plugin, qtbot, notes):
    viewer, widgets, _ = plugin
    segment = widgets["Segment"]
    grey = (np.random.default_rng(2).random((50, 60)) * 255).astype(np.uint8)
    turned = viewer.add_image(grey, name="turned", scale=(0.5, 0.5), rotate=30, units=("mm", "mm"))
    segment.reset_choices()
    segment.image.value = turned
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    for layer in (viewer.layers["turned mask"], viewer.layers["turned probability"]):
        np.testing.assert_allclose(layer.rotate, turned.rotate)
        assert tuple(str(u) for u in layer.units) == ("millimeter", "millimeter")
    assert "area" in segment.table.column_headers  # in mm², beside the pixel count
    # the inspector's maps lie on it too (they kept only its scale and translate: beside it)
    inspector = widgets["Spike inspector"]
    inspector.reset_choices()
    inspector.image.value = turned
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
        pass
    qtbot.waitUntil(lambda: any(la.metadata.get(MAP_TAG) for la in viewer.layers), timeout=WAIT)

    def world_corners(layer):
        h, w = layer.data.shape[-2:]
        lead = [0.0] * (layer.ndim - 2)
        return np.array([layer.data_to_world([*lead, y, x])[-2:]
                         for y, x in ((-0.5, -0.5), (-0.5, w - 0.5), (h - 0.5, -0.5), (h - 0.5, w - 0.5))])

    for layer in [la for la in viewer.layers if la.metadata.get(MAP_TAG)]:
        np.testing.assert_allclose(world_corners(layer), world_corners(turned), atol=0.05, err_msg=layer.name)
    # a job that fails says so in the dock's status line too, not only in a notification
    broken = grey.astype(np.float32)
    broken[3, 4] = np.nan
    segment.image.value = viewer.add_image(broken, name="broken")
    segment.run()  # fails within milliseconds: wait for the dock, not for a signal maybe already sent
    qtbot.waitUntil(lambda: "failed" in text(segment.status) and segment.run_button.enabled, timeout=WAIT)
    assert "failed" in text(segment.status) and "NaN" in text(segment.status)
    assert "segmenting 'broken'…" not in text(segment.status) and segment.run_button.enabled


def test_a_16_bit_image_is_segmented_as_napari_shows_it(plugin, qtbot):
    """A 16-bit scan whose values lie between 1000 and 2020 looked right in napari (its contrast
    limits) but was scaled from 0 for the model: washed out, and its mask came out empty."""
    viewer, widgets, _ = plugin
    segment, inspector = widgets["Segment"], widgets["Spike inspector"]
    grey = (np.random.default_rng(5).random((60, 80)) * 255).astype(np.uint8)
    grey[20:40, 30:60] = 250
    results = {}
    for name, pixels, limits in (("eight", grey, None), ("deep", grey.astype(np.uint16) * 4 + 1000, (1000, 2020))):
        layer = viewer.add_image(pixels, name=name, contrast_limits=limits)
        for dock in (segment, inspector):
            dock.reset_choices()
            dock.image.value = layer
        with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
            pass
        with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
            pass
        qtbot.waitUntil(lambda: (inspector._figures or {}).get("image") == name,
                        timeout=WAIT)
        spikes = next(la for la in viewer.layers if la.metadata.get(MAP_TAG) == 1)
        results[name] = viewer.layers[f"{name} probability"].data.copy(), spikes.data.copy()
    np.testing.assert_allclose(results["deep"][0], results["eight"][0], atol=1e-5)  # the same picture to the model
    np.testing.assert_array_equal(results["deep"][1], results["eight"][1])
    assert "contrast 1000–2020" in " ".join(segment.status.value.split())


def test_a_colour_image_napari_shows_as_slices_is_refused_with_what_to_do(plugin, qtbot, notes):
    viewer, widgets, _ = plugin
    colour = (np.random.default_rng(3).random((64, 80, 3)) * 255).astype(np.uint8)
    sliced = viewer.add_image(colour, name="sliced", rgb=False)  # shown as 64 slices of 80 x 3
    for name in ("Segment", "Spike inspector"):
        widgets[name].reset_choices()
        widgets[name].image.value = sliced
        assert widgets[name].run() is None
        assert "3 channels" in notes[-1] and "rgb=True" in notes[-1]
    assert "sliced mask" not in viewer.layers
    # also a colour image with a side under 12 pixels (it was segmented as 8 slices of 40 x 3)
    small = viewer.add_image(colour[:8, :40], name="small", rgb=False)
    widgets["Segment"].reset_choices()
    widgets["Segment"].image.value = small
    assert widgets["Segment"].run() is None and "8 slices of 40 x 3" in notes[-1]
    # a real stack of frames is not mistaken for one: [3, H, W] of grey frames segments
    frames = viewer.add_image(np.stack([colour[..., 0]] * 3), name="frames")
    widgets["Segment"].reset_choices()
    widgets["Segment"].image.value = frames
    with qtbot.waitSignal(widgets["Segment"].run().finished, timeout=WAIT):
        pass
    assert viewer.layers["frames mask"].data.shape == (3, 64, 80)


def test_a_lazy_stack_is_read_by_the_job_not_on_the_gui_thread(plugin, qtbot):
    import dask.array as da

    from napari_medspike.widgets.layers import image_data

    viewer, widgets, _ = plugin
    frames = (np.random.default_rng(4).random((3, 40, 48)) * 255).astype(np.uint8)
    lazy = viewer.add_image(da.from_array(frames, chunks=(1, 40, 48)), name="lazy")
    assert isinstance(image_data(lazy), da.Array)  # handed to the job as it is
    segment = widgets["Segment"]
    segment.reset_choices()
    segment.image.value = lazy
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    assert viewer.layers["lazy mask"].data.shape == (3, 40, 48)


def test_the_inspector_reads_a_lazy_stack_in_its_job(plugin, qtbot):
    """The inspector read the slice shown on the GUI thread (1.06 s for a slice of a lazy
    stack, the GUI frozen meanwhile); Segment already read it in its job."""
    import inspect
    import threading

    import dask
    import dask.array as da

    viewer, widgets, _ = plugin
    reads = []  # (on the GUI thread?) for each block read on behalf of the inspector

    def noted(block):
        if any(frame.filename.endswith("inspector.py") for frame in inspect.stack()):
            reads.append(threading.current_thread() is threading.main_thread())
        return block

    frames = (np.random.default_rng(5).random((3, 40, 48)) * 255).astype(np.uint8)
    lazy = viewer.add_image(da.from_array(frames, chunks=(1, 40, 48)).map_blocks(noted, dtype=np.uint8), name="lazy")
    inspector = widgets["Spike inspector"]
    inspector.reset_choices()
    inspector.image.value = lazy
    with dask.config.set(scheduler="synchronous"):  # blocks are read by the thread that asks
        with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
            pass
    assert reads and not any(reads)


def test_save_correction_reads_a_lazy_stack_in_its_job(plugin, tmp_path, save):
    """Save correction read the slice shown of a lazy stack on the GUI thread (0.5 s for one
    block read, the GUI frozen meanwhile)."""
    import threading

    import dask
    import dask.array as da

    viewer, widgets, _ = plugin
    reads = []  # on the GUI thread? for each block read

    def noted(block):
        reads.append(threading.current_thread() is threading.main_thread())
        return block

    frames = (np.random.default_rng(5).random((3, 40, 48)) * 255).astype(np.uint8)
    lazy = viewer.add_image(da.from_array(frames, chunks=(1, 40, 48)).map_blocks(noted, dtype=np.uint8), name="lazy")
    labels = viewer.add_labels(np.zeros((3, 40, 48), np.uint8), name="lazy mask")
    labels.data[1, 10:20, 10:30] = 1
    viewer.dims.set_current_step(0, 1)
    tune = widgets["Correct and fine-tune"]
    tune.store_dir.value = str(tmp_path / "store")
    tune.reset_choices()
    tune.image.value, tune.mask.value = lazy, labels
    reads.clear()  # (napari drew the slice shown)
    with dask.config.set(scheduler="synchronous"):  # blocks are read by the thread that asks
        saved = save(tune)
    assert saved is not None and saved.provenance["frame"] == 1
    assert reads and not any(reads)


def test_closing_napari_while_a_job_runs_raises_nothing_when_it_ends(plugin, qtbot):
    viewer, widgets, _ = plugin
    segment = widgets["Segment"]
    worker = segment.run()
    with qtbot.waitSignal(worker.finished, timeout=WAIT):
        viewer.close()  # the docks' widgets are deleted while the job still runs
    # pytest-qt fails this test on any exception in a Qt callback, e.g. "QPushButton has been deleted"


def test_the_correction_dock_never_picks_or_reveals_a_samples_ground_truth(make_napari_viewer, qtbot,
                                                                           tiny_checkpoint):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medspike", "synthetic")
    truth = viewer.layers["synthetic lesion ground truth"]
    _, tune = viewer.window.add_plugin_dock_widget("napari-medspike", "Correct and fine-tune")
    _, segment = viewer.window.add_plugin_dock_widget("napari-medspike", "Segment")
    tune.reset_choices()
    tune._show_mask_for_editing()  # what raising the dock does
    assert not truth.visible  # the expert annotation stays hidden
    segment.model_choice.value = segment.model_choice.choices[-1]
    segment.checkpoint.value = str(tiny_checkpoint)
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    tune.reset_choices()
    assert tune.mask.value is viewer.layers["synthetic lesion mask"]  # the plugin's mask, not the truth
    assert tune._mask_choices()[-1][1] is truth  # offered last, to pick on purpose
    # the dock's mask closed: the box falls back to the plugin's masks before the truth
    other = viewer.add_labels(np.zeros((256, 256), np.uint8), name="mine", metadata={"source_image": "synthetic lesion"})
    viewer.layers.remove(viewer.layers["synthetic lesion mask"])
    tune.reset_choices()
    assert tune.mask.value is other


def test_a_job_that_fails_with_a_runtime_error_is_reported_and_ends(plugin, qtbot, monkeypatch):
    """torch raises RuntimeError; superqt would drop it silently and never finish the worker."""
    from napari_medspike.widgets import jobs

    viewer, widgets, _ = plugin
    errors = []
    monkeypatch.setattr(jobs, "show_error", errors.append)

    def failing():
        yield None
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    finished = []  # connected before the worker starts: this job ends within microseconds
    jobs.start_worker(failing, "Test job", on_finish=lambda: finished.append(True))
    qtbot.waitUntil(lambda: bool(finished), timeout=10_000)
    assert errors and "mat1 and mat2" in errors[0]


def test_training_in_a_worker_thread_after_other_jobs_has_gradients(plugin, qtbot, tmp_path, store_corrections,
                                                                   fine_tune_improves):
    """Jobs share napari's pooled worker threads; grad mode is per thread."""
    viewer, widgets, image = plugin
    for job in ("Segment", "Spike inspector", "Segment"):
        with qtbot.waitSignal(widgets[job].run().finished, timeout=WAIT):
            pass
    tune = widgets["Correct and fine-tune"]
    store_corrections(viewer, tune, image, tmp_path / "store", [(slice(10, 40), slice(20, 60))], name="photo mask 2")
    tune.epochs.value = 1
    with qtbot.waitSignal(tune.run().finished, timeout=WAIT):
        pass
    assert "finetuned_" in session_of(viewer).source


def test_opening_the_correction_dock_readies_the_mask_for_painting(plugin, qtbot):
    """After the inspector's grid (which hides the mask), raising the Correct and fine-tune dock
    turns the grid off and shows the mask over its image, on top and active for painting;
    while the dock stays hidden, picking a mask changes nothing in the view. Raising the
    inspector again brings its grid back, and keeps the zoom when there is nothing to change."""
    from napari_medspike.demo import plugin_dock

    viewer, widgets, image = plugin

    def raise_dock(name):  # what a dock raised by its tab sends (a real click: the next test)
        plugin_dock(viewer, name).visibilityChanged.emit(True)

    with qtbot.waitSignal(widgets["Segment"].run().finished, timeout=WAIT):
        pass
    mask = viewer.layers["photo mask"]
    with qtbot.waitSignal(widgets["Spike inspector"].run().finished, timeout=WAIT):
        pass
    assert viewer_grid(viewer).enabled and not mask.visible
    other = viewer.add_labels(np.zeros(mask.data.shape, np.uint8), name="other mask", visible=False)
    tune = widgets["Correct and fine-tune"]
    tune.reset_choices()
    tune.mask.value = other
    tune.mask.value = mask  # the dock is not shown: the view stays as the inspector left it
    assert viewer_grid(viewer).enabled and not mask.visible and viewer.layers[-1] is other
    # a mask segmented for another image would be drawn over this one; the user's own outline stays
    elsewhere = viewer.add_labels(np.ones(mask.data.shape, np.uint8), name="elsewhere mask",
                                  metadata={"source_image": "elsewhere"})
    mine = viewer.add_labels(np.zeros(mask.data.shape, np.uint8), name="my outline")
    tune.mask.value = mask
    raise_dock("Correct and fine-tune")
    assert not viewer_grid(viewer).enabled
    assert mask.visible and image.visible and not elsewhere.visible and mine.visible
    assert not any(layer.visible for layer in viewer.layers if "(stage 0" in layer.name)  # no spike map over it
    assert viewer.layers[-1] is mask and viewer.layers.selection.active is mask
    assert not any(layer.name_overlay.visible for layer in viewer.layers)  # no grid cell titles left over
    raise_dock("Spike inspector")  # back to the inspector
    assert viewer_grid(viewer).enabled and not mask.visible
    viewer.camera.zoom = 7.5  # raised again with nothing to change: the user's zoom stays
    raise_dock("Spike inspector")
    assert viewer.camera.zoom == 7.5


def test_clicking_the_dock_tabs_switches_between_inspecting_and_painting(make_napari_viewer, qtbot):
    """Docks stacked as tabs (as ``python -m napari_medspike`` opens them), clicked like a user
    does: the Correct and fine-tune tab readies the mask, the Spike inspector tab brings the grid back."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QTabBar

    from napari_medspike.demo import open_plugin

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    widgets = open_plugin(viewer, "synthetic")
    settle(0.5)
    bar = next(b for b in viewer.window._qt_window.findChildren(QTabBar) if b.count() == 3)
    titles = [bar.tabText(i).split(" (")[0] for i in range(3)]

    def click(name):
        QTest.mouseClick(bar, Qt.MouseButton.LeftButton, pos=bar.tabRect(titles.index(name)).center())
        settle(0.3)

    with qtbot.waitSignal(widgets["Segment"].run().finished, timeout=WAIT):
        pass
    click("Spike inspector")
    with qtbot.waitSignal(widgets["Spike inspector"].run().finished, timeout=WAIT):
        pass
    settle(0.3)
    mask = next(layer for layer in viewer.layers if layer.name.endswith(" mask"))
    assert viewer_grid(viewer).enabled and not mask.visible
    click("Correct and fine-tune")
    assert not viewer_grid(viewer).enabled and mask.visible and viewer.layers.selection.active is mask
    click("Spike inspector")
    assert viewer_grid(viewer).enabled


def test_the_fine_tune_plot_counts_whole_epochs_and_its_legend_covers_no_curve(qtbot):
    """Before and after the first epoch the x axis is whole epochs from 0 (the start); a plain
    integer locator on [0.8, 1.2] drew eleven overlapping ticks 0.04 apart."""
    from napari_medspike.widgets.finetune import CurvePlot

    plot = CurvePlot()
    for step in (None, "start", 1, 2):
        if step == "start":
            plot.set_start({"val_dice": 0.8})
        elif step is not None:
            plot.add({"epoch": step, "train_loss": 0.5, "val_loss": 0.4, "val_dice": 0.82})
        ticks = [t for t in plot.ax.get_xticks() if plot.ax.get_xlim()[0] <= t <= plot.ax.get_xlim()[1]]
        assert ticks == [float(e) for e in range(int(ticks[-1]) + 1)] and ticks[-1] >= 1, (step, ticks)
    assert plot.ax.get_legend() is None and len(plot.figure.legends) == 1  # one, beneath the axes


def test_closing_the_fine_tune_dock_stops_its_fine_tune(plugin, qtbot, tmp_path, store_corrections, monkeypatch):
    """Closing the dock (its ✕) cancels the run: before, it trained to the end with no button
    left to stop it, and switched Segment's model afterwards. napari's ✕ takes the contents out
    of the dock without deleting them (they live on while the job's callbacks hold them): the
    run stopped only when the test deleted them itself."""
    from napari_medspike.engine.config import TrainProgress
    from napari_medspike.widgets import finetune as dock_module

    seen: dict[str, bool] = {}

    def endless(*args, cancel=None, **kwargs):  # a fine-tune that runs until it is cancelled
        deadline = time.time() + 60
        while not cancel.is_set() and time.time() < deadline:
            yield TrainProgress(1, 1, 0, 1, float("nan"), message="training")  # as the trainer yields
            time.sleep(0.05)
        seen["cancelled"] = cancel.is_set()
        raise RuntimeError("stopped")

    monkeypatch.setattr(dock_module, "finetune_steps", endless)
    viewer, widgets, image = plugin
    tune = widgets["Correct and fine-tune"]
    store_corrections(viewer, tune, image, tmp_path / "store", [((10, 40), (20, 60))])
    worker = tune.run()
    assert worker is not None
    qtbot.waitUntil(lambda: tune.cancel_button.enabled, timeout=WAIT)
    viewer.window.remove_dock_widget(tune.native)  # what the dock's ✕ does, and all it does
    qtbot.waitUntil(lambda: "cancelled" in seen, timeout=WAIT)
    assert seen["cancelled"]
    tune.native.deleteLater()  # (what the event loop of a running napari does later)
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)


def test_closed_docks_stop_following_the_viewer(plugin, qtbot):
    """napari's ✕ takes a dock's contents out of the window without deleting them: before, a
    closed dock went on following layers and the model, and Segment's measured each stroke
    painted on its mask again, unseen (once per dock closed and opened again)."""
    from napari_medspike.widgets.session import session_of

    viewer, widgets, photo = plugin
    segment, tune = widgets["Segment"], widgets["Correct and fine-tune"]
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    mask = viewer.layers["photo mask"]
    listeners = len(session_of(viewer)._listeners)
    for widget in widgets.values():
        viewer.window.remove_dock_widget(widget.native)  # what the dock's ✕ does
    assert len(session_of(viewer)._listeners) == listeners - 2  # Segment's and the inspector's
    mask.paint((20, 30), 0)  # a stroke on the mask Segment measured
    assert not segment._remeasure_timer.isActive()
    other_mask = viewer.add_labels(np.zeros(photo.data.shape[:2], np.uint8), name="other")
    viewer.layers.selection.active = other_mask
    new_image = viewer.add_image(np.zeros((20, 20)), name="new")
    assert tune.mask.value is mask  # (napari itself still refreshes a closed dock's choices)
    assert segment.image.value is photo and new_image in viewer.layers  # (an image opened became Segment's)
    assert widgets["Spike inspector"].image.value is photo
    # opened again, the docks follow the viewer as before
    _, tune_again = viewer.window.add_plugin_dock_widget("napari-medspike", "Correct and fine-tune")
    viewer.layers.selection.active = viewer.layers["photo mask"]
    viewer.layers.selection.active = other_mask
    assert tune_again.mask.value is other_mask and tune.mask.value is mask


def test_a_wrapped_text_keeps_the_height_it_needs_when_its_font_changes(qapp):
    """A dock's text is fitted to its width when set; a style or font that reaches it later
    (napari's stylesheet, a theme) wraps it into more lines at the same width, which left the
    text cut to its first lines (seen in the Spike inspector's summary)."""
    from magicgui.widgets import Label
    from qtpy.QtWidgets import QVBoxLayout, QWidget

    from napari_medspike.widgets.layout import compact_label, show_text

    host = QWidget()
    QVBoxLayout(host).addWidget((label := compact_label(Label(value=""))).native)
    host.resize(300, 600)
    host.show()
    settle(0.1)
    show_text(label, "T = 4 timesteps: move the t slider below the canvas\nfiring rate per encoder stage "
              "(k/5): 0.081, 0.080, 0.081, 0.083\nsynaptic ops 2.04 G, analog MACs 0.01 G")
    before = label.native.minimumHeight()
    host.setStyleSheet("QLabel { font-size: 22px; }")
    settle(0.1)
    native = label.native
    assert native.minimumHeight() == native.heightForWidth(native.width()) > 1.5 * before
    host.close()


def test_dock_texts_and_fields_are_never_cut_or_squeezed(plugin, qtbot):
    """The inspector's summary in its dock at 1280x800: a scroll area squeezed the text to one line
    (its layout gives a wrapped text no height for its width), and texts without a label of their
    own got only the field column, cutting long words such as the architecture's name."""
    from napari_medspike.demo import plugin_dock

    viewer, widgets, _ = plugin
    inspector = widgets["Spike inspector"]
    viewer.window.show()
    viewer.window._qt_window.resize(1280, 800)
    for name in ("Segment", "Spike inspector"):  # the mask's measurement table, then the maps
        plugin_dock(viewer, name).raise_()
        settle(0.3)
        with qtbot.waitSignal(widgets[name].run().finished, timeout=WAIT):
            pass
        settle(0.5)
        # nothing hides under the vertical scroll bar (the docks do not scroll sideways)
        area, inner = widgets[name].native, widgets[name].inner
        assert area.verticalScrollBar().isVisible()
        assert inner.minimumSizeHint().width() <= inner.width() <= area.viewport().width(), name
        # the contents as tall as they need: about one time in two after the first inspection the
        # scroll area kept them at their old height, and the plot hid the summary's new lines
        assert inner.height() >= inner.minimumSizeHint().height(), name
    label, button, dock = inspector.summary.native, inspector.run_button.native, inspector.native
    assert label.isVisible() and dock.width() < 400 and inspector.inner.height() > dock.height()
    assert label.height() >= label.heightForWidth(label.width()) > 4 * label.fontMetrics().height()
    # the text starts where the field labels do (no empty label column), as wide as the buttons
    left = label.mapTo(dock, label.rect().topLeft()).x()
    assert abs(left - button.mapTo(dock, button.rect().topLeft()).x()) <= 12
    assert label.width() >= 0.8 * button.width()


def test_the_scripted_demo_walks_segment_inspect_and_save(tiny_checkpoint, tmp_path, capsys, qapp):
    """``python -m napari_medspike.demo`` (the README's scripted walk) runs to the end."""
    from napari_medspike.demo import main

    shot = tmp_path / "demo.png"
    assert main(["--sample", "synthetic", "--model", str(tiny_checkpoint), "--store", str(tmp_path / "store"),
                 "--screenshot", str(shot)]) == 0
    out = capsys.readouterr().out
    assert "saved correction" in out and shot.stat().st_size > 10_000
    assert len(list((tmp_path / "store" / "masks").glob("*.png"))) == 1


def test_a_bundled_sample_gets_the_model_trained_on_its_kind_of_image(make_napari_viewer, notes):
    """The polyp model on the dermoscopy sample scored Dice 0.02: Segment picks the shipped
    model of the sample's kind and says so; an image of the user's keeps the user's choice."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medspike", "ph2")
    _, segment = viewer.window.add_plugin_dock_widget("napari-medspike", "Segment")
    assert segment.image.value.name == "skin lesion (PH2)" and segment.model_choice.value == "dermoscopy"
    viewer.open_sample("napari-medspike", "busi")
    segment.reset_choices()
    segment.image.value = viewer.layers["breast ultrasound (BUSI)"]
    assert segment.model_choice.value == "breast-ultrasound"
    assert any("model 'breast-ultrasound' chosen for the sample" in n for n in notes)
    viewer.open_sample("napari-medspike", "glas")
    segment.reset_choices()
    segment.image.value = viewer.layers["glands (GlaS)"]
    assert segment.model_choice.value == "histology-glands"
    # the synthetic sample gets the general model (it kept the ultrasound model: Dice 0.00)
    viewer.open_sample("napari-medspike", "synthetic")
    segment.reset_choices()
    segment.image.value = viewer.layers["synthetic lesion"]
    assert segment.model_choice.value == "default"
    segment.model_choice.value = "spiking"
    segment.image.value = viewer.add_image(np.zeros((40, 40, 3), np.uint8), name="mine", rgb=True)
    assert segment.model_choice.value == "spiking"
    # a model the user chose (or a fine-tune made current) is not replaced by a sample's suggestion
    segment.image.value = viewer.layers["skin lesion (PH2)"]
    assert segment.model_choice.value == "spiking"
    assert "keeping spiking, the model chosen" in notes[-1]
    told = len(notes)
    segment.image.value = viewer.layers["mine"]
    segment.image.value = viewer.layers["skin lesion (PH2)"]  # back on it: said once is enough
    assert not any("keeping" in n for n in notes[told:]), notes[told:]


def test_a_model_card_says_what_its_dice_was_measured_on(tmp_path):
    """A fine-tune on one correction validates on that correction: its card said "validation
    Dice 0.755 (corrections)" as if that were a held-out figure."""
    from napari_medspike.widgets.session import summary_of

    model = create_model("medspikeformer", widths=(8, 16, 32, 64), timesteps=2)
    tuned = save_checkpoint(model, tmp_path / "tuned.safetensors", input_size=64, metrics={"val_dice": 0.755},
                            training={"data": [str(tmp_path / "corrections")], "val_keys": ["corrections/a"],
                                      "validated_on": "training images (nothing held out)"})
    assert summary_of(load_model(tuned)).endswith("Dice 0.755 on its own training images (none held out)")
    flagged = save_checkpoint(model, tmp_path / "flagged.safetensors", input_size=64, metrics={"val_dice": 0.755},
                              training={"data": [str(tmp_path / "corrections")], "held_out": False})  # as now written
    assert summary_of(load_model(flagged)).endswith("Dice 0.755 on its own training images (none held out)")
    held_out = save_checkpoint(model, tmp_path / "held.safetensors", input_size=64, metrics={"val_dice": 0.81},
                               training={"data": [str(tmp_path / "kvasir-seg")], "val_keys": ["kvasir-seg/a", "kvasir-seg/b"]})
    assert summary_of(load_model(held_out)).endswith("validation Dice 0.810 (kvasir-seg, 2 images)")


def test_the_plots_take_napari_s_theme(plugin, qtbot):
    """A white figure glares in napari's dark theme: the docks' plots use the theme's colours,
    and follow a light theme chosen before the docks open."""
    from matplotlib.colors import to_hex
    from napari.utils.theme import get_theme

    viewer, widgets, _ = plugin
    dark = get_theme(viewer.theme)
    for plot in (widgets["Spike inspector"].plot, widgets["Correct and fine-tune"].plot):
        assert to_hex(plot.figure.get_facecolor()) == dark.background.as_hex()
        assert all(to_hex(t.get_color()) == dark.text.as_hex() for t in plot.figure.texts)  # the inspector's hint
    with qtbot.waitSignal(widgets["Spike inspector"].run().finished, timeout=WAIT):
        pass
    axes = widgets["Spike inspector"].plot.figure.axes[0]
    assert to_hex(axes.get_facecolor()) == dark.background.as_hex()
    assert to_hex(axes.title.get_color()) == to_hex(axes.xaxis.label.get_color()) == dark.text.as_hex()
    curve = widgets["Correct and fine-tune"].plot
    curve.add({"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "val_dice": 0.8})
    assert to_hex(curve.ax.get_facecolor()) == dark.background.as_hex()
    assert to_hex(curve.ax.xaxis.label.get_color()) == dark.text.as_hex()
    from napari_medspike.widgets.inspector import RatePlot
    from napari_medspike.widgets.layout import plot_theme

    viewer.theme = "light"
    light = RatePlot(plot_theme(viewer))
    assert to_hex(light.figure.get_facecolor()) == get_theme("light").background.as_hex()


def test_two_viewers_keep_their_own_models(make_napari_viewer):
    """One module-wide model: a second window's sample switched the first window's Segment to the
    skin model, and a model chosen in the second was used by the first without a word."""
    from napari_medspike.widgets.session import session_of

    first, second = make_napari_viewer(), make_napari_viewer()
    _, segment1 = first.window.add_plugin_dock_widget("napari-medspike", "Segment")
    _, inspector1 = first.window.add_plugin_dock_widget("napari-medspike", "Spike inspector")
    first.open_sample("napari-medspike", "kvasir")
    assert segment1.model_choice.value == "default"
    _, segment2 = second.window.add_plugin_dock_widget("napari-medspike", "Segment")
    second.open_sample("napari-medspike", "ph2")
    assert segment2.model_choice.value == "dermoscopy" and segment1.model_choice.value == "default"
    segment2.model_choice.value = "spiking"
    assert session_of(second).source == "spiking" and session_of(first).source == "default"
    assert segment1.model_choice.value == "default" and "spiking" not in inspector1.model_note.value
    assert session_of(first) is session_of(first) and session_of(first) is not session_of(second)


def test_a_drop_down_too_narrow_for_its_choice_shows_it_whole_on_hover(plugin, qtbot):
    """At 1280x800 the docks are about 215 px wide and the image box shows "a polyp image with a
    lo": hovering it shows the whole name, above the box's own tooltip."""
    from qtpy.QtCore import QPoint
    from qtpy.QtGui import QHelpEvent
    from qtpy.QtWidgets import QToolTip

    from napari_medspike.demo import plugin_dock

    viewer, widgets, image = plugin
    viewer.window.show()
    viewer.window._qt_window.resize(1280, 800)
    image.name = "a polyp image with a long name from the endoscopy archive"
    segment = widgets["Segment"]
    plugin_dock(viewer, "Segment").raise_()
    segment.reset_choices()
    segment.image.value = image
    settle(0.3)

    def hover(widget) -> str:
        combo = widget.native
        QToolTip.hideText()
        event = QHelpEvent(QEvent.Type.ToolTip, QPoint(5, 5), combo.mapToGlobal(QPoint(5, 5)))
        QApplication.sendEvent(combo, event)
        qtbot.waitUntil(QToolTip.isVisible, timeout=2000)
        return QToolTip.text()

    combo = segment.image.native
    assert combo.fontMetrics().horizontalAdvance(image.name) > combo.width()  # cut short in the box
    assert hover(segment.image) == image.name
    segment.image.tooltip = "the image to segment"  # a box's own tooltip stays, beneath the choice
    assert hover(segment.image) == f"{image.name}\n\nthe image to segment"
    # a choice that fits shows only the box's own tooltip
    segment.mode.value = "resize"
    assert hover(segment.mode) == segment.mode.tooltip


def test_napari_s_activity_animation_is_slowed_while_a_job_runs(plugin, qtbot):
    """Without a GPU for the window, each frame of napari's "in progress" animation re-composes
    the whole window: Segment on 8 frames took 2.0 s in the dock against 0.8 s from Python on 2
    cores (benchmarks/dock_overhead.py). It turns a tenth as fast while a job runs."""
    from napari_medspike.widgets.jobs import SPINNER_SPEED, _activity_spinners, calm_activity_spinners, start_worker

    viewer, widgets, _ = plugin
    spinners = _activity_spinners()
    assert spinners and all(movie.speed() == 100 for movie in spinners)
    seen = []

    def job():
        yield None
        return 1

    done = []  # (connected before the job starts: it may end before a waitSignal would connect)
    start_worker(job, "a job", on_yield=lambda _: seen.append([movie.speed() for movie in spinners]),
                 on_finish=lambda: done.append(True))
    qtbot.waitUntil(lambda: bool(done), timeout=WAIT)
    assert seen == [[SPINNER_SPEED] * len(spinners)]
    assert all(movie.speed() == 100 for movie in spinners)  # its own speed once the job ended
    calm_activity_spinners(True)  # two jobs: the first to end leaves it slow
    calm_activity_spinners(True)
    calm_activity_spinners(False)
    assert all(movie.speed() == SPINNER_SPEED for movie in spinners)
    calm_activity_spinners(False)
    assert all(movie.speed() == 100 for movie in spinners)


def test_the_inspectors_whole_summary_shows_once_the_maps_have_their_colour_bars(make_napari_viewer, qtbot):
    """At 1920x1080, on the polyp sample with the default model, the row holding the summary
    kept its old height after the first inspection (napari drew the maps' colour bars
    meanwhile): three lines of nine showed."""
    from napari_medspike.demo import open_plugin, plugin_dock

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1920, 1080)
    settle(0.3)
    widgets = open_plugin(viewer, "kvasir")
    with qtbot.waitSignal(widgets["Segment"].run().finished, timeout=WAIT):
        pass
    inspector = widgets["Spike inspector"]
    plugin_dock(viewer, "Spike inspector").raise_()
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
        pass
    settle(1.0)
    viewer.screenshot(canvas_only=False)  # (what a user sees: the window drawn whole)
    label = inspector.summary.native
    needed = label.heightForWidth(label.width())
    assert needed > 4 * label.fontMetrics().height()
    assert label.visibleRegion().boundingRect().height() >= needed  # not cut by the row around it
