"""Correct and fine-tune dock widget: save painted masks, fine-tune on them, re-segment."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    Select,
    SpinBox,
)

from ..common import WriteError, check_writable
from ..data.corrections import STAMP, Correction, CorrectionStore, check_correction, default_store, remember_store
from ..data.io import read_mask, read_pixels, to_rgb_uint8
from ..data.io import warm_up as decoders_warm_up
from ..engine.checkpoint import finetuned_model_path, load_model
from ..engine.config import DEFAULT_LR, FINETUNE, MAX_SAFE_LR, TrainEvent
from ..engine.finetune import finetune_steps
from ..inference.predictor import predict
from .docking import (
    call_when_closed,
    call_when_shown,
    connect_until_closed,
    follow_layers,
    image_box,
    tab_with_sibling_docks,
)
from .jobs import start_worker
from .layers import (
    file_of,
    frame_numbers,
    image_data_2d,
    image_made_for,
    link_to_image,
    mask_frame_for,
    placed_alike,
    same_layer,
    show_for_editing,
    shown_range,
    shown_slice,
)
from .layout import (
    compact_label,
    DockContainer,
    DockPlot,
    elide,
    full_width,
    make_narrow,
    plot_theme,
    show_text,
    typed_folder,
)
from .masks import add_segmentation_layers, mark_edits, mask_look, other_colour, style_mask
from .session import model_label, session_of

#: The default learning rates of the shipped models' architectures (the twins that train a
#: spiking model are not offered here).
USER_LR_TEXT = ", ".join(f"{name} {rate:g}" for name, rate in sorted(DEFAULT_LR.items()) if "twin" not in name)


class CurvePlot(DockPlot):
    """A small matplotlib canvas in the dock: training loss, validation loss and Dice per epoch,
    and the starting model's validation Dice (the bar a fine-tune must beat to be kept)."""

    def __init__(self, style: dict[str, str] | None = None) -> None:
        # readable curves even when the dock is short (it scrolls)
        super().__init__(figsize=(3.2, 2.0), min_size=(120, 170), style=style)
        with self.themed():
            self.ax = self.figure.add_subplot(111)
        self.history: list[dict[str, float]] = []
        self.start: dict[str, float] | None = None
        #: whether the Dice is measured on held-out corrections; with one picture it is measured on
        #: the picture trained on, and the curves say so
        self.held_out = True
        self.clear()

    def clear(self) -> None:
        """Forget the curves (a new fine-tune starts)."""
        self.history, self.start, self.held_out = [], None, True
        self._draw()

    def set_start(self, metrics: dict[str, float], held_out: bool = True) -> None:
        """The starting weights' validation figures (epoch 0), measured on held-out images or not."""
        self.start, self.held_out = metrics, held_out
        self._draw()

    def add(self, row: dict[str, float]) -> None:
        """Add an epoch's figures (its history row) to the curves."""
        self.history.append(row)
        self._draw()

    def _draw(self) -> None:
        self.redraw(self._plot)

    def _plot(self) -> None:
        from matplotlib.ticker import MaxNLocator

        self.ax.clear()
        dice, loss = ("val Dice", "val loss") if self.held_out else ("Dice (trained on)", "loss (trained on)")
        if self.history:
            epochs = [h["epoch"] for h in self.history]
            self.ax.plot(epochs, [h["train_loss"] for h in self.history], "o-", label="train loss")
            self.ax.plot(epochs, [h["val_loss"] for h in self.history], "s-", label=loss)
            self.ax.plot(epochs, [h["val_dice"] for h in self.history], "^-", label=dice)
        if self.start is not None and "val_dice" in self.start:
            self.ax.axhline(self.start["val_dice"], linestyle="--", linewidth=1, color="C2",
                            label=f"{dice} at start")
            self.ax.plot([0], [self.start["val_dice"]], "^", color="C2")
        self.ax.set_xlabel("epoch", fontsize=8)
        self.ax.set_title("fine-tuning", fontsize=8)
        last = max((h["epoch"] for h in self.history), default=1)
        self.ax.set_xlim(-0.2, max(last, 1) + 0.2)  # epoch 0 is the start, measured before training
        # whole epochs only (with one epoch in view a plain integer locator falls back to 0.04 steps)
        self.ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6, min_n_ticks=1))
        for legend in list(self.figure.legends):
            legend.remove()
        if self.history or self.start is not None:  # beneath the axes, where it covers no curve
            self.figure.legend(loc="outside lower center", ncol=2, fontsize=6, handlelength=1.2,
                               frameon=False)
        self.ax.tick_params(labelsize=7)


