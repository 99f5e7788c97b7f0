"""The three dock widgets, driven like a user would, under Xvfb."""

from __future__ import annotations

import re

import numpy as np
import pytest
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from napari_medspike import create_model, load_model, save_checkpoint
from napari_medspike.widgets.layers import MAP_TAG, viewer_grid
from napari_medspike.widgets.session import session_of

WAIT = 120_000  # ms


def test_segment_adds_aligned_probability_and_mask(plugin, qtbot):
    viewer, widgets, image = plugin
    worker = widgets["Segment"].run()
    with qtbot.waitSignal(worker.finished, timeout=WAIT):
        pass
    prob, mask = viewer.layers["photo probability"], viewer.layers["photo mask"]
    assert prob.data.shape == mask.data.shape == (70, 90)
    assert 0.0 <= prob.data.min() and prob.data.max() <= 1.0
    assert set(np.unique(mask.data)) <= {0, 1}
    for layer in (prob, mask):
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
    assert "segmented 'photo' with tiny" in " ".join(widgets["Segment"].status.value.split())


def test_mirror_tta_checkbox_follows_the_model_and_is_used(plugin, qtbot, tmp_path):
    from napari_medspike import create_model, save_checkpoint

    viewer, widgets, _ = plugin
    segment = widgets["Segment"]
    assert segment.flips.value is False  # the tiny checkpoint recommends nothing
    tta = save_checkpoint(create_model("medqkformer", widths=(8, 16, 32, 64)), tmp_path / "tta.safetensors",
                          input_size=32, inference={"flips": True})
    segment.checkpoint.value = str(tta)
    assert segment.flips.value is True
    worker = segment.run()
    with qtbot.waitSignal(worker.finished, timeout=WAIT):
        pass
    assert "mirror TTA" in " ".join(segment.status.value.split()) and "photo mask" in viewer.layers
    # and the mirrors were used: the probabilities are the mirror-averaged ones, not the plain pass
    from napari_medspike import load_model
    from napari_medspike.inference.predictor import predict

    photo, model = viewer.layers["photo"], load_model(tta)
    shown = viewer.layers["photo probability"].data
    np.testing.assert_allclose(shown, predict(model, photo.data, flips=True), atol=1e-5)
    assert np.abs(shown - predict(model, photo.data, flips=False)).max() > 1e-4


def test_the_mode_follows_how_the_model_was_trained(plugin, tmp_path):
    """A model trained on random crops (histology) sees tiles at full resolution; shrunk whole
    into its input size, its objects came out far smaller than it learnt them."""
    from napari_medspike import create_model, save_checkpoint

    _, widgets, _ = plugin
    segment = widgets["Segment"]
    net = create_model("medqkformer", widths=(8, 16, 32, 64))
    crops = save_checkpoint(net, tmp_path / "crops.safetensors", input_size=32, training={"mode": "crop"})
    whole = save_checkpoint(net, tmp_path / "whole.safetensors", input_size=32, training={"mode": "resize"})
    segment.checkpoint.value = str(crops)
    assert segment.mode.value == "tiled"
    segment.checkpoint.value = str(whole)
    assert segment.mode.value == "resize"


def test_event_loop_keeps_running_during_a_job_and_cancel_stops_it(plugin, qtbot):
    viewer, widgets, _ = plugin
    big = viewer.add_image(np.random.default_rng(1).random((600, 600)).astype(np.float32), name="big")
    segment = widgets["Segment"]
    segment.reset_choices()
    segment.image.value = big
    segment.mode.value = "tiled"
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(10)
    worker = segment.run()
    assert segment.cancel_button.enabled and not segment.run_button.enabled
    qtbot.waitUntil(lambda: len(ticks) >= 5, timeout=WAIT)  # the GUI thread is free meanwhile
    with qtbot.waitSignal(worker.aborted, timeout=WAIT):
        segment.cancel()
    timer.stop()
    assert "big mask" not in viewer.layers
    qtbot.waitUntil(lambda: segment.run_button.enabled, timeout=WAIT)
    assert "cancelled" in segment.status.value  # not left at "cancelling…"


def test_an_image_closed_while_segmenting_gets_no_orphan_layers(plugin, qtbot):
    viewer, widgets, _ = plugin
    short = viewer.add_image(np.random.default_rng(2).random((64, 64)).astype(np.float32), name="short")
    segment = widgets["Segment"]
    segment.reset_choices()
    segment.image.value = short
    worker = segment.run()
    viewer.layers.remove(short)
    with qtbot.waitSignal(worker.finished, timeout=WAIT):
        pass
    assert not [layer.name for layer in viewer.layers if layer.name.startswith("short")]
    assert "closed while segmenting" in " ".join(segment.status.value.split())


def test_an_image_given_other_pixels_while_segmenting_gets_no_stale_mask(plugin, qtbot):
    """The old picture's mask was laid over the new one, and the status said "segmented"."""
    viewer, widgets, _ = plugin
    grey = viewer.add_image(np.random.default_rng(2).random((60, 80)).astype(np.float32), name="grey")
    segment = widgets["Segment"]
    segment.reset_choices()
    segment.image.value = grey
    worker = segment.run()
    grey.data = np.zeros((120, 40), np.float32)  # another picture loaded into the layer
    with qtbot.waitSignal(worker.finished, timeout=WAIT):
        pass
    assert "grey mask" not in viewer.layers
    assert "got other pixels while segmenting" in " ".join(segment.status.value.split())
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):  # again: its own mask
        pass
    assert viewer.layers["grey mask"].data.shape == (120, 40)


def test_bad_layers_become_notifications(plugin, notes):
    viewer, widgets, _ = plugin
    volume = viewer.add_image(np.zeros((2, 3, 40, 40), np.float32), name="volume")
    segment = widgets["Segment"]
    segment.reset_choices()
    segment.image.value = volume
    assert segment.run() is None
    assert any("4 dimensions" in n for n in notes)


def test_bad_checkpoint_is_reported_not_raised(plugin, tmp_path, notes):
    _, widgets, _ = plugin
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    widgets["Segment"].checkpoint.value = str(junk)
    assert "cannot load" in widgets["Segment"].card.value
    assert any("cannot load model" in n for n in notes)


def test_inspector_shows_timesteps_and_interactions_over_the_image(plugin, qtbot):
    viewer, widgets, image = plugin
    inspector = widgets["Spike inspector"]
    inspector.stage.value = 1
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
        pass
    spikes = viewer.layers["spikes v (stage 1, t)"]
    assert spikes.data.shape == (2, 32, 32)  # [T, h, w] at stage 1 of a 64² input
    # The map spans the image: 32 map pixels x scale = 90 image pixels x image scale (columns).
    assert spikes.data.shape[-1] * spikes.scale[-1] == pytest.approx(90 * image.scale[-1])
    assert spikes.data.shape[-2] * spikes.scale[-2] == pytest.approx(70 * image.scale[-2])
    for name in ("AA", "AI", "IA", "II"):
        assert viewer.layers[f"{name} (stage 1)"].data.shape == (2, 32, 32)
    assert viewer.layers["v firing rate (stage 1)"].data.shape == (32, 32)
    summary = " ".join(inspector.summary.value.split())
    assert "energy" in summary and "firing rate per encoder stage" in summary and "T = 2 timesteps" in summary
    # the same maps as their sum, shares and φ, without running again
    four = {name: viewer.layers[f"{name} (stage 1)"].data for name in ("AA", "AI", "IA", "II")}
    viewer.dims.set_current_step(0, 1)  # at timestep 1 ...
    inspector.interactions.value = "sum, shares, φ"
    assert viewer.dims.current_step[0] == 1  # ... it stays there
    shown = [layer.name for layer in viewer.layers if layer.visible]
    assert {"sum (stage 1)", "Q-active share (stage 1)", "K-active share (stage 1)", "Q–K φ (stage 1)"} <= set(shown)
    assert not {"AA (stage 1)", "II (stage 1)"} & set(shown)  # the grid shows one view
    np.testing.assert_allclose(viewer.layers["sum (stage 1)"].data, sum(four.values()), rtol=1e-5, atol=1e-6)
    phi = viewer.layers["Q–K φ (stage 1)"]
    assert phi.colormap.name == "bwr" and phi.contrast_limits[0] == -phi.contrast_limits[1]
    assert "interactions as sum, shares and φ" in " ".join(inspector.summary.value.split())


