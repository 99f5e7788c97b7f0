"""GUI fixtures: a viewer with the plugin's widgets, a tiny checkpoint, collected notifications."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_medspike import create_model, save_checkpoint


@pytest.fixture
def tiny_checkpoint(tmp_path):
    model = create_model("medspikeformer", widths=(8, 16, 32, 64), timesteps=2)
    return save_checkpoint(model, tmp_path / "tiny.safetensors", input_size=64)


@pytest.fixture(autouse=True)
def fresh_session():
    """Each test's viewers start without a current model; after it, once its viewers are closed,
    no closed dock may still listen to a model session (a leak the widgets must not have)."""
    import gc

    from napari_medspike.widgets.session import _SESSIONS

    _SESSIONS.clear()  # (models loaded by another test are not shared)
    yield
    gc.collect()
    listening = [ref() for session in list(_SESSIONS.values()) for ref in session._listeners if ref() is not None]
    _SESSIONS.clear()
    assert not listening, f"closed docks still subscribed to the model session: {listening}"


@pytest.fixture
def notes():
    """Messages of napari notifications shown during the test."""
    from napari.utils.notifications import notification_manager

    messages: list[str] = []
    notification_manager.notification_ready.connect(lambda n: messages.append(str(n.message)))
    yield messages
    notification_manager.notification_ready.disconnect()


@pytest.fixture
def plugin(make_napari_viewer, tiny_checkpoint):
    """A viewer with the three widgets docked, the tiny model chosen, and an RGB image."""
    viewer = make_napari_viewer()
    widgets = {}
    for name in ("Segment", "Spike inspector", "Correct and fine-tune"):
        _, widgets[name] = viewer.window.add_plugin_dock_widget("napari-medspike", name)
    segment = widgets["Segment"]
    segment.model_choice.value = segment.model_choice.choices[-1]  # "checkpoint file…"
    segment.checkpoint.value = str(tiny_checkpoint)
    rgb = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    layer = viewer.add_image(rgb, name="photo", rgb=True, scale=(2.0, 3.0), translate=(5.0, -4.0))
    for w in widgets.values():
        w.reset_choices()
        w.image.value = layer
    return viewer, widgets, layer


def press_save(tune, timeout_s: float = 60.0):
    """Press the fine-tune dock's Save correction and wait while it writes (in a worker): the
    stored entry, or None when the dock refused or the write failed (a notification says why)."""
    if tune.save_correction() is None:
        return None
    _wait_for(lambda: tune.save_worker is None, "Save correction did not finish", timeout_s)
    return tune.last_saved


def _wait_for(done, failure: str, timeout_s: float) -> None:
    """Run Qt's events until ``done()`` (a dock's worker ended), or raise ``TimeoutError(failure)``."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(failure)
        QApplication.processEvents()
        time.sleep(0.005)


def press_load(tune, timeout_s: float = 60.0) -> bool:
    """Press the fine-tune dock's Load selected and wait while it reads the files (in a worker):
    whether it opened the correction (False: refused, or the read failed; a notification says why)."""
    if tune.load_selected() is None:
        return False
    _wait_for(lambda: tune.load_worker is None, "Load selected did not finish", timeout_s)
    return True


@pytest.fixture
def load():
    """:func:`press_load`, for tests."""
    return press_load


@pytest.fixture
def save():
    """:func:`press_save`, for tests."""
    return press_save


@pytest.fixture
def store_corrections():
    """The helper below, for tests that need stored corrections."""
    return _store_corrections


def _store_corrections(viewer, tune, image, store, boxes, name="photo mask"):
    """Point the fine-tune dock at ``store`` and save one correction per box ``(rows, cols)`` of
    foreground, painted into a new Labels layer ``name``; returns the layer. The store keeps one
    correction per picture, so the first box is a correction of ``image`` and each further one of
    a new layer ``"<image> <n>"`` holding ``image`` shifted by a few columns."""
    tune.store_dir.value = str(store)
    mask = viewer.add_labels(np.zeros(image.data.shape[:2], np.uint8), name=name)
    for i, (rows, cols) in enumerate(boxes):
        picture = image if i == 0 else viewer.add_image(np.roll(image.data, 3 * i, axis=1), name=f"{image.name} {i + 1}")
        mask.data[:] = 0
        mask.data[rows, cols] = 1
        tune.reset_choices()
        tune.image.value, tune.mask.value = picture, mask
        press_save(tune)
    tune.image.value = image
    return mask


@pytest.fixture
def fine_tune_improves(monkeypatch):
    """For tests of what follows a fine-tune that beat its start (the model switch, the
    re-segmentation): a tiny model's one epoch on a few boxes may or may not beat it, so the
    dock is told it did. Whether it did is the engine's answer, tested in tests/test_training.py."""
    import dataclasses

    from napari_medspike.widgets import finetune as dock_module

    real = dock_module.finetune_steps

    def improved(*args, **kwargs):
        result = yield from real(*args, **{**kwargs, "keep_unimproved": True})  # (the weights written either way)
        return dataclasses.replace(result, improved=True)

    monkeypatch.setattr(dock_module, "finetune_steps", improved)