def correction_label(entry: Any) -> str:
    """A stored correction as people know it: ``<image name> · <date> <time>``."""
    meta = entry.provenance
    name = STAMP.sub("", str(meta.get("image_layer") or entry.stem))  # (a correction opened again: its stem)
    if meta.get("frame") is not None:
        name = f"{name} [{meta['frame']}]"
    saved = str(meta.get("saved", ""))[:19].replace("T", " ")
    return f"{name} · {saved}" if saved else name


#: Metadata key of an image layer opened from the correction store: the name of the image it corrects.
CORRECTION_OF = "correction_of"


class FinetuneWidget(DockContainer):
    """Store corrections of a mask and fine-tune the current model on all of them."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        decoders_warm_up()  # now, while the dock opens, not in the first fine-tune's worker
        self.viewer = napari_viewer
        self.session = session_of(napari_viewer)  # the model the viewer's docks share
        self.worker: Any = None
        self.resegment_worker: Any = None
        self.save_worker: Any = None
        self.load_worker: Any = None  # opening a stored correction (Load selected)
        self.last_saved: Correction | None = None  # the correction saved last (saving runs in a worker)
        self._target: tuple[Any, Any] = (None, None)  # image and mask of the fine-tune running
        self._following = True  # the mask box follows the Labels layer selected (see _follow_active_mask)
        self.cancel_event = threading.Event()
        self._running = ""  # what the result line says while a fine-tune runs
        # a closed dock stops its fine-tune (nothing else could: a dock opened again is a new one)
        call_when_closed(self, lambda: self.cancel_event.set())  # (each run has an event of its own)
        self.image = image_box(self.viewer)
        self.mask = ComboBox(label="mask", choices=self._mask_choices,
                             tooltip="the Labels layer to save as the correction: the plugin's masks come first "
                             "(a sample's ground truth last; selecting a Labels layer in the layer list picks it)")
        self.store_dir = FileEdit(label="corrections", mode="d", value=str(default_store()))
        self.save_button = PushButton(text="Save correction")
        self.corrections = Select(label="stored", choices=self._stored_names, allow_multiple=False,
                                  tooltip="corrections saved in the folder above, one per image; all of them are "
                                  "used to fine-tune")
        self.reload_button = PushButton(text="Load selected", tooltip="open the selected correction to view or edit it; "
                                        "saving it again replaces it")
        self.remove_button = PushButton(text="Remove selected",
                                        tooltip="leave the selected correction out of fine-tuning: it moves to the "
                                        "folder 'removed' inside the corrections folder")
        # a float box with no decimals: Qt's spin box shows "auto" at 0 (superqt's integer box does not)
        self.epochs = FloatSpinBox(label="epochs", min=0, max=500, step=1, value=FINETUNE.epochs,
                                   tooltip=f"auto: about {FINETUNE.image_passes} training images in all, so few "
                                   f"corrections get more epochs ({FINETUNE.min_epochs} to {FINETUNE.max_epochs})")
        self.epochs.native.setDecimals(0)
        self.epochs.native.setSpecialValueText("auto")
        self.minutes = FloatSpinBox(label="time limit", min=0.0, max=600.0, step=0.5, value=FINETUNE.minutes,
                                    tooltip="stop after the epoch that crosses this many minutes (0: no limit); "
                                    "the best weights so far are kept")
        self.minutes.native.setDecimals(1)
        self.minutes.native.setSuffix(" min")
        self.minutes.native.setSpecialValueText("none")
        self.lr = FloatSpinBox(label="lr", min=0.0, max=1.0, step=1e-5, value=FINETUNE.lr,
                               tooltip="learning rate; auto: the rate the model's architecture was trained with "
                               f"({USER_LR_TEXT})")
        self.lr.native.setSpecialValueText("auto")
        self.replay = FileEdit(label="replay", mode="d", value="",
                               tooltip="optional: the original training data (a folder with images/ and masks/), "
                               "mixed in against forgetting")
        self.replay_samples = SpinBox(label="pairs", min=0, max=10000, value=0,
                                      tooltip="how many pairs of the replay folder to mix in (0: none)")
        self.keep_start = CheckBox(text="keep the start model too", value=FINETUNE.route,
                                   tooltip="when the corrections are another kind of image than the start model's "
                                   "training data, the fine-tuned model sends images like that data to the start model "
                                   "(a gate picks per image, used when it tells the two kinds apart on the "
                                   "corrections), so fine-tuning forgets nothing")
        self.run_button = PushButton(text="Fine-tune")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.result = compact_label(Label(value=""))
        self.plot = CurvePlot(plot_theme(self.viewer))
        self.extend([self.image, self.mask, self.store_dir, self.save_button, self.corrections, self.reload_button, self.remove_button,
                     self.epochs, self.minutes, self.lr, self.replay, self.replay_samples, self.keep_start, self.run_button, self.cancel_button,
                     self.result])
        full_width(self.result)
        self.inner.layout().addWidget(self.plot.canvas)
        self.lr.native.setDecimals(6)
        from qtpy.QtCore import Qt

        # a long name is cut in its middle: the image it names and the time it was saved stay in view
        # (cut at its end, every correction of one image read alike at 1280 px), never scrolled sideways;
        # its tooltip has it all. At most about six rows tall: the fine-tune controls stay in view.
        self.corrections.native.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.corrections.native.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.corrections.native.setMaximumHeight(6 * self.corrections.native.fontMetrics().height() + 16)
        self.corrections.native.model().rowsInserted.connect(self._name_in_tooltips)
        self.save_button.changed.connect(self.save_correction)
        self.reload_button.changed.connect(self.load_selected)
        self.remove_button.changed.connect(self.remove_selected)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.store_dir.changed.connect(self.refresh)
        follow_layers(self, self.viewer)
        self.refresh()
        make_narrow(self)
        tab_with_sibling_docks(self)
        # Opening this dock (or picking another mask in it) gets the mask ready to paint, even
        # after the Spike inspector hid it or laid the layers out in a grid.
        call_when_shown(self, self._show_mask_for_editing)
        self.mask.changed.connect(lambda *_: self.native.isVisible() and self._show_mask_for_editing())
        connect_until_closed(self, self.viewer.layers.selection.events.active, self._follow_active_mask)

    def _follow_active_mask(self, event: Any = None) -> None:
        """A Labels layer selected in the layer list (the one the brush paints on) becomes the
        dock's mask, and the image it was made for, if it is open, the dock's image: what is
        saved is what was painted."""
        from napari.layers import Image, Labels

        layer = self.viewer.layers.selection.active
        if not self._following or not isinstance(layer, Labels) or layer is self.mask.value:
            return
        source = image_made_for(layer, self.viewer)
        try:
            self.reset_choices()
            if isinstance(source, Image) and not same_layer(source, self.image.value):
                self.image.value = source
            self.mask.value = layer
        except RuntimeError:  # the dock was closed (its Qt widgets are gone)
            self.viewer.layers.selection.events.active.disconnect(self._follow_active_mask)

    def _mask_choices(self, *_: Any) -> list[tuple[str, Any]]:
        """The Labels layers, the plugin's masks first (newest first), a sample's ground truth
        last, so that the box never starts on an expert annotation the user did not pick."""
        from napari.layers import Labels

        from .._sample_data import GROUND_TRUTH

        labels = [layer for layer in reversed(self.viewer.layers) if isinstance(layer, Labels)]
        rank = {id(layer): (bool(layer.metadata.get(GROUND_TRUTH)), "source_image" not in layer.metadata)
                for layer in labels}
        return [(layer.name, layer) for layer in sorted(labels, key=lambda layer: rank[id(layer)])]

    def _show_mask_for_editing(self) -> None:
        """Ready the mask to paint; a hidden ground truth is not revealed by opening the dock."""
        from .._sample_data import GROUND_TRUTH

        mask = self.mask.value
        if mask is not None and mask.metadata.get(GROUND_TRUTH) and not mask.visible:
            return
        show_for_editing(self.viewer, mask, self.image.value)

    @property
    def store(self) -> CorrectionStore:
        """The store in the corrections box: ``~`` is the home folder, a relative folder is taken
        from where napari started (its full path is what the dock shows). ``ValueError`` when the
        box is empty (read as ``.``, it put the corrections in napari's working folder)."""
        folder = typed_folder(self.store_dir.value)
        if folder is None:
            raise ValueError("the corrections box is empty: choose a folder to keep the corrections in")
        return CorrectionStore(folder)

    def _stored_names(self, *_: Any) -> list[tuple[str, str]]:
        """``(label, stem)`` per stored correction: the image's name and when it was saved."""
        try:
            entries = self.store.list()
        except (OSError, ValueError):  # an unreadable folder or an empty box lists nothing; saving says why
            return []
        labels: dict[str, int] = {}
        choices = []
        for entry in entries:  # the list keys its items by label: make each one unique
            label = correction_label(entry)
            labels[label] = labels.get(label, 0) + 1
            choices.append((label if labels[label] == 1 else f"{label} ({labels[label]})", entry.stem))
        return choices

    def _name_in_tooltips(self, *_: Any) -> None:
        """Each stored correction's whole name in its tooltip (the list cuts long ones)."""
        items = self.corrections.native
        for row in range(items.count()):
            items.item(row).setToolTip(items.item(row).text())

    def refresh(self, *_: Any) -> None:
        """Re-list the stored corrections (also done whenever layers change: the list comes
        from the store, not from what was shown before)."""
        self.corrections.reset_choices()

    def save_correction(self) -> Any:
        """Store the image and the painted mask (atomically) with provenance, in the background:
        a 12-megapixel photo takes about a second to encode. Returns the worker, or ``None`` when
        nothing is saved (the reason is shown); the stored entry becomes ``last_saved``."""
        if self.save_worker is not None:
            napari.utils.notifications.show_error("the last correction is still being saved: save again when it is done")
            return None
        image, labels = self.image.value, self.mask.value
        if image is None or labels is None:
            napari.utils.notifications.show_error("choose an image and its mask (a Labels layer)")
            return None
        made_for = image_made_for(labels, self.viewer)
        if made_for is not None and not same_layer(made_for, image):
            # another open image's mask: storing it would pair the wrong mask with this image and
            # replace this image's own correction
            napari.utils.notifications.show_error(
                f"'{labels.name}' is the mask of '{made_for.name}', not of '{image.name}': choose the image "
                f"'{made_for.name}' or a mask of '{image.name}'; nothing saved")
            return None
        try:
            data = image_data_2d(image, self.viewer, lazy=True)  # a stack: the slice shown; read by the job
            mask = np.asarray(labels.data)
            image_name = image.metadata.get(CORRECTION_OF, image.name)  # a stored correction opened again
            index = image.metadata.get("frame")
            if image.ndim == 3:  # a stack or video (napari's ndim leaves out an RGB axis)
                index = shown_slice(image, self.viewer)
                if mask.ndim == 3:  # (it took the mask's last frame when it had fewer)
                    mask = mask[mask_frame_for(labels, image, self.viewer)]
                frames = frame_numbers(image)  # a long video read every k-th frame: the video's own number
                if frames is not None:
                    index = frames[index]
            name = image_name if index is None else f"{image_name} [{index}]"
            binary = mask != 0  # any label, negative too; a copy: painting may go on while it is written
            check_correction(data, binary)
            provenance = {
                "source": file_of(image),
                "image_layer": image_name,
                **({"frame": index} if index is not None else {}),
                "labels_layer": labels.name,
                # the model whose mask was corrected (None: painted from scratch), not the one chosen now
                "model": labels.metadata.get("segmented_by"),
                # painted by hand (or from scratch), or the model's mask as it came: the latter never
                # replaces a painted correction of the same picture (a second Segment made its new mask
                # the dock's, and Save correction replaced the painted one with it)
                "painted": bool(labels.metadata.get("edited")) or labels.metadata.get("segmented_by") is None,
            }
            store = self.store
        except Exception as err:
            napari.utils.notifications.show_error(f"correction not saved: {err}")
            return None
        if not placed_alike(labels, image):
            # (a mask opened from a file, without the image's pixel size): stored pixel for pixel
            napari.utils.notifications.show_warning(
                f"'{labels.name}' is drawn at another scale or place than '{image.name}', so the two do not line "
                "up on the canvas; the correction pairs their pixels one to one. To see them line up, give the mask "
                f"the image's in the console: viewer.layers['{labels.name}'].scale = viewer.layers['{image.name}'].scale"
                " (and .translate)")
        self.last_saved = None

        value_range = shown_range(image)  # not 8-bit: stored as napari shows it (and Segment sees it)

        def job():
            yield None
            picture = np.asarray(data)  # (a lazy image's pixels are read here, off the GUI thread)
            if value_range is None:
                return store.save(picture, binary, provenance, name=name)
            # stored as shown; known again by its own pixels, whatever the contrast
            return store.save(to_rgb_uint8(picture, value_range=value_range), binary, provenance, name=name,
                              picture=picture)

        self.save_button.enabled = False
        self.save_worker = start_worker(job, "Save correction", on_return=self._saved, on_finish=self._save_done)
        return self.save_worker

    def _saved(self, entry: Correction) -> None:
        self.last_saved = entry
        self.refresh()
        replaced = ", replacing the earlier correction of this image" if entry.replaced else ""
        # named as the list names it (the file stem's underscores read as formatting in a notification)
        napari.utils.notifications.show_info(
            f"saved the correction of {correction_label(entry)} in {entry.image.parent.parent}{replaced}")

    def _save_done(self) -> None:
        self.save_button.enabled = True
        self.save_worker = None

    def _selected_stem(self) -> str | None:
        chosen = self.corrections.value
        if not chosen:
            napari.utils.notifications.show_error("select a stored correction first")
            return None
        return chosen[0] if isinstance(chosen, (list, tuple)) else chosen

    def remove_selected(self) -> Path | None:
        """Take the selected correction out of the store (kept in its ``removed`` folder)."""
        stem = self._selected_stem()
        if stem is None:
            return None
        try:
            where = self.store.remove(stem)
        except (KeyError, OSError, ValueError) as err:
            napari.utils.notifications.show_error(f"cannot remove correction {stem}: {err}")
            self.refresh()
            return None
        self.refresh()
        napari.utils.notifications.show_info(f"removed correction {stem} (its files are in {where})")
        return where

    def load_selected(self) -> Any:
        """Open the selected stored correction as an image and a Labels layer. Its files are read
        in a worker (a 12-megapixel correction held the GUI for 0.9 s), as stored: 8-bit, not
        float (a quarter of the memory). Returns the worker, or ``None`` when nothing is opened."""
        stem = self._selected_stem()
        if stem is None:
            return None
        if self.load_worker is not None:
            napari.utils.notifications.show_error("a correction is still being opened: open the next one when it is shown")
            return None
        try:
            entry = self.store.entry(stem)
        except (KeyError, OSError, ValueError) as err:  # gone meanwhile, or unreadable
            napari.utils.notifications.show_error(f"cannot open correction {stem}: {err}")
            self.refresh()
            return None

        def job():
            yield None
            return read_pixels(entry.image), read_mask(entry.mask)

        def done() -> None:
            self.load_worker = None

        self.load_worker = start_worker(job, "Open correction", on_return=lambda read: self._show_loaded(entry, *read),
                                        on_finish=done, on_error=lambda _: self.refresh())
        return self.load_worker

    def _show_loaded(self, entry: Correction, image: np.ndarray, mask: np.ndarray) -> None:
        stem, meta = entry.stem, entry.provenance
        # named after the image it corrects, as the list shows it: saving it again keeps that name
        # (the stored file name is its ASCII form) and replaces this correction
        original = str(meta.get("image_layer") or STAMP.sub("", stem))
        kept = {"path": meta.get("source", ""), CORRECTION_OF: original,
                **({"frame": meta["frame"]} if meta.get("frame") is not None else {})}
        shown = f"{original} [{meta['frame']}]" if "frame" in kept else original
        image_layer = self.viewer.add_image(image, name=f"{shown} (stored)", rgb=image.ndim == 3, metadata=kept)
        # "edited": a correction someone painted, which no later segmentation or threshold may
        # overwrite (Segment on this image adds a mask of its own beside it)
        layer = self.viewer.add_labels(mask.astype("uint8"), name=f"{image_layer.name} mask",
                                       metadata={**link_to_image(image_layer), "edited": True})
        style_mask(layer)
        mark_edits(layer)
        # ready to edit and save again: the dock now points at this correction's image and mask
        self.reset_choices()
        self.image.value, self.mask.value = image_layer, layer

    def run(self) -> Any:
        """Fine-tune the current model on every stored correction in a worker."""
        if self.save_worker is not None:  # it would train without the correction being written
            napari.utils.notifications.show_error("a correction is still being saved: fine-tune when it is done")
            return None
        if self.worker is not None:  # (the button is disabled meanwhile; a call from code is not)
            napari.utils.notifications.show_error("a fine-tune is still running: wait for it or cancel it")
            return None
        try:
            entries = self.store.list()
        except ValueError as err:
            napari.utils.notifications.show_error(str(err))
            return None
        lr = float(self.lr.value)
        if not entries:
            listed = bool(self.corrections.choices)  # the list may still show a folder that is gone
            self.refresh()
            gone = listed and not self.store.root.is_dir()
            napari.utils.notifications.show_error(
                f"the corrections folder {self.store.root} no longer exists" if gone
                else "no stored corrections: paint a mask and press Save correction")
            return None
        if not 0 <= lr <= MAX_SAFE_LR:
            napari.utils.notifications.show_error(f"learning rate {lr:g} is unsafe: use at most {MAX_SAFE_LR:g}")
            return None
        try:
            model = self.session.get()
        except Exception as err:
            napari.utils.notifications.show_error(str(err))
            return None
        try:  # the fine-tuned model goes into the corrections folder: a read-only one is said now
            check_writable(self.store.root / "models")
        except WriteError as err:
            napari.utils.notifications.show_error(f"{err}: choose a corrections folder you can write to")
            return None
        remember_store(self.store.root)  # later sessions list the models fine-tuned here in Segment
        replay_folder = typed_folder(self.replay.value)
        replay = str(replay_folder) if replay_folder is not None else None
        if (replay is None) != (int(self.replay_samples.value) == 0):  # half a choice: said, not ignored silently
            napari.utils.notifications.show_warning(
                "replay needs both a folder of training images and a number of pairs: fine-tuning without replay"
                if replay is None else "replay folder chosen with 0 pairs: fine-tuning without replay (set 'pairs')")
        out = finetuned_model_path(self.store.root / "models")
        epochs, replay_samples, root = int(self.epochs.value), int(self.replay_samples.value), self.store.root
        minutes, route = float(self.minutes.value), bool(self.keep_start.value)
        self.cancel_event = threading.Event()
        cancel = self.cancel_event

        def job():  # the training loop's own events, straight to the worker (no bridge thread)
            result = yield from finetune_steps(model, root, out, epochs=epochs, lr=lr, minutes=minutes, replay=replay,
                                               replay_samples=replay_samples, route=route, cancel=cancel,
                                               keep_unimproved=False)  # (the start is in use already)
            # the new model loaded here, not on the GUI thread (0.1-0.25 s, more for a routed one)
            written = result.checkpoint is not None and Path(result.checkpoint).is_file()
            return result, load_model(result.checkpoint) if written and result.improved else None

        # the image and mask to segment again afterwards: those chosen now, whatever the boxes
        # show when the fine-tune ends (the user may go on to the next image meanwhile)
        self._target = (self.image.value, self.mask.value)
        self.plot.clear()
        self._running = f"fine-tuning on {len(entries)} correction{'s' if len(entries) != 1 else ''}…"
        show_text(self.result, self._running)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.worker = start_worker(job, "Fine-tune", on_yield=self._progress, on_return=self._finished,
                                   on_finish=self._idle,
                                   on_error=lambda err: show_text(self.result, f"fine-tuning failed: {err}"))
        return self.worker

    def cancel(self) -> None:
        """Stop after the current step; the best weights so far are kept."""
        self.cancel_event.set()
        show_text(self.result, "cancelling: keeping the best weights so far…")

    def _idle(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self.worker = None

    def _progress(self, event: Any) -> None:
        if event.kind == TrainEvent.EPOCH:
            self.plot.add(event.metrics)
        elif event.kind == TrainEvent.START:
            self.plot.set_start(event.metrics, event.held_out)
            if not event.held_out and not self.cancel_event.is_set():
                # one picture cannot be held out: its Dice is measured on the picture trained on
                show_text(self.result, f"{self._running}\n(one picture: its Dice is measured on it, not on a "
                          "held-out one)")

    def _finished(self, outcome: tuple[Any, Any]) -> None:
        result, model = outcome
        if model is None:  # the same weights (or none written, cancelled at once): nothing to switch to
            state = "cancelled" if result.cancelled else "done"
            show_text(self.result, f"{state}: {result.describe()}\nthe model in Segment and the inspector stays "
                      f"{elide(model_label(self.session.source), 40)}; no new model file was written (the "
                      "corrections stay stored)")
            self.result.tooltip = ""
            napari.utils.notifications.show_info(f"fine-tuning {state}: {result.headline()}")
            return
        self.session.set(model, str(result.checkpoint))
        state = "cancelled, best weights kept" if result.cancelled else "done"
        summary = (f"{state}: {result.describe()}\nsaved {result.checkpoint.name} (now the model in "
                   "Segment and the inspector)")
        self.result.tooltip = str(result.checkpoint)
        # the dock's text can sit below the fold on a laptop screen: say the outcome where it shows
        napari.utils.notifications.show_info(f"fine-tuning {state}: {result.headline()}")
        image, mask = self._target
        if image is not None and image not in self.viewer.layers:
            show_text(self.result, f"{summary}\n'{image.name}' was closed: nothing to segment again")
        elif image is None:
            show_text(self.result, summary)
        elif image.ndim != 2 or getattr(image, "multiscale", False):  # (napari's ndim leaves out RGB)
            show_text(self.result, f"{summary}\nsegment '{image.name}' again to see the fine-tuned model on it")
        else:
            data = image_data_2d(image, lazy=True)  # (a lazy image is read by the job)
            shown = shown_range(image)  # as Segment saw it
            threshold = float(mask.metadata.get("threshold", 0.5)) if mask is not None else 0.5
            # as Segment made the corrected mask (mode, mirror TTA, device), so only the model differs
            settings = dict(mask.metadata.get("segmented_with", {})) if mask is not None else {}
            # the new mask in another colour than the corrected one, so that both can be compared
            colour, style = mask_look(mask)
            colour = other_colour(colour)
            show_text(self.result, f"{summary}\nre-segmenting '{image.name}': its new mask in {colour}")

            def resegment():
                yield None
                return predict(model, data, value_range=shown, **settings)

            def show(prob: np.ndarray) -> None:
                if image not in self.viewer.layers:  # closed while it was being segmented
                    show_text(self.result, f"{summary}\n'{image.name}' was closed: no layers added")
                    return
                # the settings go with the new mask too, so correcting it and fine-tuning again repeats them
                # the new mask is for comparing: the selection and the dock's mask stay as they are
                before, self._following = self.viewer.layers.selection.active, False
                try:
                    _, new_mask = add_segmentation_layers(self.viewer, image, prob, threshold, suffix=" (fine-tuned)",
                                                          colour=colour, style=style, settings=settings,
                                                          model_source=str(result.checkpoint))
                    show_text(self.result, f"{summary}\n'{image.name}' segmented again: its new mask "
                              f"'{new_mask.name}' is in {colour}")
                    if before is not None and before in self.viewer.layers:
                        self.viewer.layers.selection.active = before
                finally:
                    self._following = True

            self.resegment_worker = start_worker(
                resegment, "Re-segment", on_finish=lambda: setattr(self, "resegment_worker", None), on_return=show)