def test_the_inspectors_figures_can_be_exported(plugin, qtbot, tmp_path, notes):
    """The dock showed the energy and the firing rates only as text and a plot: a researcher
    comparing models or images had to copy numbers off the screen."""
    import json

    viewer, widgets, image = plugin
    inspector = widgets["Spike inspector"]
    assert inspector.export_button.native.isHidden() and inspector.export_figures(tmp_path / "none.json") is None
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
        pass
    assert not inspector.export_button.native.isHidden()
    figures = json.loads(inspector.export_figures(tmp_path / "figures.json").read_text())
    assert figures["image"] == "photo" and figures["timesteps"] == 2 and figures["model"].endswith("tiny.safetensors")
    shown = " ".join(inspector.summary.value.split())
    assert f"energy {figures['energy']['energy_mj']:.2f} mJ" in shown
    assert inspector.export_figures(tmp_path / "rates.csv").read_text().startswith("layer,part,mean_firing_rate,t0,t1")
    (tmp_path / "folder.json").mkdir()
    assert inspector.export_figures(tmp_path / "folder.json") is None
    assert any("figures not written" in n for n in notes), notes


def test_inspector_on_a_stack_keeps_its_maps_at_the_frame_inspected(plugin, qtbot, monkeypatch):
    from napari_medspike.widgets import inspector as inspector_module
    from napari_medspike.widgets.layers import shown_slice

    seen = []
    inspect = inspector_module.inspect_steps

    def recording(model, image, *args, **kwargs):  # notes which picture is inspected
        seen.append(np.array(image))
        return (yield from inspect(model, image, *args, **kwargs))

    monkeypatch.setattr(inspector_module, "inspect_steps", recording)

    viewer, widgets, _ = plugin
    frames = (np.random.default_rng(5).random((4, 70, 90, 3)) * 255).astype(np.uint8)
    frames[2, 20:50, 30:60] = 255  # frame 2 differs, so its maps do too
    stack = viewer.add_image(frames, name="clip", rgb=True, scale=(5.0, 2.0, 3.0), translate=(10.0, 0.0, 0.0))
    viewer.dims.set_current_step(0, 2)
    inspector = widgets["Spike inspector"]
    inspector.reset_choices()
    inspector.image.value = stack
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
        pass
    spikes = viewer.layers["spikes v (stage 0, t)"]
    # [T, 1 frame, h, w]: time has an axis of its own, the maps sit at frame 2 of the clip
    assert spikes.data.shape[:2] == (2, 1) and spikes.data.ndim == 4
    assert spikes.translate[1] == pytest.approx(10.0 + 2 * 5.0) and spikes.scale[1] == pytest.approx(5.0)
    assert viewer.dims.axis_labels[0] == "t" and shown_slice(stack, viewer) == 2
    viewer.dims.set_current_step(0, 1)  # the t slider moves time, not the clip
    assert shown_slice(stack, viewer) == 2
    assert viewer.layers["AA (stage 0)"].data.shape[1] == 1
    assert viewer.layers["v firing rate (stage 0)"].data.shape[0] == 1
    np.testing.assert_array_equal(seen[0], frames[2])  # frame 2 was inspected


def test_a_stack_not_shown_one_frame_at_a_time_is_neither_saved_nor_inspected(plugin, tmp_path, notes, save):
    """Which frame to store or inspect was read off the slider whatever the canvas showed: a 3D
    view, the frames' axis turned onto the canvas, the slider past the stack's frames."""
    viewer, widgets, _ = plugin
    tune, inspector = widgets["Correct and fine-tune"], widgets["Spike inspector"]
    tune.store_dir.value = str(tmp_path / "store")
    frames = (np.random.default_rng(8).random((5, 64, 80)) * 255).astype(np.uint8)
    clip = viewer.add_image(frames, name="clip")
    viewer.add_image(frames, name="later", translate=(10, 0, 0))  # the frames' axis reaches to 15
    labels = viewer.add_labels(np.ones((5, 64, 80), np.uint8), name="clip mask")
    for dock in (tune, inspector):
        dock.reset_choices()
        dock.image.value = clip
    tune.mask.value = labels

    def refused(expected: str) -> None:
        assert save(tune) is None and expected in notes[-1], notes[-1]
        assert inspector.run() is None and expected in notes[-1], notes[-1]

    viewer.dims.ndisplay = 3
    refused("switch to the 2D view")
    viewer.dims.ndisplay = 2
    viewer.dims.order = (1, 0, 2)  # the canvas shows (frame, x) planes
    refused("the canvas shows the frames' axis")
    viewer.dims.order = (0, 1, 2)
    viewer.dims.set_current_step(0, 12)  # a frame of 'later' only: 'clip' is not drawn
    refused("at none of the 5 frames of 'clip'")
    viewer.dims.set_current_step(0, 3)
    saved = save(tune)
    assert saved is not None and saved.provenance["frame"] == 3


def test_the_users_own_t_axis_keeps_its_name_beside_the_maps_time(plugin, qtbot):
    """A video whose frame axis the user named "t" lost that name to the maps' timesteps (also
    after an earlier inspection whose maps were closed since)."""
    viewer, widgets, _ = plugin
    inspector = widgets["Spike inspector"]
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):  # the photo's maps, then closed
        pass
    for layer in [layer for layer in viewer.layers if layer.metadata.get(MAP_TAG)]:
        viewer.layers.remove(layer)
    frames = (np.random.default_rng(5).random((3, 64, 80, 3)) * 255).astype(np.uint8)
    clip = viewer.add_image(frames, name="clip", rgb=True)
    viewer.dims.axis_labels = ("t", "y", "x")
    inspector.reset_choices()
    inspector.image.value = clip
    for _ in range(2):  # and again: the axes named stay as they were
        with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
            pass
        assert list(viewer.dims.axis_labels[-3:]) == ["t", "y", "x"]
        assert list(viewer.dims.axis_labels).count("timestep") == 1
        assert "timestep slider" in " ".join(inspector.summary.value.split())


def test_inspector_on_an_image_while_a_stack_is_open_gives_time_an_axis_of_its_own(plugin, qtbot):
    from napari_medspike.widgets.layers import shown_slice

    viewer, widgets, image = plugin
    frames = (np.random.default_rng(6).random((4, 70, 90, 3)) * 255).astype(np.uint8)
    stack = viewer.add_image(frames, name="clip", rgb=True, scale=(5.0, 1.0, 1.0), translate=(10.0, 0.0, 0.0))
    viewer.dims.set_current_step(0, 3)
    inspector = widgets["Spike inspector"]
    inspector.reset_choices()
    inspector.image.value = image  # the 2D photo
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
        pass
    spikes = viewer.layers["spikes v (stage 0, t)"]
    # [T, the clip's 4 frames, h, w]: the same maps at every frame, time on an axis of its own
    assert spikes.data.ndim == 4 and spikes.data.shape[1] == 4
    np.testing.assert_array_equal(spikes.data[:, 0], spikes.data[:, 3])
    assert spikes.scale[1] == pytest.approx(5.0) and spikes.translate[1] == pytest.approx(10.0)
    assert viewer.dims.ndim == 4 and viewer.dims.axis_labels[0] == "t"
    viewer.dims.set_current_step(0, 1)  # the t slider moves time, not the clip
    assert shown_slice(stack, viewer) == 3


