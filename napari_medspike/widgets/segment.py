"""Segment dock widget: image, model, device, threshold, mode -> probability and mask layers."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSlider, Label, PushButton, Table

from ..common import Progress, check_writable
from ..engine.checkpoint import list_models
from ..inference.measure import measure_slices, summarise, write_csv
from ..inference.predictor import (
    PREDICTION_MODES,
    mode_note,
    predict_stack_steps,
    recommended_flips,
    recommended_mode,
    shape_note,
)
from ..runtime import bf16_inference, pick_device
from .docking import call_when_closed, follow_layers, image_box, tab_with_sibling_docks
from .jobs import start_worker
from .layers import frame_numbers, range_note, shown_range
from .layout import compact_label, DockContainer, elide, full_width, make_narrow, show_text, typed_folder
from .masks import add_segmentation_layers, MASK_COLOURS, mask_look, MASK_STYLES, set_own_data, style_mask
from .session import model_choices, model_label, selected_image_and_model, session_of, summary_of

if TYPE_CHECKING:  # annotations only
    from napari.layers import Image, Labels, Layer

CHECKPOINT_FILE = "checkpoint file…"
#: The status line while a cancelled job winds down.
CANCELLING = "cancelling…"


def layer_spacing(layer: Layer) -> tuple[tuple[float, float], str]:
    """A layer's pixel size along y and x and the squared unit its areas are in: ``px²`` when it
    has neither physical units nor a scale, ``scale units²`` when it has a scale without units
    (an area of 4041.64 was labelled px² beside 101041 pixels)."""
    spacing = tuple(float(v) for v in layer.scale[-2:])
    pint_units = list(getattr(layer, "units", ())[-2:])
    units = [str(u) for u in pint_units]
    if len(units) == 2 and units[0] != units[1] and "pixel" not in units:
        try:  # e.g. rows in mm, columns in µm: columns converted to mm (the area was 1000 times too large)
            spacing = (spacing[0], spacing[1] * float((1 * pint_units[1]).to(pint_units[0]).magnitude))
        except Exception:  # lengths and something else: no area unit can be named
            return spacing, "scale units²"  # type: ignore[return-value]
    if units and units[0] not in ("pixel", "px"):
        unit = f"{units[0]}²"
    else:
        unit = "px²" if spacing == (1.0, 1.0) else "scale units²"
    return spacing, unit  # type: ignore[return-value]


@dataclass
class MeasuredMask:
    """The last mask Segment made and measured, with what measuring it again needs."""

    layer: Labels  #: its Labels layer
    options: dict[str, Any]  #: ``measure_slices``' spacing, unit, image name and slice numbers
    probabilities: np.ndarray
    unit: str  #: the unit of its areas (``px²`` without physical units)


class SegmentWidget(DockContainer):
    """Segment the chosen image layer with a shipped model or a checkpoint, off the GUI thread."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.session = session_of(napari_viewer)  # the model its docks share
        self.worker: Any = None
        self._choosing = False  # True while the dock itself sets the model box
        self._kept_told: set[Any] = set()  # samples whose suggested model was not taken, once said
        self._folder_cancel: threading.Event | None = None  # set: the folder job running stops
        names = list(list_models())
        self.image = image_box(self.viewer)
        self.model_choice = ComboBox(label="model", choices=self._model_choices,
                                     value=names[0] if names else CHECKPOINT_FILE,
                                     tooltip="shipped models, checkpoints used or fine-tuned since napari started, "
                                     "fine-tuned checkpoints in the corrections folders fine-tuned in, or any checkpoint file")
        self.checkpoint = FileEdit(label="checkpoint", filter="*.safetensors", visible=not names)
        self.card = Label(value="")
        self.device = ComboBox(label="device", choices=["auto", "cuda", "mps", "cpu"], value="auto")
        self.device_note = Label(value="")
        self.threshold = FloatSlider(label="threshold", min=0.05, max=0.95, step=0.05, value=0.5,
                                     tooltip="probability above which a pixel belongs to the mask; moving it "
                                     "redraws the last mask from its probabilities, unless it was painted on")
        self.mode = ComboBox(label="mode", choices=list(PREDICTION_MODES), value="resize",
                             tooltip="resize: whole image at the model's size; tiled: overlapping tiles at full resolution, "
                             "for models trained on random crops (e.g. for histology); a model trained on whole "
                             "resized images sees too little of the image in a tile (set to the mode the model "
                             "was trained for when a model is chosen)")
        self.flips = CheckBox(text="mirror TTA",
                              tooltip="mirror test-time augmentation: average the four mirror images' predictions: "
                              "4x the compute, usually a little more accurate (set to what the model's card "
                              "recommends when a model is chosen)")
        self.mask_colour = ComboBox(label="mask colour", choices=list(MASK_COLOURS), value=MASK_COLOURS[0],
                                    tooltip="a colour that stands out on the image")
        self.mask_style = ComboBox(label="mask style", choices=list(MASK_STYLES), value=MASK_STYLES[0],
                                   tooltip="outline: the tissue under the mask stays visible; filled: 50 % opaque")
        self.run_button = PushButton(text="Segment",
                                     tooltip="segment the image layer: a 2D image, or every image of a stack "
                                     "(video frames, tiles, slices), into an aligned Labels layer")
        self.folder_in = FileEdit(label="folder", mode="d",
                                  tooltip="a folder of images (png, jpg, bmp, tif) and videos (mp4, avi, mov, mkv, webm)")
        self.folder_out = FileEdit(label="save to", mode="d",
                                   tooltip="where masks/, measurements.csv (and probabilities/) go; empty: a "
                                   "folder '<folder>-masks' beside the input folder")
        self.folder_probabilities = CheckBox(text="save probabilities", value=False,
                                             tooltip="also write each probability map as a float32 TIFF")
        self.folder_button = PushButton(text="Segment folder",
                                        tooltip="segment every image and every video frame in the folder with "
                                        "the settings above; writes 0/255 PNG masks and a measurement CSV")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.measurements: list[dict[str, Any]] = []
        self._mask_layer: Any = None  # the last mask layer made here
        self._measured: MeasuredMask | None = None  # what measuring it again needs
        self._measuring = 0  # counts measurements started: only the latest one's rows are shown
        from qtpy.QtCore import QTimer

        self._remeasure_timer = QTimer(self.native)  # measures again once painting pauses, not at every dab
        self._remeasure_timer.setSingleShot(True)
        self._remeasure_timer.setInterval(400)
        self._remeasure_timer.timeout.connect(self._remeasure)
        self._rethreshold_timer = QTimer(self.native)  # applies the threshold once the slider rests
        self._rethreshold_timer.setSingleShot(True)
        self._rethreshold_timer.setInterval(200)
        self._rethreshold_timer.timeout.connect(self.apply_threshold)
        self.table = Table(value={"slice": [], "area_px": [], "area": [], "mean_probability": []},
                           visible=False, tooltip="one row per connected region of the mask, numbered on the left "
                           "(area in pixels and in the layer's units, mean probability inside it)")
        self.table.native.setMinimumHeight(140)
        self.table_note = Label(value="")
        self.export_button = PushButton(text="Export measurements (CSV)", visible=False)
        for label in (self.card, self.device_note, self.status):
            compact_label(label)
        self.extend([self.image, self.model_choice, self.checkpoint, self.card, self.device, self.device_note,
                     self.threshold, self.mode, self.flips, self.mask_colour, self.mask_style, self.run_button,
                     self.folder_in, self.folder_out, self.folder_probabilities, self.folder_button,
                     self.cancel_button, self.status, self.table_note, self.table, self.export_button])
        compact_label(self.table_note)
        full_width(self.card, self.device_note, self.status, self.table_note, self.table)
        self.export_button.changed.connect(lambda: self.export_measurements())
        self.threshold.changed.connect(lambda *_: self._rethreshold_timer.start())
        self.mask_colour.changed.connect(self._restyle)
        self.mask_style.changed.connect(self._restyle)
        self.model_choice.changed.connect(self._model_changed)
        self.mode.changed.connect(self._warn_mode)
        self.image.changed.connect(self._image_changed)
        self.checkpoint.changed.connect(self._model_changed)
        self.device.changed.connect(lambda v: show_text(self.device_note, pick_device(v)[1]))
        self.run_button.changed.connect(self.run)
        self.folder_button.changed.connect(self.run_folder)
        self.cancel_button.changed.connect(self.cancel)
        follow_layers(self, self.viewer, new_images=True)
        self.session.subscribe(self._session_changed)
        call_when_closed(self, lambda: self.session.unsubscribe(self._session_changed))
        call_when_closed(self, self._stop_following_paint)
        #: the running job's ticket: closing the dock takes it away, and the job adds nothing
        self._ticket: object | None = None
        call_when_closed(self, self._dock_closed)
        show_text(self.device_note, pick_device("auto")[1])
        self._model_changed()
        #: whether the model box holds the dock's choice (its first model, a sample's
        #: suggestion), which a sample may replace, rather than the user's or a fine-tune's
        self._automatic_model = True
        self._image_changed(self.image.value)  # a sample opened before the dock
        make_narrow(self)
        tab_with_sibling_docks(self)

    # --- model choice -------------------------------------------------------------------
    def _model_choices(self, *_: Any) -> list[tuple[str, str]]:
        from ..data.corrections import known_stores

        return [*model_choices(self.session, tuple(store / "models" for store in known_stores())), (CHECKPOINT_FILE, CHECKPOINT_FILE)]

    def model_source(self) -> str | None:
        """The shipped name or checkpoint path the user chose (None: nothing chosen yet)."""
        if self.model_choice.value == CHECKPOINT_FILE:
            path = str(self.checkpoint.value)
            return path if path not in ("", ".") else None
        return self.model_choice.value

    def _image_changed(self, layer: Image | None) -> None:
        """A bundled sample chosen: the shipped model trained on its kind of image (the polyp
        model scored Dice 0.02 on the dermoscopy sample), said in a notification."""
        from .._sample_data import SUGGESTED_MODEL

        suggested = getattr(layer, "metadata", {}).get(SUGGESTED_MODEL)
        if suggested not in self.model_choice.choices or suggested == self.model_choice.value:
            return
        if not self._automatic_model:  # the user's choice (or a fine-tuned model) stays
            key = getattr(layer, "unique_id", id(layer))
            if key not in self._kept_told:  # once per sample: not again whenever the box falls back on it
                self._kept_told.add(key)
                napari.utils.notifications.show_info(
                    f"'{suggested}' is the model trained on images like '{layer.name}'; keeping "
                    f"{elide(model_label(self.model_source() or ''), 40)}, the model chosen")
            return
        self._choosing = True
        try:
            self.model_choice.value = suggested
        finally:
            self._choosing = False
        napari.utils.notifications.show_info(
            f"model '{suggested}' chosen for the sample '{layer.name}': it was trained on images of its kind")

    def _model_changed(self, *_: Any) -> None:
        self._automatic_model = self._choosing
        self.checkpoint.visible = self.model_choice.value == CHECKPOINT_FILE
        source = self.model_source()
        if source is None:
            show_text(self.card, "choose a checkpoint (.safetensors)")
            return
        try:
            model = self.session.get(source)
            self._show_card(source)
            self.flips.value = recommended_flips(model)
            self.mode.value = recommended_mode(model)
            self._warn_mode()
        except Exception as err:  # a bad file must not break the dock
            show_text(self.card, elide(f"cannot load: {err}", 120))
            napari.utils.notifications.show_error(f"cannot load model {source}: {err}")

    def _warn_mode(self, *_: Any) -> None:
        """Say so when the chosen mode does not suit how the chosen model was trained."""
        note = mode_note(self.session.model, self.mode.value) if self.session.model is not None else None
        if note is not None:
            napari.utils.notifications.show_warning(note)

    def _show_card(self, source: str) -> None:
        if self.session.model is not None:
            show_text(self.card, summary_of(self.session.model))
            self.card.tooltip = f"{source}" if source not in list_models() else f"shipped model '{source}'"

    def _session_changed(self, source: str) -> None:
        """Another dock made ``source`` current (e.g. a fine-tune finished): offer it in the box
        and select it, so Segment uses it. The mirror TTA box keeps the user's setting (a model
        picked in this box presets it to the model's recommendation)."""
        if source != self.model_source():
            flips = self.flips.value
            self.model_choice.reset_choices()
            self.model_choice.value = source
            self.flips.value = flips
        self._show_card(source)

    # --- running ------------------------------------------------------------------------
    def run(self) -> Any:
        """Start segmentation of the selected image layer; returns the worker."""
        layer = self.image.value
        chosen = selected_image_and_model(layer, self.session, self.model_source(), stacks=True)
        if chosen is None:  # (the notification says why; the last result's line would mislead)
            show_text(self.status, "nothing segmented: see the message at the bottom right")
            return None
        data, model = chosen
        pixels_of = layer.data  # replaced while segmenting: the mask would lie over other pixels
        source = self.session.source  # the model that makes this mask, whatever is chosen when it comes
        device, note = pick_device(self.device.value)
        show_text(self.device_note, note)
        mode, threshold, flips = self.mode.value, float(self.threshold.value), bool(self.flips.value)
        rgb = bool(getattr(layer, "rgb", False))
        value_range = shown_range(layer)  # not 8-bit: as napari shows it

        spacing, unit = layer_spacing(layer)
        frames = frame_numbers(layer)  # a long video's own frame numbers, for the table
        if (squeezed := shape_note(*np.shape(data)[-3 if rgb else -2:][:2], mode)) is not None:
            napari.utils.notifications.show_warning(squeezed)

        def job():
            yield Progress(0, 1, "starting")
            prob = yield from predict_stack_steps(model, data, rgb=rgb, mode=mode, device=device, flips=flips,
                                                  value_range=value_range)
            # measured here, not on the GUI thread (0.7 s for a 12-megapixel mask)
            return prob, measure_slices(prob >= threshold, prob, spacing, unit, image=layer.name,
                                        slice_numbers=frames)

        ticket = self._ticket = object()

        def done(result: Any) -> None:
            prob, rows = result
            if ticket is not self._ticket:  # the dock was closed while it ran
                return
            if layer not in self.viewer.layers:  # closed while it was being segmented
                show_text(self.status, f"'{elide(layer.name, 40)}' was closed while segmenting: no layers added")
                return
            if layer.data is not pixels_of:
                show_text(self.status, f"'{elide(layer.name, 40)}' got other pixels while segmenting: no layers "
                          "added (segment it again)")
                return
            _, self._mask_layer = add_segmentation_layers(self.viewer, layer, prob, threshold,
                                                          settings={"mode": mode, "flips": flips, "device": device.type},
                                                          colour=self.mask_colour.value, style=self.mask_style.value,
                                                          model_source=source)
            colour = mask_look(self._mask_layer)[0]  # another colour beside a painted mask kept: the box says which
            if colour != self.mask_colour.value:
                with self.mask_colour.changed.blocked():
                    self.mask_colour.value = colour
            self._measure(layer, prob, rows)
            self.apply_threshold()  # the slider moved while segmenting: the mask follows it
            extra = (", mirror TTA" if flips else "") + (", bf16" if bf16_inference(model, device) else "")
            images = f"{prob.shape[0]} images, " if prob.ndim == 3 else ""
            show_text(self.status, f"segmented '{elide(layer.name, 40)}' with {elide(model_label(source), 40)} "
                      f"({images}{mode}{extra}, {device.type}{range_note(value_range)})")

        self._busy(True)
        show_text(self.status, f"segmenting '{elide(layer.name, 40)}'…")
        def failed(err: Exception) -> None:
            show_text(self.status, f"segmenting '{elide(layer.name, 40)}' failed: {err}")

        self.worker = start_worker(job, "Segment", on_return=done, on_finish=lambda: self._busy(False),
                                   on_error=failed)
        return self.worker

    def output_folder(self) -> Path | None:
        """Where :meth:`run_folder` writes: the chosen folder, or ``<input>-masks`` beside the input."""
        source = typed_folder(self.folder_in.value)
        if source is None:
            return None
        return typed_folder(self.folder_out.value) or source.parent / f"{source.name}-masks"

    def run_folder(self) -> Any:
        """Segment every image and video frame of the chosen folder to mask files and a measurement
        table, off the GUI thread, with the settings above; returns the worker."""
        from napari.utils.notifications import show_error, show_info, show_warning

        from ..inference.folder import list_inputs, segment_folder_steps

        out = self.output_folder()
        if out is None:
            show_error("choose a folder of images or videos first")
            return None
        source = typed_folder(self.folder_in.value)
        try:
            inputs = list_inputs(source)
            check_writable(out)
            model = self.session.get(self.model_source())
        except Exception as err:  # a missing/empty or unwritable folder, a bad checkpoint: say so, do not raise
            show_error(str(err))
            return None
        device, note = pick_device(self.device.value)
        show_text(self.device_note, note)
        options = dict(threshold=float(self.threshold.value), mode=self.mode.value, device=device,
                       flips=bool(self.flips.value), probabilities=bool(self.folder_probabilities.value))

        # Cancel stops the job between images and it returns what it wrote (the table included)
        self._folder_cancel = cancel = threading.Event()

        def job():
            return (yield from segment_folder_steps(model, source, out, cancel=cancel, **options))

        ticket = self._ticket = object()

        def done(result: Any) -> None:
            if ticket is not self._ticket:  # the dock was closed: the files written stay, no table
                return
            self._stop_following_paint()
            self._measuring += 1  # (a measurement of an earlier mask still running is older)
            self.measurements, self._measured = result.rows, None  # (written files: nothing to measure again)
            self._show_measurements("px²", len(result.masks), by_file=True)
            skipped = f"; {len(result.skipped)} unreadable files skipped (see the notification)" if result.skipped else ""
            if result.incomplete:
                skipped += f"; {len(result.incomplete)} videos end early (see the notification)"
            state = "cancelled: " if result.cancelled else ""
            show_text(self.status, f"{state}{len(result.masks)} masks from {len(inputs)} files in {out}{skipped}")
            self.status.tooltip = str(out)
            if result.skipped:
                show_error("skipped:\n" + "\n".join(result.skipped[:10]))
            if result.incomplete:
                show_warning("videos that end early:\n" + "\n".join(result.incomplete[:10]))
            earlier = f" (the earlier run's are in {result.earlier})" if result.earlier is not None else ""
            show_info(f"masks and measurements.csv written to {out}{earlier}")

        self._busy(True)
        show_text(self.status, f"segmenting {len(inputs)} files in '{elide(source.name, 30)}'…")
        def failed(err: Exception) -> None:
            show_text(self.status, f"segmenting '{elide(source.name, 30)}' failed: {err}")

        self.worker = start_worker(job, "Segment folder", on_return=done, on_finish=lambda: self._busy(False),
                                   on_error=failed)
        return self.worker

    # --- measurements -----------------------------------------------------------------------
    def _measure(self, layer: Labels, prob: np.ndarray, rows: list[dict[str, Any]]) -> None:
        """Show the new mask's measurements (area, connected regions and mean probability per
        region, per slice) in the table, keep them in the mask layer's metadata, for CSV export.
        Painting the mask measures it again once painting pauses (in a worker), and an export
        measures the mask as it is then: the figures are those of the mask as corrected."""
        spacing, unit = layer_spacing(layer)
        self._stop_following_paint()  # painting an earlier mask no longer measures this one again
        self._measuring += 1  # a measurement of the earlier mask still running must not show its rows here
        options = {"spacing": spacing, "unit": unit, "image": layer.name, "slice_numbers": frame_numbers(layer)}
        self._measured = MeasuredMask(self._mask_layer, options, prob, unit)
        self._mask_layer.events.paint.connect(self._painted)
        self._show_rows(rows)

    def _stop_following_paint(self) -> None:
        """Painting the last mask measured here no longer measures it again (a new mask is
        measured, or the dock was closed)."""
        if self._measured is not None:
            self._measured.layer.events.paint.disconnect(self._painted)

    def _painted(self, *_: Any) -> None:
        try:
            self._remeasure_timer.start()
        except RuntimeError:  # the dock was closed; its mask layer stays
            pass

    def _mask_now(self) -> tuple[Any, np.ndarray] | None:
        """The last mask made here as it is now (a copy: painting may go on) and its layer."""
        if self._measured is None or self._measured.layer not in self.viewer.layers:
            return None
        return self._measured.layer, np.asarray(self._measured.layer.data) != 0

    def _remeasure(self) -> Any:
        """Measure the last mask made here again, in a worker; returns it (None: no such mask)."""
        now = self._mask_now()
        if now is None:
            return None
        options, probs = self._measured.options, self._measured.probabilities
        self._measuring += 1
        ticket = self._measuring

        def job():
            yield None
            return measure_slices(now[1], probs, **options)

        def done(rows: list[dict[str, Any]]) -> None:
            if ticket == self._measuring:  # not overtaken by a later stroke's measurement
                self._show_rows(rows)

        return start_worker(job, "Measure", on_return=done)

    def _show_rows(self, rows: list[dict[str, Any]]) -> None:
        self.measurements = rows
        if self._measured is not None:
            self._measured.layer.metadata["measurements"] = rows
            probs = self._measured.probabilities
            self._show_measurements(self._measured.unit, probs.shape[0] if probs.ndim == 3 else 1)

    def _show_measurements(self, unit: str, images: int, by_file: bool = False) -> None:
        """Fill the table and its summary line from :attr:`measurements` (``by_file``: with a
        column naming each row's file, for a folder)."""
        # (a single 2D image's rows are all slice 0: that column would only push the areas out of
        # sight; without physical units the area in units repeats the pixel count; the CSV keeps all)
        # the region's number heads its row (Qt's own row numbers, counted from 0, beside a
        # "region" column counted from 1, said the same thing twice, one off)
        columns = ("image",) * by_file + ("slice",) * (by_file or images > 1) + (
            "area_px",) + ("area",) * (unit != "px²") + ("mean_probability",)
        # four significant digits, not three decimals: 1.4e-4 mm² showed as 0.0
        data = [[float(f"{row[k]:.4g}") if isinstance(row[k], float) else row[k] for k in columns]
                for row in self.measurements]
        self.table.value = {"data": data, "columns": list(columns),
                            "index": [str(row["region"]) for row in self.measurements]}
        self.table.native.resizeColumnsToContents()
        total = summarise(self.measurements)
        regions = "1 region" if total["regions"] == 1 else f"{total['regions']} regions"
        show_text(self.table_note, f"{regions}, {total['area_px']} px"
                  + (f" = {total['area']:.4g} {unit}" if unit != "px²" else "")
                  + (f" over {images} images" if images > 1 else ""))
        self.table.visible = self.export_button.visible = True

    def export_measurements(self, path: str | Path | None = None) -> Path | None:
        """Write the last measurements as CSV (asks where, unless ``path`` is given)."""
        now = self._mask_now()  # the mask as it is now, painted or not
        if now is not None:
            self._measuring += 1  # (a measurement still running would be older)
            self._show_rows(measure_slices(now[1], self._measured.probabilities, **self._measured.options))
        if not self.measurements:
            napari.utils.notifications.show_error("segment an image first: there are no measurements yet")
            return None
        if path is None:
            from qtpy.QtWidgets import QFileDialog

            path, _ = QFileDialog.getSaveFileName(self.native, "Export measurements", "measurements.csv",
                                                  "CSV (*.csv)")
            if not path:
                return None
        try:
            written = write_csv(self.measurements, path)
        except OSError as err:  # (WriteError included) a folder in the way, no permission, a full disk
            napari.utils.notifications.show_error(f"measurements not written: {err}")
            return None
        napari.utils.notifications.show_info(f"measurements written to {written}")
        return written

    def apply_threshold(self) -> bool:
        """Redraw the last mask made here from its probabilities at the slider's threshold and
        measure it again; a mask the user painted on is kept as painted (the threshold then
        applies to the next segmentation). Returns whether the mask changed."""
        if self._measured is None or self._measured.layer not in self.viewer.layers:
            return False
        layer, probs, threshold = self._measured.layer, self._measured.probabilities, float(self.threshold.value)
        if layer.metadata.get("threshold") == threshold:
            return False
        if layer.metadata.get("edited"):
            show_text(self.status, f"'{elide(layer.name, 40)}' has corrections and stays as painted: threshold "
                      f"{threshold:.2f} applies to the next segmentation")
            return False
        set_own_data(layer, (probs >= threshold).astype(np.uint8))
        layer.metadata["threshold"] = threshold
        show_text(self.status, f"'{elide(layer.name, 40)}' redrawn at threshold {threshold:.2f}")
        self._remeasure()
        return True

    def _restyle(self, *_: Any) -> None:
        """Apply the chosen mask colour and style to the last mask layer made here."""
        layer = self._mask_layer
        if layer is not None and layer in self.viewer.layers:
            style_mask(layer, self.mask_colour.value, self.mask_style.value)

    def _dock_closed(self) -> None:
        """Closing the dock stops its job (a segmentation added its layers 18 s after the dock
        was closed); a folder job keeps what it wrote."""
        self._ticket = None
        if self._folder_cancel is not None:
            self._folder_cancel.set()
        elif self.worker is not None:
            self.worker.quit()

    def cancel(self) -> None:
        """Stop the running job at its next step; a folder keeps the masks written so far."""
        if self.worker is None:
            return
        if self._folder_cancel is not None:  # a folder job stops itself, keeping what it wrote
            self._folder_cancel.set()
        else:
            self.worker.quit()
        self.status.value = CANCELLING

    def _busy(self, busy: bool) -> None:
        self.run_button.enabled = self.folder_button.enabled = not busy
        self.cancel_button.enabled = busy
        if not busy:
            self.worker, self._folder_cancel = None, None
            if self.status.value == CANCELLING:
                show_text(self.status, "cancelled: no layers added")
