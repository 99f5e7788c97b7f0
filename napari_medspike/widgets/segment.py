"""Segment dock widget: image, model, device, threshold, mode -> probability and mask layers."""

from __future__ import annotations

from typing import Any

import napari
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSlider, Label, PushButton, create_widget

from ..engine.checkpoint import list_models
from ..inference.predictor import MODES, Progress, pick_device, predict_steps, recommended_flips
from ._common import (
    SESSION,
    add_segmentation_layers,
    follow_layers,
    selected_image_and_model,
    start_worker,
    summary_of,
)

CHECKPOINT_FILE = "checkpoint file…"


class SegmentWidget(Container):
    """Segment the chosen image layer with a shipped model or a checkpoint, off the GUI thread."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.worker: Any = None
        names = list(list_models())
        self.image = create_widget(annotation=napari.layers.Image, label="image")
        self.model_choice = ComboBox(label="model", choices=[*names, CHECKPOINT_FILE],
                                     value=names[0] if names else CHECKPOINT_FILE)
        self.checkpoint = FileEdit(label="checkpoint", filter="*.safetensors", visible=not names)
        self.card = Label(value="")
        self.device = ComboBox(label="device", choices=["auto", "cuda", "mps", "cpu"], value="auto")
        self.device_note = Label(value=pick_device("auto")[1])
        self.threshold = FloatSlider(label="threshold", min=0.05, max=0.95, step=0.05, value=0.5)
        self.mode = ComboBox(label="mode", choices=list(MODES), value="resize",
                             tooltip="resize: whole image at the model's size; tiled: overlapping tiles at full resolution")
        self.flips = CheckBox(text="mirror test-time augmentation",
                              tooltip="average the four mirror images' predictions: 4x the compute, usually "
                              "a little more accurate (set to what the model's card recommends when a model is chosen)")
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend([self.image, self.model_choice, self.checkpoint, self.card, self.device, self.device_note,
                     self.threshold, self.mode, self.flips, self.run_button, self.cancel_button, self.status])
        self.model_choice.changed.connect(self._model_changed)
        self.checkpoint.changed.connect(self._model_changed)
        self.device.changed.connect(lambda v: setattr(self.device_note, "value", pick_device(v)[1]))
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        follow_layers(self, self.viewer)
        SESSION.subscribe(self._session_changed)
        self._model_changed()

    # --- model choice -------------------------------------------------------------------
    def model_source(self) -> str | None:
        """The shipped name or checkpoint path the user chose (None: nothing chosen yet)."""
        if self.model_choice.value == CHECKPOINT_FILE:
            path = str(self.checkpoint.value)
            return path if path not in ("", ".") else None
        return self.model_choice.value

    def _model_changed(self, *_: Any) -> None:
        self.checkpoint.visible = self.model_choice.value == CHECKPOINT_FILE
        source = self.model_source()
        if source is None:
            self.card.value = "choose a checkpoint (.safetensors)"
            return
        try:
            model = SESSION.get(source)
            self.card.value = summary_of(model)
            self.flips.value = recommended_flips(model)
        except Exception as err:  # a bad file must not break the dock
            self.card.value = f"cannot load: {err}"
            napari.utils.notifications.show_error(f"cannot load model {source}: {err}")

    def _session_changed(self, source: str) -> None:
        if SESSION.model is not None:
            self.card.value = f"{summary_of(SESSION.model)}\n(current: {source})"

    # --- running ------------------------------------------------------------------------
    def run(self) -> Any:
        """Start segmentation of the selected image layer; returns the worker."""
        layer = self.image.value
        chosen = selected_image_and_model(layer, self.model_source())
        if chosen is None:
            return None
        data, model = chosen
        device, note = pick_device(self.device.value)
        self.device_note.value = note
        mode, threshold, flips = self.mode.value, float(self.threshold.value), bool(self.flips.value)

        def job():
            yield Progress(0, 1, "starting")
            return (yield from predict_steps(model, data, mode=mode, device=device, flips=flips))

        def done(prob: Any) -> None:
            add_segmentation_layers(self.viewer, layer, prob, threshold)
            extra = ", mirror TTA" if flips else ""
            self.status.value = f"segmented '{layer.name}' ({mode}{extra}, {device.type})"

        self._busy(True)
        self.status.value = f"segmenting '{layer.name}'…"
        self.worker = start_worker(job, "Segment", on_return=done, on_finish=lambda: self._busy(False))
        return self.worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.status.value = "cancelling…"

    def _busy(self, busy: bool) -> None:
        self.run_button.enabled = not busy
        self.cancel_button.enabled = busy
        if not busy:
            self.worker = None