def test_inspecting_again_reuses_the_map_layers_and_keeps_one_t_axis(plugin, qtbot):
    """Each inspection used to add its maps beside the earlier ones' (10 more layers each), and
    every later change re-laid them all out: the GUI froze for longer each time. A stack
    inspected after an image got a second slider named "t"."""
    from napari_medspike.widgets.inspector import MAP_TAG

    viewer, widgets, photo = plugin
    inspector = widgets["Spike inspector"]
    photo.units = ("mm", "mm")  # an image in physical units: the maps take them

    def inspect() -> list[str]:
        with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
            pass
        return sorted(layer.name for layer in viewer.layers if layer.metadata.get(MAP_TAG))

    first = inspect()
    count = len(viewer.layers)
    maps = [layer for layer in viewer.layers if layer.metadata.get(MAP_TAG)]
    # (without them, napari warned of inconsistent units six times and stopped drawing units)
    assert all(tuple(str(u) for u in layer.units[-2:]) == ("millimeter",) * 2 for layer in maps)
    inspector.stage.value, inspector.spikes.value = 1, "q"
    grid, layouts, colormaps, units = viewer_grid(viewer), [], [], []
    assert grid.enabled
    grid.events.enabled.connect(layouts.append)
    for layer in viewer.layers:
        layer.events.colormap.connect(colormaps.append)
        layer.events.units.connect(units.append)
    second = inspect()
    assert len(viewer.layers) == count and len(second) == len(first) == 6
    # new maps in the same layers: napari neither lays its grid out again nor rebuilds a
    # layer's shader for a colormap it already has (each cost about 0.1-0.3 s of frozen GUI)
    assert grid.enabled and not layouts and not colormaps and not units
    assert all("(stage 1" in name for name in second) and "spikes q (stage 1, t)" in second
    frames = (np.random.default_rng(6).random((4, 70, 90, 3)) * 255).astype(np.uint8)
    stack = viewer.add_image(frames, name="clip", rgb=True)
    inspector.reset_choices()
    inspector.image.value = stack
    inspect()
    assert list(viewer.dims.axis_labels).count("t") == 1


def test_a_stack_opened_after_inspecting_an_image_gets_its_own_slider(plugin, qtbot):
    """The maps' time axis took the place of a stack opened later: its frame slider moved the
    maps through time."""
    from napari_medspike.widgets.inspector import MAP_TAG

    viewer, widgets, photo = plugin
    inspector = widgets["Spike inspector"]
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
        pass
    def spikes_ndim() -> int:
        return next(layer for layer in viewer.layers if layer.metadata.get(MAP_TAG) == 1).ndim

    assert spikes_ndim() == 3  # [t, y, x]
    frames = (np.random.default_rng(8).random((5, 70, 90, 3)) * 255).astype(np.uint8)
    viewer.add_image(frames, name="clip", rgb=True, scale=(1.0, *photo.scale), translate=(0.0, *photo.translate))
    qtbot.waitUntil(lambda: spikes_ndim() == 4, timeout=10_000)  # [t, frame, y, x]
    assert viewer.dims.ndim == 4 and list(viewer.dims.axis_labels).count("t") == 1
    assert viewer.dims.axis_labels[0] == "t" and viewer.dims.nsteps[1] == 5
    # what was just opened is in sight, on top, out of the grid (it took a seventh grid place)
    assert viewer.layers["clip"].visible and viewer.layers[-1].name == "clip" and not viewer_grid(viewer).enabled
    viewer.layers.remove("clip")  # and back to [t, y, x] when it is closed
    qtbot.waitUntil(lambda: spikes_ndim() == 3, timeout=10_000)
    assert viewer.dims.ndim == 3
    # a 2D image opened while the maps are side by side: also in sight, the grid off
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
        pass
    assert viewer_grid(viewer).enabled
    shot = viewer.add_image(np.zeros((70, 90)), name="next")
    qtbot.waitUntil(lambda: not viewer_grid(viewer).enabled, timeout=10_000)
    assert shot.visible and viewer.layers[-1] is shot and inspector.image.value is shot
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):  # inspecting it: side by side again
        pass
    assert viewer_grid(viewer).enabled


def test_inspector_channel_reduction(plugin, qtbot):
    viewer, widgets, _ = plugin
    inspector = widgets["Spike inspector"]
    inspector.reduce.value = "channel"
    inspector.channel.value = 3
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
        pass
    spikes = viewer.layers["spikes v channel 3 (stage 0, t)"].data  # the name says which channels
    assert set(np.unique(spikes)) <= {0.0, 1.0}  # one channel of binary spikes
    inspector.reduce.value = "max"
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
        pass
    assert "spikes v max (stage 0, t)" in viewer.layers and "spikes v channel 3 (stage 0, t)" not in viewer.layers
    inspector.interactions.value = "sum, shares, φ"  # shown again from the same run: the same name
    assert "spikes v max (stage 0, t)" in viewer.layers


def test_save_correction_and_guardrails(plugin, tmp_path, notes, save):
    viewer, widgets, image = plugin
    tune = widgets["Correct and fine-tune"]
    tune.store_dir.value = str(tmp_path / "store")
    empty = viewer.add_labels(np.zeros((70, 90), np.uint8), name="photo mask")
    tune.reset_choices()
    tune.image.value, tune.mask.value = image, empty
    assert tune.run() is None and any("no stored corrections" in n for n in notes)
    assert save(tune) is None and any("empty" in n for n in notes)
    empty.data[10:30, 20:50] = 1
    entry = save(tune)
    assert entry is not None and tune.corrections.choices == (entry.stem,)
    # painted from scratch: no model made this mask (a Segment mask records its model: test_correction_loop)
    assert entry.provenance["image_layer"] == "photo" and entry.provenance["model"] is None
    tune.lr.value = 0.5
    assert tune.run() is None and any("unsafe" in n for n in notes)
    wrong = viewer.add_labels(np.ones((10, 10), np.uint8), name="wrong size")
    tune.mask.value = wrong
    assert save(tune) is None and any("differ in size" in n for n in notes)
    # a corrections folder the fine-tuned model cannot be written to is said before any training
    tune.lr.value = 0
    (tmp_path / "store" / "models").write_text("")  # (a file where its folder goes: unwritable, even for root)
    assert tune.run() is None and tune.worker is None
    assert "cannot write in" in notes[-1] and "choose a corrections folder you can write to" in notes[-1]


def test_saving_runs_in_the_background_and_stores_the_mask_as_it_was_pressed(plugin, tmp_path, notes, qtbot,
                                                                            monkeypatch):
    """Encoding a 12-megapixel photo takes about a second: the dock writes it in a worker, keeps
    what was painted when Save was pressed, and does not fine-tune before it is written."""
    import threading

    from napari_medspike.data.corrections import CorrectionStore

    viewer, widgets, image = plugin
    tune = widgets["Correct and fine-tune"]
    tune.store_dir.value = str(tmp_path / "store")
    mask = viewer.add_labels(np.zeros((70, 90), np.uint8), name="photo mask")
    mask.data[10:30, 20:50] = 1
    tune.reset_choices()
    tune.image.value, tune.mask.value = image, mask
    release, real_save = threading.Event(), CorrectionStore.save

    def slow_save(*args, **kwargs):
        assert release.wait(30)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(CorrectionStore, "save", slow_save)
    worker = tune.save_correction()
    assert worker is not None and not tune.save_button.enabled and tune.store.list() == []
    assert tune.save_correction() is None and "still being saved" in notes[-1]
    assert tune.run() is None and "still being saved" in notes[-1]
    mask.data[:] = 0  # painting goes on meanwhile
    with qtbot.waitSignal(worker.finished, timeout=WAIT):
        release.set()
    assert tune.save_button.enabled and tune.save_worker is None
    assert tune.corrections.choices == (tune.last_saved.stem,)
    assert tune.store.load(tune.last_saved.stem)[1].sum() == 20 * 30
    assert any(n.startswith("saved the correction of photo · ") for n in notes), notes


def test_finetune_makes_a_loadable_model_and_resegments(plugin, tmp_path, qtbot, store_corrections, notes,
                                                       fine_tune_improves, monkeypatch):
    import threading

    from napari_medspike.widgets import finetune as dock_module

    viewer, widgets, image = plugin
    tune = widgets["Correct and fine-tune"]
    loaded_on = []  # the fine-tuned model is loaded in the job, not on the GUI thread
    real_load = dock_module.load_model
    monkeypatch.setattr(dock_module, "load_model", lambda *a, **k: loaded_on.append(
        threading.current_thread() is threading.main_thread()) or real_load(*a, **k))
    mask = store_corrections(viewer, tune, image, tmp_path / "store",
                             [(slice(10, 40), slice(20, 60)), (slice(30, 60), slice(10, 40))])
    tune.epochs.value = 2
    tune.lr.value = 1e-3
    worker = tune.run()
    with qtbot.waitSignal(worker.finished, timeout=WAIT):
        pass
    assert len(tune.plot.history) == 2 and loaded_on == [False]
    assert 0 <= tune.plot.start["val_dice"] <= 1  # the starting model's Dice, drawn as the bar to beat
    assert "val Dice" in legend_labels(tune.plot)  # two pictures: one is held out
    assert session_of(viewer).source.endswith(".safetensors") and "finetuned_" in session_of(viewer).source
    assert load_model(session_of(viewer).source).arch == "medspikeformer"
    assert "held-out Dice on 1 image" in " ".join(tune.result.value.split())
    # a later session lists this model in Segment too, though its corrections folder is not the default
    from napari_medspike.data.corrections import known_stores

    session_of(viewer).checkpoints.clear()
    assert (tmp_path / "store").resolve() in known_stores()
    assert session_of(viewer).source in [source for _, source in widgets["Segment"]._model_choices()]
    # the outcome is also a notification, visible however small the window
    # (a fourth decimal where three would show no change)
    assert any(re.fullmatch(r"fine-tuning done: Dice \d\.\d{3,4} -> \d\.\d{3,4} \(held out: 1 image\)", n)
               for n in notes), notes
    qtbot.waitUntil(lambda: tune.resegment_worker is None, timeout=WAIT)
    assert "photo mask (fine-tuned)" in viewer.layers
    np.testing.assert_array_equal(viewer.layers["photo mask"].data[30:60, 10:40], 1)  # user's mask intact
    # the new mask stands apart from the corrected one (cyan by default), and the dock says how
    tuned = viewer.layers["photo mask (fine-tuned)"]
    assert tuned.metadata["mask_colour"] == "yellow"
    np.testing.assert_allclose(tuned.colormap.color_dict[1][:3], (1.0, 1.0, 0.0))
    assert "'photo' segmented again: its new mask 'photo mask (fine-tuned)' is in yellow" in " ".join(
        tune.result.value.split())


def test_a_fine_tune_that_beats_nothing_keeps_the_model_and_says_so(plugin, tmp_path, qtbot, store_corrections,
                                                                   monkeypatch, notes):
    from napari_medspike.engine import trainer

    real = trainer.validate

    def no_better(*args, **kwargs):  # every epoch scores as the start did: none beats it
        return {**real(*args, **kwargs), "val_dice": 0.5}

    monkeypatch.setattr(trainer, "validate", no_better)
    viewer, widgets, image = plugin
    tune = widgets["Correct and fine-tune"]
    store_corrections(viewer, tune, image, tmp_path / "store", [(slice(30, 60), slice(10, 40))])
    before = session_of(viewer).source
    tune.epochs.value = 1
    with qtbot.waitSignal(tune.run().finished, timeout=WAIT):
        pass
    said = " ".join(tune.result.value.split())
    assert "kept unchanged" in said and "stays" in said and "->" not in said
    # one picture cannot be held out: the curve is not called a validation Dice
    assert {"Dice (trained on)", "loss (trained on)"} <= set(legend_labels(tune.plot))
    assert not any(label.startswith("val") for label in legend_labels(tune.plot))
    assert session_of(viewer).source == before  # the same weights: Segment keeps its model
    assert tune.resegment_worker is None and "photo mask (fine-tuned)" not in viewer.layers
    assert any("not improved" in n for n in notes)
    # no copy of the starting weights is left: not as the output, nor as the run's scratch files
    models = tmp_path / "store" / "models"
    assert not list(models.glob("*.safetensors")) and not list(models.glob("*_run/*.safetensors"))
    assert list(models.glob("*_run/history.*"))  # the run's record stays


def test_fine_tune_after_the_corrections_folder_was_deleted_says_so(plugin, tmp_path, store_corrections, notes):
    import shutil

    viewer, widgets, image = plugin
    tune = widgets["Correct and fine-tune"]
    store_corrections(viewer, tune, image, tmp_path / "store", [(slice(30, 60), slice(10, 40))])
    assert tune.corrections.choices
    shutil.rmtree(tmp_path / "store")
    assert tune.run() is None
    assert "no longer exists" in notes[-1] and not tune.corrections.choices  # the list no longer shows it


def test_finetune_cancel_keeps_best_weights(plugin, tmp_path, qtbot, fine_tune_improves, save, notes):
    viewer, widgets, image = plugin
    tune = widgets["Correct and fine-tune"]
    tune.store_dir.value = str(tmp_path / "store")
    mask = viewer.add_labels(np.zeros((70, 90), np.uint8), name="m")
    for i in range(3):
        mask.data[:] = 0
        mask.data[5 + 10 * i : 30 + 10 * i, 10:50] = 1
        tune.reset_choices()
        tune.image.value, tune.mask.value = image, mask
        save(tune)
    tune.epochs.value = 50
    tune.replay.line_edit.value = str(tmp_path / "store")  # a folder without a number of pairs: said
    worker = tune.run()
    assert any("replay folder chosen with 0 pairs" in n for n in notes), notes
    worker.yielded.connect(lambda e: tune.cancel())
    qtbot.waitUntil(lambda: tune.cancel_event.is_set(), timeout=WAIT)
    # while it stops, a second start (from code: the button is disabled) is refused
    assert tune.run() is None and "a fine-tune is still running" in notes[-1]
    with qtbot.waitSignal(worker.finished, timeout=WAIT):
        pass
    assert "cancelled" in " ".join(tune.result.value.split())
    qtbot.waitUntil(lambda: tune.resegment_worker is None, timeout=WAIT)
    assert load_model(session_of(viewer).source).arch == "medspikeformer"


def test_painting_marks_the_mask_and_autosaves_a_draft(plugin, qtbot, tmp_path, monkeypatch):
    from napari_medspike.widgets import masks

    monkeypatch.setattr(masks, "drafts_folder", lambda: tmp_path / "drafts")
    viewer, widgets, _ = plugin
    with qtbot.waitSignal(widgets["Segment"].run().finished, timeout=WAIT):
        pass
    mask = viewer.layers["photo mask"]
    mask.data[10:31, 20:41] = 0  # so that the stroke below changes pixels (an unchanged paint is no edit)
    mask.paint((20, 30), 1)  # a brush stroke, as the Labels tool makes it
    assert mask.metadata["edited"]
    from napari_medspike.data.corrections import read_draft_names
    from napari_medspike.data.io import read_mask

    qtbot.waitUntil(lambda: "photo mask" in read_draft_names(tmp_path / "drafts"), timeout=10_000)
    np.testing.assert_array_equal(read_mask(read_draft_names(tmp_path / "drafts")["photo mask"]), mask.data > 0)
    # a second segmentation leaves the painted mask alone and adds a new layer
    with qtbot.waitSignal(widgets["Segment"].run().finished, timeout=WAIT):
        pass
    assert "photo mask [2]" in viewer.layers and viewer.layers["photo mask"].data[20, 30] == 1
    # ... in another colour, so the painted mask and the new one are told apart
    assert viewer.layers["photo mask [2]"].metadata["mask_colour"] != viewer.layers["photo mask"].metadata["mask_colour"]
    assert widgets["Segment"].mask_colour.value == viewer.layers["photo mask [2]"].metadata["mask_colour"]  # as shown


def test_segment_a_folder_from_the_dock(plugin, qtbot, tmp_path, notes):
    from skimage import io

    from napari_medspike.data.synthetic import synthetic_lesion
    from napari_medspike.data.video import write_video

    viewer, widgets, _ = plugin
    segment = widgets["Segment"]
    segment.run_folder()
    assert any("choose a folder" in n for n in notes)
    folder = tmp_path / "clinic"
    folder.mkdir()
    for i in range(2):
        io.imsave(folder / f"img{i}.png", synthetic_lesion((40, 56), seed=i)[0], check_contrast=False)
    write_video(folder / "clip.mp4", np.stack([synthetic_lesion((40, 56), seed=9)[0]] * 2))
    (folder / "broken.jpg").write_bytes(b"")
    segment.folder_in.value = str(folder)
    assert segment.output_folder() == tmp_path / "clinic-masks"
    (tmp_path / "clinic-masks").write_text("a file")  # where the masks would go: refused before any work
    assert segment.run_folder() is None and "it is a file, not a folder" in notes[-1]
    (tmp_path / "clinic-masks").unlink()
    segment.threshold.value = 0.3
    worker = segment.run_folder()
    assert worker is not None and not segment.run_button.enabled and segment.cancel_button.enabled
    qtbot.waitUntil(lambda: segment.worker is None, timeout=WAIT)
    written = sorted(p.name for p in (tmp_path / "clinic-masks" / "masks").iterdir())
    assert written == ["clip_f00000.png", "clip_f00001.png", "img0.png", "img1.png"]
    assert (tmp_path / "clinic-masks" / "measurements.csv").is_file()
    assert "4 masks from 4 files" in " ".join(segment.status.value.split())
    assert any("broken.jpg" in n for n in notes)
    assert segment.run_button.enabled and not segment.table.native.isHidden()
    assert segment.table.shape[0] == len(segment.measurements)
    assert segment.table.column_headers[0] == "image"
    assert "area" not in segment.table.column_headers  # no units: the pixel count is the area
    assert "area_px" in segment.table.column_headers
    assert {row["image"] for row in segment.measurements} <= {"clip.mp4", "img0.png", "img1.png"}
    # exported from the dock as the job wrote it: with the mask file of each region
    exported = segment.export_measurements(tmp_path / "table.csv")
    assert exported.read_text() == (tmp_path / "clinic-masks" / "measurements.csv").read_text()
    assert exported.read_text().splitlines()[0].endswith(",mask")


def test_keep_the_start_model_box_reaches_fine_tuning(plugin, tmp_path, qtbot, store_corrections, monkeypatch):
    """Ticked by default (the fine-tuning default); unticked, the fine-tune runs with route=False."""
    from napari_medspike.engine.config import FINETUNE
    from napari_medspike.widgets import finetune as dock_module

    seen = []
    real = dock_module.finetune_steps

    def spy(*args, **kwargs):
        seen.append(kwargs.get("route"))
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(dock_module, "finetune_steps", spy)
    viewer, widgets, image = plugin
    tune = widgets["Correct and fine-tune"]
    store_corrections(viewer, tune, image, tmp_path / "store", [(slice(10, 40), slice(20, 60))])
    tune.epochs.value = 1
    assert tune.keep_start.value is FINETUNE.route is True
    tune.keep_start.value = False
    with qtbot.waitSignal(tune.run().finished, timeout=WAIT):
        pass
    assert seen == [False]
    assert load_model(session_of(viewer).source).arch == "medspikeformer"  # one network, as asked
    qtbot.waitUntil(lambda: tune.resegment_worker is None, timeout=WAIT)


def test_a_correction_of_a_stack_stores_the_frame_shown(plugin, tmp_path, notes, save, load):
    from napari_medspike.widgets.masks import DraftSaver

    viewer, widgets, _ = plugin
    frames = np.random.default_rng(3).random((3, 48, 64)).astype(np.float32)
    stack = viewer.add_image(frames, name="clip")
    masks = viewer.add_labels(np.zeros((3, 48, 64), np.uint8), name="clip mask")
    masks.data[1, 10:30, 20:40] = 1
    assert DraftSaver(masks).save() is None  # a stack's mask is no draft, and no error either
    viewer.dims.set_current_step(0, 1)
    tune = widgets["Correct and fine-tune"]
    tune.store_dir.value = str(tmp_path / "store")
    tune.reset_choices()
    tune.image.value, tune.mask.value = stack, masks
    entry = save(tune)
    assert entry is not None and entry.stem.startswith("clip_1_"), notes
    assert entry.provenance["frame"] == 1 and tune.corrections.native.item(0).text().startswith("clip [1] · ")
    image, mask, _ = tune.store.load(entry.stem)
    assert mask.shape == (48, 64) and mask.sum() == 400
    np.testing.assert_allclose(image[..., 0], frames[1], atol=1 / 255)
    tune.corrections.value = entry.stem
    (tmp_path / "store" / "provenance" / f"{entry.stem}.json").unlink()  # gone meanwhile
    load(tune)
    assert any(f"cannot open correction {entry.stem}" in n for n in notes)


def test_a_stack_mask_is_stored_only_with_the_frame_it_shows_over(plugin, tmp_path, notes, save):
    """A stack mask with fewer frames than its stack gave its last frame as the correction of any
    frame after it, and a mask stretched along the frames gave another frame than the one shown
    under it, silently. A mask placed otherwise on the image plane is stored, with a warning."""
    viewer, widgets, image = plugin
    frames = np.random.default_rng(3).random((4, 48, 64)).astype(np.float32)
    stack = viewer.add_image(frames, name="clip")
    short = viewer.add_labels(np.zeros((2, 48, 64), np.uint8), name="short mask")
    short.data[:, 10:30, 20:40] = 1
    viewer.dims.set_current_step(0, 3)
    tune = widgets["Correct and fine-tune"]
    tune.store_dir.value = str(tmp_path / "store")
    tune.reset_choices()
    tune.image.value, tune.mask.value = stack, short
    assert save(tune) is None
    assert any("'short mask' has 2 frames and 'clip' 4" in n for n in notes), notes
    stretched = viewer.add_labels(np.ones((4, 48, 64), np.uint8), name="stretched mask", scale=(2, 1, 1))
    viewer.dims.set_current_step(0, 2)  # the clip's frame 2, the stretched mask's frame 1
    tune.reset_choices()
    tune.image.value, tune.mask.value = stack, stretched
    assert save(tune) is None
    assert any("shows frame 1 of 'stretched mask' over frame 2 of 'clip'" in n for n in notes), notes
    assert not (tmp_path / "store" / "images").exists() or not any((tmp_path / "store" / "images").iterdir())
    # a 2D mask from a file (scale 1) over the image with scale (2, 3): stored, and warned about
    opened = viewer.add_labels(np.zeros(image.data.shape[:2], np.uint8), name="mask from a file")
    opened.data[5:20, 5:30] = 1
    tune.reset_choices()
    tune.image.value, tune.mask.value = image, opened
    entry = save(tune)
    assert entry is not None and tune.store.load(entry.stem)[1].sum() == 15 * 25
    assert any("'mask from a file' is drawn at another scale or place than 'photo'" in n for n in notes), notes


def test_the_docks_offer_only_the_users_images(plugin, qtbot):
    """The image boxes listed every image layer: with the user's image closed, the docks fell
    back on the plugin's '<image> probability', which Save correction then stored as a training
    image and Segment segmented again. The inspector's maps were offered too."""
    viewer, widgets, image = plugin
    with qtbot.waitSignal(widgets["Segment"].run().finished, timeout=WAIT):
        pass
    with qtbot.waitSignal(widgets["Spike inspector"].run().finished, timeout=WAIT):
        pass
    assert "photo probability" in viewer.layers and len(viewer.layers) > 5
    for name, widget in widgets.items():
        assert list(widget.image.choices) == [image], name
    viewer.layers.remove(image)
    for name, widget in widgets.items():
        assert list(widget.image.choices) == [] and widget.image.value is None, name


def test_segmenting_a_loaded_correction_keeps_its_mask(plugin, tmp_path, qtbot, store_corrections, load):
    """A stored correction opened with Load selected was taken for the plugin's own result:
    Segment (which then picks the loaded image) overwrote the painted mask with a prediction,
    and Save correction would have replaced the stored correction with it."""
    viewer, widgets, image = plugin
    tune, segment = widgets["Correct and fine-tune"], widgets["Segment"]
    store_corrections(viewer, tune, image, tmp_path / "store", [((10, 40), (20, 60))])
    tune.corrections.value = tune.corrections.choices[0]
    load(tune)
    loaded = viewer.layers["photo (stored) mask"]
    painted = np.array(loaded.data)
    segment.reset_choices()
    segment.image.value = viewer.layers["photo (stored)"]
    segment.threshold.value = 0.05  # a prediction unlike the painted box
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    new = viewer.layers["photo (stored) mask [2]"]  # the new mask beside it
    np.testing.assert_array_equal(loaded.data, painted)
    assert not np.array_equal(new.data, painted)


def test_saving_an_image_again_replaces_its_correction_and_remove_takes_one_out(plugin, tmp_path, notes, save,
                                                                                 load):
    viewer, widgets, image = plugin
    tune = widgets["Correct and fine-tune"]
    tune.store_dir.value = str(tmp_path / "store")
    mask = viewer.add_labels(np.zeros((70, 90), np.uint8), name="photo mask")
    tune.reset_choices()
    tune.image.value, tune.mask.value = image, mask
    mask.data[10:30, 20:50] = 1
    first = save(tune)
    mask.data[30:40, 20:50] = 1  # more painting, then Save again: one correction of this image
    second = save(tune)
    assert second.replaced == (first.stem,) and tune.corrections.choices == (second.stem,)
    # listed by image name and time saved
    label = tune.corrections.native.item(0).text()
    assert re.fullmatch(r"photo · \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", label), label
    # corrections of images of one name saved within a second are all listed, under labels of their own
    for seed in range(3):
        tune.store.save(np.random.default_rng(seed).random((20, 20)), np.ones((20, 20)), {"image_layer": "frame"})
    tune.refresh()
    assert len(tune.corrections.choices) == 4 and len({tune.corrections.native.item(i).text() for i in range(4)}) == 4
    assert any("replacing the earlier correction of this image" in n for n in notes), notes
    for stem in set(tune.corrections.choices) - {second.stem}:
        tune.store.remove(stem)
    tune.refresh()
    # opening the stored correction, editing and saving it replaces it too
    tune.corrections.value = second.stem
    load(tune)
    reopened = viewer.layers["photo (stored) mask"]
    reopened.data[0:5, 0:5] = 1
    tune.image.value, tune.mask.value = viewer.layers["photo (stored)"], reopened
    third = save(tune)
    assert third.replaced == (second.stem,) and tune.corrections.choices == (third.stem,)
    assert tune.store.load(third.stem)[1].sum() == 20 * 30 + 10 * 30 + 25
    # Remove selected: out of the list (and of fine-tuning), its files kept aside
    tune.corrections.value = third.stem
    assert tune.remove_selected() == tmp_path / "store" / "removed"
    assert tune.corrections.choices == () and tune.store.list() == []
    assert (tmp_path / "store" / "removed" / "masks" / f"{third.stem}.png").is_file()
    assert any(f"removed correction {third.stem}" in n for n in notes)
    assert tune.remove_selected() is None and any("select a stored correction first" in n for n in notes)


def test_inspector_keeps_the_spike_choice_and_overlay_shows_only_this_runs_maps(plugin, qtbot):
    from napari_medspike.widgets.inspector import viewer_grid

    viewer, widgets, image = plugin
    inspector = widgets["Spike inspector"]
    mine = viewer.add_labels(np.zeros((70, 90), np.uint8), name="my notes")  # a layer of the user's
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):  # side by side: the grid hides it
        pass
    assert viewer_grid(viewer).enabled and not mine.visible
    inspector.view.value = "overlay"
    assert mine.visible and viewer.layers[-1] is mine  # the overlay gives back what the grid hid, on top
    inspector.spikes.value = "q"
    inspector.stage.value = 1
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
        pass
    assert inspector.spikes.value == "q" and "spikes q (stage 1, t)" in viewer.layers  # the choice is used
    visible = {layer.name for layer in viewer.layers if layer.visible}
    assert visible == {"photo", "spikes q (stage 1, t)", "my notes"}, visible  # no maps of the run before


def test_an_image_closed_while_inspecting_gets_no_maps(plugin, qtbot):
    viewer, widgets, image = plugin
    inspector = widgets["Spike inspector"]
    worker = inspector.run()
    viewer.layers.remove(image)
    with qtbot.waitSignal(worker.finished, timeout=WAIT):
        pass
    assert len(viewer.layers) == 0
    assert "was closed while inspecting" in " ".join(inspector.summary.value.split())


def test_an_image_given_other_pixels_while_inspecting_gets_no_maps(plugin, qtbot):
    viewer, widgets, image = plugin
    inspector = widgets["Spike inspector"]
    worker = inspector.run()
    image.data = image.data[::2, ::2].copy()
    with qtbot.waitSignal(worker.finished, timeout=WAIT):
        pass
    assert [layer.name for layer in viewer.layers] == [image.name]
    assert "got other pixels while inspecting" in " ".join(inspector.summary.value.split())


def test_a_cancelled_inspection_says_the_maps_shown_are_the_earlier_ones(plugin, qtbot):
    """Cancel left the summary as it was, with no word that the inspection asked for had stopped."""
    viewer, widgets, image = plugin
    inspector = widgets["Spike inspector"]
    inspector.run()
    inspector.cancel()
    qtbot.waitUntil(lambda: inspector.worker is None, timeout=WAIT)  # (it may end before a signal could be awaited)
    assert " ".join(inspector.summary.value.split()) == "inspection cancelled: nothing shown"
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
        pass
    before = " ".join(inspector.summary.tooltip.split())
    layers = [layer.name for layer in viewer.layers]
    inspector.stage.value = 1
    worker = inspector.run()
    inspector.cancel()
    assert not inspector.cancel_button.enabled
    qtbot.waitUntil(lambda: inspector.worker is None, timeout=WAIT)
    summary = " ".join(inspector.summary.tooltip.split())
    assert summary == f"inspection cancelled: the maps and figures below are the earlier inspection's {before}"
    assert [layer.name for layer in viewer.layers] == layers  # stage 0's maps, as the summary says


def test_cancelling_a_folder_keeps_what_was_written_and_says_so(plugin, qtbot, tmp_path):
    from skimage import io

    from napari_medspike.data.synthetic import synthetic_lesion

    viewer, widgets, _ = plugin
    segment = widgets["Segment"]
    folder = tmp_path / "clinic"
    folder.mkdir()
    for i in range(6):
        io.imsave(folder / f"img{i}.png", synthetic_lesion((40, 56), seed=i)[0], check_contrast=False)
    segment.folder_in.value = str(folder)
    worker = segment.run_folder()
    worker.yielded.connect(lambda event: event.done >= 1 and segment.cancel())
    qtbot.waitUntil(lambda: segment.worker is None, timeout=WAIT)
    written = list((tmp_path / "clinic-masks" / "masks").iterdir())
    assert 1 <= len(written) < 6 and (tmp_path / "clinic-masks" / "measurements.csv").is_file()
    status = " ".join(segment.status.value.split())
    assert status.startswith(f"cancelled: {len(written)} masks from 6 files"), status


def test_tiling_a_model_trained_on_whole_images_is_warned_in_napari(plugin, notes):
    """The shipped models learnt whole resized images: choosing tiled with one says so on screen
    (not only in a log); a model without that record is not warned about."""
    _, widgets, _ = plugin
    segment = widgets["Segment"]
    segment.mode.value = "tiled"
    segment.mode.value = "resize"
    assert not any("suits it" in n for n in notes)  # the tiny checkpoint does not say how it was trained
    segment.model_choice.value = "default"
    segment.mode.value = "tiled"
    assert sum("mode 'resize' suits it" in n for n in notes) == 1
    segment.model_choice.value = "dermoscopy"  # a new model brings its own mode: nothing to say
    assert segment.mode.value == "resize" and sum("mode 'resize' suits it" in n for n in notes) == 1
    segment.mode.value = "tiled"  # said again for the new model
    assert sum("mode 'resize' suits it" in n for n in notes) == 2


def test_the_channel_box_offers_the_channels_of_the_stage_chosen(plugin):
    _, widgets, _ = plugin  # the tiny model: stage widths 8, 16, 32, 64
    inspector = widgets["Spike inspector"]
    for stage, channels in enumerate((8, 16, 32, 64)):
        inspector.stage.value = stage
        assert inspector.channel.max == channels - 1 and f"{channels} channels" in inspector.channel.tooltip
    widgets["Segment"].model_choice.value = "default"  # MedQKFormer records half a stage's channels
    assert inspector.channel.max == 127


def test_an_image_the_user_opens_becomes_the_docks_image_but_results_do_not(plugin, qtbot):
    """Opening a second image and pressing Segment segmented the first one again."""
    viewer, widgets, photo = plugin
    segment, inspector, tune = widgets["Segment"], widgets["Spike inspector"], widgets["Correct and fine-tune"]
    second = viewer.add_image((np.random.default_rng(3).random((40, 50, 3)) * 255).astype(np.uint8), name="second",
                              rgb=True)
    assert segment.image.value is second and inspector.image.value is second
    assert tune.image.value is photo  # (its image and mask go together: the user picks both)
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    assert "second probability" in viewer.layers and segment.image.value is second  # a result is not followed
    with qtbot.waitSignal(inspector.run().finished, timeout=WAIT):
        pass
    assert inspector.image.value is second and segment.image.value is second


def test_fine_tunes_ended_within_one_second_get_their_own_files(tmp_path):
    from datetime import datetime

    from napari_medspike.engine.checkpoint import finetuned_model_path, finetuned_time
    from napari_medspike.widgets.session import model_label

    when = datetime(2026, 11, 29, 10, 15, 0)
    first = finetuned_model_path(tmp_path, when)
    assert first.name == "finetuned_20261129-101500.safetensors"
    first.write_bytes(b"model")
    second = finetuned_model_path(tmp_path, when)
    assert second.name == "finetuned_20261129-101500-2.safetensors"
    first.unlink()
    first.with_suffix(".md").write_text("card")  # a card left without its model still holds the name
    assert finetuned_model_path(tmp_path, when) == second
    # the name reads back as the time it was made, in a model box too
    assert finetuned_time(first) == finetuned_time(second) == when
    assert model_label(str(second)) == "fine-tuned 10:15:00 (2026-11-29)"
    for other in ("finetuned_best", "finetuned_20261399-101500", "my_finetuned_20261129-101500"):
        assert finetuned_time(tmp_path / f"{other}.safetensors") is None and model_label(other) == other


def test_switching_back_to_a_model_reuses_it_unless_its_file_changed(tmp_path):
    """Each switch in Segment's model box loaded the model again on the GUI thread (0.15-1.5 s)."""
    import os

    from napari_medspike.widgets.session import ModelSession

    session = ModelSession()
    first = session.get("default")
    other = save_checkpoint(create_model("medqkformer", widths=(8, 16, 32, 64)), tmp_path / "m.safetensors",
                            input_size=32)
    assert session.get(str(other)) is not first
    assert session.get("default") is first  # switched back: the model loaded before
    kept = session.get(str(other))
    save_checkpoint(create_model("medqkformer", widths=(8, 16, 32, 64)), other, input_size=32)
    os.utime(other, ns=(0, 10**18))  # rewritten (and surely a new modification time)
    session.get("default")
    assert session.get(str(other)) is not kept  # a file written again is read again
    # ... and so is the model in use, asked for again by its path (Segment kept the old weights)
    again = session.get(str(other))
    assert session.get(str(other)) is again
    save_checkpoint(create_model("medqkformer", widths=(8, 16, 32, 64)), other, input_size=48)
    os.utime(other, ns=(0, 2 * 10**18))
    assert session.get(str(other)) is not again and session.model.input_size == 48
    other.unlink()  # a file gone: the model in use stays
    assert session.get(str(other)) is session.model


def test_a_video_read_every_kth_frame_is_numbered_by_its_own_frames(plugin, tmp_path, qtbot, save):
    """A long video opens with every k-th frame: the measurements table numbered its slices 0, 1,
    2 and a correction stored from it said "[1]" for the video's frame 3, where medspike-segment
    names the same frame clip_f00003."""
    import json

    from napari_medspike._reader import read_video_layer
    from napari_medspike.data.synthetic import synthetic_lesion
    from napari_medspike.data.video import write_video

    viewer, widgets, _ = plugin
    path = write_video(tmp_path / "clip.avi", np.stack([synthetic_lesion((48, 64), seed=i)[0] for i in range(7)]))
    [(data, meta, _)] = read_video_layer(path, max_bytes=3 * 48 * 64 * 3)
    video = viewer.add_image(data, **meta)
    assert video.metadata["frames"] == [0, 3, 6]
    segment = widgets["Segment"]
    segment.threshold.value = 0.05  # the tiny model's mask has regions in every frame
    segment.reset_choices()
    segment.image.value = video
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    slices = {row["slice"] for row in segment.measurements}
    assert slices and slices <= {0, 3, 6} and 3 in slices, slices
    viewer.dims.set_current_step(0, 1)
    tune = widgets["Correct and fine-tune"]
    tune.store_dir.value = str(tmp_path / "store")
    tune.reset_choices()
    tune.image.value, tune.mask.value = video, viewer.layers[f"{video.name} mask"]
    entry = save(tune)
    assert entry is not None
    provenance = json.loads((tmp_path / "store" / "provenance" / f"{entry.stem}.json").read_text())
    assert provenance["frame"] == 3, provenance


def test_closing_segment_or_the_inspector_stops_its_job_and_adds_nothing(plugin, qtbot):
    """Closed while it ran, Segment added its layers 18 s later, and the inspector six map layers
    with napari's grid turned on and no dock left to turn it off."""
    viewer, widgets, image = plugin
    before = [layer.name for layer in viewer.layers]
    for name in ("Segment", "Spike inspector"):
        worker = widgets[name].run()
        viewer.window.remove_dock_widget(widgets[name].native)  # what the dock's ✕ does
        qtbot.waitUntil(lambda: not worker.is_running, timeout=WAIT)
        for _ in range(20):
            QApplication.processEvents()
    assert [layer.name for layer in viewer.layers] == before
    assert not viewer.grid.enabled


def test_an_earlier_masks_measurement_never_replaces_a_newer_ones(plugin, qtbot, monkeypatch):
    """Painting a mask measures it again in a worker; a new segmentation finished meanwhile, and
    the earlier mask's rows then replaced the new mask's in the table and in its metadata."""
    import threading

    import napari_medspike.widgets.segment as segment_module

    viewer, widgets, image = plugin
    segment = widgets["Segment"]
    segment.threshold.value = 0.05  # the tiny model's masks have regions
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    gate, measure = threading.Event(), segment_module.measure_slices

    def held_for_photo(*args, **kwargs):
        if kwargs.get("image") == "photo":
            gate.wait(60)
        return measure(*args, **kwargs)

    monkeypatch.setattr(segment_module, "measure_slices", held_for_photo)
    viewer.layers["photo mask"].data[:10, :10] = 1
    earlier = segment._remeasure()  # the photo's mask measured again: held until the end
    other = viewer.add_image(np.random.default_rng(5).random((40, 50)).astype(np.float32), name="other")
    segment.image.value = other
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    assert {row["image"] for row in segment.measurements} <= {"other"}
    gate.set()
    qtbot.waitUntil(lambda: not earlier.is_running, timeout=WAIT)
    for _ in range(20):
        QApplication.processEvents()
    assert segment.measurements and {row["image"] for row in segment.measurements} == {"other"}
    assert {row["image"] for row in viewer.layers["other mask"].metadata["measurements"]} == {"other"}


def legend_labels(plot) -> list[str]:
    """The labels of a dock plot's legend (beneath its axes)."""
    return [text.get_text() for legend in plot.figure.legends for text in legend.get_texts()]


def test_a_cmyk_jpeg_opened_by_napari_is_segmented_from_its_colours(plugin, qtbot, tmp_path, notes):
    """napari's own reader gives a CMYK JPEG's ink as RGBA: the picture showed transparent and
    Segment returned an empty mask (Dice 0.00 against the RGB picture's, where medspike-segment,
    which converts the file, had 0.99)."""
    from PIL import Image

    from napari_medspike.inference.predictor import predict

    viewer, widgets, photo = plugin
    colours = np.asarray(photo.data)
    path = tmp_path / "print.jpg"
    Image.fromarray(colours).convert("CMYK").save(path, quality=95)
    expected = np.asarray(Image.open(path).convert("RGB"))
    layer = viewer.open(path, plugin="napari")[0]
    assert layer.data.shape == (70, 90, 4)  # the ink, as napari reads it
    segment = widgets["Segment"]
    segment.reset_choices()
    segment.image.value = layer
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    np.testing.assert_array_equal(layer.data, expected)  # the layer now shows the picture's colours
    assert any("CMYK JPEG" in n and "file is unchanged" in n for n in notes), notes
    model = segment.session.get()
    np.testing.assert_allclose(viewer.layers["print probability"].data,
                               predict(model, expected, flips=segment.flips.value), atol=1e-4)
    # an ordinary RGBA picture of the same shape is left as it is
    rgba = viewer.add_image(np.dstack([colours, np.full((70, 90), 255, np.uint8)]), name="rgba", rgb=True)
    segment.reset_choices()
    segment.image.value = rgba
    with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
        pass
    assert rgba.data.shape == (70, 90, 4)


def test_a_photo_that_asks_to_be_turned_is_segmented_as_napari_shows_it_and_says_so(plugin, qtbot, tmp_path, notes):
    from PIL import Image

    viewer, widgets, photo = plugin
    exif = Image.Exif()
    exif[274] = 8
    Image.fromarray(np.asarray(photo.data)).save(tmp_path / "phone.jpg", exif=exif)
    layer = viewer.open(tmp_path / "phone.jpg", plugin="napari")[0]
    segment = widgets["Segment"]
    segment.reset_choices()
    segment.image.value = layer
    for _ in range(2):
        with qtbot.waitSignal(segment.run().finished, timeout=WAIT):
            pass
    assert viewer.layers["phone mask"].data.shape == (70, 90)  # as stored, as napari shows it
    told = [n for n in notes if "EXIF" in n]
    assert len(told) == 1 and "turned 90° anticlockwise" in told[0]  # once, not at every run


def test_the_inspection_summary_says_what_the_maps_show():
    from types import SimpleNamespace

    from napari_medspike.analysis.maps import INTERACTION_VIEWS
    from napari_medspike.widgets.inspector import inspection_summary

    report = SimpleNamespace(sops=2.04e9, analog_macs=0.01e9, energy_pj=1.91e9, ann_energy_pj=5.90e9)
    maps = SimpleNamespace(stage_firing_rates=[0.079, 0.077], spike_levels=5, virtual=False, timesteps=4,
                           interaction_correlation=0.9, expert=None)
    text, note = inspection_summary(maps, report, INTERACTION_VIEWS[0], decomposed=False, slider="t")
    assert text.startswith("T = 4 timesteps: move the t slider")
    assert "firing rate per encoder stage (k/5): 0.079, 0.077" in text
    assert "estimated energy 1.91 mJ vs dense ANN 5.90 mJ (32%)" in text
    assert "alike (r ≥ 0.90)" in text and "up to 5 spikes per timestep" in note
    # uncorrelated maps get the plain legend; one binary timestep neither the slider nor the note
    maps = SimpleNamespace(**{**vars(maps), "interaction_correlation": 0.2, "timesteps": 1, "spike_levels": 1,
                              "expert": "dermoscopy"})
    text, note = inspection_summary(maps, report, INTERACTION_VIEWS[0], decomposed=False)
    assert text.startswith("answered by dermoscopy") and "T = 1: a single timestep" in text
    assert "active or inactive Q" in text and note == ""
    text, _ = inspection_summary(maps, report, INTERACTION_VIEWS[1], decomposed=True)
    assert "interactions as sum, shares and φ" in text
