"""Pieces the three widgets share: the current model, workers with progress, result layers."""

from __future__ import annotations

import re
import weakref
from collections import OrderedDict
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import Container
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QObject

from ..engine.checkpoint import list_models, load_model, resolve_checkpoint
from ..models.base import Segmenter


class ModelSession:
    """The model the widgets work with (shared: fine-tuning updates what Segment uses).

    It also remembers every checkpoint file used or written in this session (fine-tuned models
    included), so the model boxes can offer them.
    """

    def __init__(self) -> None:
        self.model: Segmenter | None = None
        self.source: str = ""
        self.checkpoints: list[str] = []  # files used or written in this session, newest first
        self._listeners: list[Callable[[], Callable[[str], None] | None]] = []  # weak references
        # the last models loaded, by source, with the file's identity when loaded: switching
        # models in Segment loaded each again on the GUI thread (0.15-1.5 s every time)
        self._loaded: OrderedDict[str, tuple[tuple[str, int, int], Segmenter]] = OrderedDict()

    #: How many loaded models are kept (a shipped model is 5-30 MB in memory).
    KEEP_LOADED = 4

    def get(self, source: str | Path | None = None) -> Segmenter:
        """The current model, or load ``source`` (a shipped name or a path) and make it current."""
        if source is not None and (str(source) != self.source or self._changed_on_disk(str(source))):
            self.set(self.load(str(source)), str(source))
        if self.model is None:
            if not list_models():
                raise RuntimeError("no model loaded and no shipped model found: choose a checkpoint file")
            self.set(load_model("default" if "default" in list_models() else next(iter(list_models()))), "default")
        assert self.model is not None
        return self.model

    def _changed_on_disk(self, source: str) -> bool:
        """Whether the file of the model loaded from ``source`` was replaced since (a checkpoint
        overwritten by a new training run kept being used); a file gone keeps the model in use."""
        kept = self._loaded.get(source)
        if kept is None or kept[1] is not self.model:
            return False
        try:
            return kept[0] != self._file_identity(source)
        except (OSError, ValueError):
            return False

    @staticmethod
    def _file_identity(source: str) -> tuple[str, int, int]:
        """The checkpoint file of ``source`` as a load remembers it: path, size, modification time."""
        path = resolve_checkpoint(source)
        stat = path.stat()
        return str(path.resolve()), stat.st_size, stat.st_mtime_ns

    def load(self, source: str) -> Segmenter:
        """``load_model(source)``, or the model loaded from it before if its file is unchanged
        (same path, size and modification time)."""
        identity = self._file_identity(source)
        kept = self._loaded.get(source)
        if kept is not None and kept[0] == identity:
            self._loaded.move_to_end(source)
            return kept[1]
        model = load_model(source)
        self._loaded[source] = (identity, model)
        self._loaded.move_to_end(source)
        while len(self._loaded) > self.KEEP_LOADED:
            self._loaded.popitem(last=False)
        return model

    def set(self, model: Segmenter, source: str) -> None:
        self.model, self.source = model, source
        if source not in list_models():
            self.checkpoints = [source] + [c for c in self.checkpoints if c != source]
        self._notify(source)

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(source)`` when the current model changes. A bound method is held
        weakly: subscribing does not keep a closed dock widget alive."""
        import weakref

        ref = weakref.WeakMethod(listener) if hasattr(listener, "__self__") else (lambda: listener)
        self._listeners.append(ref)

    def unsubscribe(self, listener: Callable[[str], None]) -> None:
        """Stop calling ``listener`` (a closed widget must not be called)."""
        self._listeners = [ref for ref in self._listeners if ref() not in (None, listener)]

    def _notify(self, source: str) -> None:
        self._listeners = [ref for ref in self._listeners if ref() is not None]
        for ref in list(self._listeners):
            listener = ref()
            if listener is not None:
                listener(source)


def model_label(source: str) -> str:
    """How a model source reads in a model box: a shipped name as is, a file as its name.

    Fine-tuned checkpoints (``finetuned_YYYYmmdd-HHMMSS``) read as ``fine-tuned HH:MM:SS``.
    """
    if source in list_models():
        return source
    stem = Path(source).stem
    if stem.startswith("finetuned_") and len(stem) >= len("finetuned_20260101-000000"):
        stamp = stem[len("finetuned_"):]
        return f"fine-tuned {stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]} ({stamp[:4]}-{stamp[4:6]}-{stamp[6:8]})"
    return stem


def model_choices(session: ModelSession, extra_folders: tuple[Path, ...] = ()) -> list[tuple[str, str]]:
    """``(label, source)`` pairs for a model box: shipped models, the checkpoints of ``session``,
    then fine-tuned checkpoints found in ``extra_folders`` (newest first)."""
    sources = list(list_models()) + list(session.checkpoints)
    for folder in extra_folders:
        if folder.is_dir():
            found = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
            sources += [str(p) for p in found]
    unique = list(dict.fromkeys(sources))
    return [(model_label(s), s) for s in unique]


def elide(text: str, width: int = 48) -> str:
    """``text`` cut in the middle to at most ``width`` characters (paths keep both ends)."""
    return text if len(text) <= width else text[: width // 2 - 1] + "…" + text[-(width - width // 2):]


_SESSIONS: weakref.WeakKeyDictionary[Any, ModelSession] = weakref.WeakKeyDictionary()


def session_of(viewer: Any) -> ModelSession:
    """The model session of a napari viewer: its docks share it (a fine-tune updates what its
    Segment uses); another viewer has its own (one module-wide model made a second window's
    choice the first one's, without a word)."""
    real = getattr(viewer, "__wrapped__", viewer)  # napari hands plugin widgets a proxy of the viewer
    session = _SESSIONS.get(real)
    if session is None:
        session = _SESSIONS[real] = ModelSession()
    return session


def dataset_names(paths: list[str]) -> str:
    """Training folders as dataset names for people (``…/data/kvasir-seg`` -> ``kvasir-seg``)."""
    from ..engine.reports import dataset_name

    return ", ".join(dataset_name(p) for p in paths)


def summary_of(model: Segmenter) -> str:
    """One or two lines about a model for the dock: architecture, size, validation Dice."""
    import math

    info = model.info
    metrics = info.metrics
    orig = metrics.get("original_resolution") or {}
    dice = orig.get("mean_dice", metrics.get("val_dice"))
    text = f"{model.arch}, input {model.input_size}², T={model.timesteps}"
    if isinstance(dice, (int, float)) and math.isfinite(dice):
        training = info.training
        if str(training.get("validated_on", "")).startswith("training"):  # a fine-tune with nothing held out
            return text + f"\nDice {dice:.3f} on its own training images (none held out)"
        parts = [elide(dataset_names(training.get("data", [])), 40)]
        count = len(training.get("val_keys", []))
        if count:
            parts.append("1 image" if count == 1 else f"{count} images")
        said = ", ".join(part for part in parts if part)
        text += f"\nvalidation Dice {dice:.3f}" + (f" ({said})" if said else "")
    return text


def image_data_2d(layer: Any, viewer: Any = None, lazy: bool = False) -> np.ndarray:
    """A 2D image layer's pixels; for a stack, the slice the viewer shows (when ``viewer`` is
    given); a clear error for multiscale layers and other shapes. ``lazy=True`` leaves a lazy
    array (dask, zarr) unread, for a job to read off the GUI thread."""
    read = (lambda array: array) if lazy else np.asarray
    if getattr(layer, "multiscale", False):
        raise ValueError(f"'{layer.name}' is multiscale: open the full-resolution image instead")
    show_colours_of_cmyk_jpeg(layer)
    tell_of_exif_turn(layer)
    refuse_channels_as_slices(layer)
    if layer.ndim == 3 and viewer is not None:
        return read(layer.data[shown_slice(layer, viewer)])
    if layer.ndim != 2:
        raise ValueError(f"'{layer.name}' has {layer.ndim} dimensions: select a 2D image or save one slice")
    return read(layer.data)


def shown_slice(layer: Any, viewer: Any) -> int:
    """Index along the first axis of a 3D layer (a stack or video) of the slice the viewer shows.

    Raises ``ValueError`` saying what to do where no one slice of it is shown: a 3D view, axes
    turned so that the canvas shows its frames' axis, or the slider at none of its frames."""
    dims, axis = viewer.dims, viewer.dims.ndim - 3
    if dims.ndisplay != 2:
        raise ValueError(f"the viewer shows '{layer.name}' in 3D: switch to the 2D view (the square button at "
                         "the bottom left) and move the slider to one frame")
    if axis in dims.displayed:
        raise ValueError(f"the canvas shows the frames' axis of '{layer.name}': give the viewer its axes back "
                         "(napari's 'Roll dimensions' or 'Transpose' buttons, bottom left) so that a slider moves "
                         "through its frames")
    place = dims.current_step[axis] * dims.range[axis].step + dims.range[axis].start
    index = round((place - layer.translate[0]) / layer.scale[0])
    if not 0 <= index < layer.data.shape[0]:
        raise ValueError(f"the slider is at none of the {layer.data.shape[0]} frames of '{layer.name}' (other "
                         "layers reach further along that axis): move it onto one of them")
    return int(index)


def shown_range(layer: Any) -> tuple[float, float] | None:
    """The intensities napari shows as black and white in ``layer`` (its contrast limits), for
    images that are not 8-bit: the model is given the image as napari shows it (a 16-bit scan
    whose values lie between 1000 and 2020 looked right and came out empty, scaled from 0). None
    for 8-bit and bool images, which keep their fixed rule."""
    dtype = getattr(layer.data, "dtype", None)
    if dtype is None or np.dtype(dtype) in (np.dtype(np.uint8), np.dtype(np.bool_)):
        return None
    lo, hi = (float(v) for v in layer.contrast_limits)
    return (lo, hi) if hi > lo else None


def range_note(value_range: tuple[float, float] | None) -> str:
    """``, contrast 1000-2020`` for a status line when :func:`shown_range` applied, else empty."""
    return "" if value_range is None else f", contrast {value_range[0]:.4g}–{value_range[1]:.4g}"


def frame_numbers(layer: Any) -> list[int] | None:
    """The video frame number of each slice of a stack layer (its metadata's ``frames``, which
    the reader records: a long video is read with every k-th frame), else None."""
    frames = getattr(layer, "metadata", {}).get("frames")
    if (not isinstance(frames, (list, tuple)) or getattr(layer, "ndim", 0) != 3
            or len(frames) != np.shape(layer.data)[0] or not all(isinstance(f, (int, np.integer)) for f in frames)):
        return None
    return [int(f) for f in frames]


def typed_folder(value: Any) -> Path | None:
    """The folder a file box holds, as the user means it: ``~`` the home folder, a relative
    folder taken from where napari started, made absolute so that messages say where it is;
    ``None`` for an empty box (magicgui gives ``.`` for one)."""
    text = str(value).strip() if value is not None else ""
    if text in ("", "."):
        return None
    return Path(text).expanduser().absolute()


def mask_frame_for(labels: Any, image: Any, viewer: Any) -> int:
    """The frame of the stack mask ``labels`` that corrects the frame of the stack ``image`` shown
    now: the same index. Raises ``ValueError`` when the mask has another number of frames, or when
    the viewer shows another of its frames over the image's (their scale or translate along the
    frames differ), so that a mask is never stored with a frame it was not painted on."""
    frames, index = labels.data.shape[0], shown_slice(image, viewer)
    if frames != image.data.shape[0]:
        raise ValueError(f"'{labels.name}' has {frames} frames and '{image.name}' {image.data.shape[0]}: "
                         f"choose a mask made for '{image.name}'")
    if (shown := shown_slice(labels, viewer)) != index:
        raise ValueError(f"the viewer shows frame {shown} of '{labels.name}' over frame {index} of '{image.name}' "
                         "(their scale or translate along the frames differ): give the mask the image's, e.g. in "
                         f"the console: viewer.layers['{labels.name}'].scale = viewer.layers['{image.name}'].scale")
    return index


def placed_alike(a: Any, b: Any, axes: int = 2) -> bool:
    """Whether layers ``a`` and ``b`` lie on the same place of the canvas in their last ``axes``
    axes (scale and translate), so that their pixels line up as shown."""
    return (np.allclose(a.scale[-axes:], b.scale[-axes:], rtol=1e-6)
            and np.allclose(a.translate[-axes:], b.translate[-axes:], rtol=1e-6, atol=1e-9))


def show_colours_of_cmyk_jpeg(layer: Any) -> bool:
    """A layer opened from a CMYK JPEG by napari's own reader holds the file's cyan, magenta,
    yellow and black as red, green, blue and alpha: the picture shows wrong (transparent where
    there is no black) and the model segmented inverted colours into an empty mask. Put its
    colours in the layer instead (the file stays as it is) and say so; returns whether it did."""
    from ..data.io import JPEG_SUFFIXES, cmyk_jpeg_ink_and_colours, is_cmyk_jpeg

    path = getattr(getattr(layer, "source", None), "path", None)
    shape = tuple(getattr(layer.data, "shape", ()))
    if not path or not getattr(layer, "rgb", False) or len(shape) != 3 or shape[-1] != 4:
        return False
    if Path(path).suffix.lower() not in JPEG_SUFFIXES or not is_cmyk_jpeg(path):
        return False
    ink, rgb = cmyk_jpeg_ink_and_colours(path)
    if ink.shape != shape or not np.array_equal(np.asarray(layer.data), ink):  # (edited, or another file now)
        return False
    layer.data = rgb
    show_info(f"'{layer.name}' is a CMYK JPEG (ink, as print software saves it): napari showed its ink as "
              "red, green, blue and transparency; the layer now holds its colours (the file is unchanged)")
    return True


_TOLD_TURN: weakref.WeakSet = weakref.WeakSet()


def tell_of_exif_turn(layer: Any) -> None:
    """Once per layer: say that the photo it was opened from asks to be shown turned (EXIF), which
    neither napari nor the model does (see :func:`~napari_medspike.data.io.exif_orientation_note`)."""
    from ..data.io import JPEG_SUFFIXES, exif_orientation_note

    path = getattr(getattr(layer, "source", None), "path", None)
    if not path or layer in _TOLD_TURN or Path(path).suffix.lower() not in JPEG_SUFFIXES:
        return
    _TOLD_TURN.add(layer)
    if (note := exif_orientation_note(path)) is not None:
        show_info(note)


def refuse_channels_as_slices(layer: Any) -> None:
    """Raise a ``ValueError`` that says what to do for a colour (or grey + alpha) image that napari
    shows as a stack of thin slices: ``[H, W, 2|3|4]`` not marked RGB (napari's guess for images
    with a side of 30 pixels or less, or an image added with ``rgb=False``)."""
    shape = tuple(layer.data.shape)
    if getattr(layer, "rgb", False) or len(shape) != 3 or shape[-1] not in (2, 3, 4):
        return  # (slices 2-4 pixels wide are never a stack to segment, however small the image)
    again = "viewer.add_image(data[..., 0])" if shape[-1] == 2 else "viewer.add_image(data, rgb=True)"
    raise ValueError(f"'{layer.name}' ({' x '.join(map(str, shape))}) looks like one image with {shape[-1]} "
                     f"channels, but napari shows it as {shape[0]} slices of {shape[1]} x {shape[-1]} pixels: "
                     f"open it again as one image, e.g. in the console: data = viewer.layers['{layer.name}'].data; "
                     f"{again}")


def image_data(layer: Any) -> Any:
    """An image layer's pixels: one 2D image or a stack ``[N, H, W(, 3)]`` (frames, tiles,
    slices); a clear error for multiscale layers, colour images shown as slices and more
    dimensions. A lazy array (dask, zarr) stays lazy: the job reads it slice by slice, off the
    GUI thread."""
    if getattr(layer, "multiscale", False):
        raise ValueError(f"'{layer.name}' is multiscale: open the full-resolution image instead")
    if layer.ndim not in (2, 3):
        raise ValueError(f"'{layer.name}' has {layer.ndim} dimensions: select a 2D image or a stack of them")
    show_colours_of_cmyk_jpeg(layer)
    tell_of_exif_turn(layer)
    refuse_channels_as_slices(layer)
    return layer.data


#: Words at least this long (paths, file names) get break opportunities in the dock's text.
TEXT_WIDTH = 34


def compact_label(label: Any) -> Any:
    """Let a magicgui Label never widen its dock: its text wraps at the width the dock gives it
    (set the text with :func:`show_text`)."""
    from qtpy.QtWidgets import QSizePolicy

    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.native.setMinimumWidth(10)
    label.native.setWordWrap(True)
    label.native.installEventFilter(_HEIGHT_KEEPER)
    return label


def fit_height(native: Any) -> None:
    """Make a word-wrapped QLabel at least as tall as its text at its present width. A scroll
    area (the docks scroll) does not ask its layout for height-for-width, so without this a
    long text in a full dock was squeezed to one line."""
    height = native.heightForWidth(max(native.width(), 10))
    if height > 0 and height != native.minimumHeight():
        native.setMinimumHeight(height)
        _relayout_scroll_area(native)


def _ancestor(widget: Any, kind: type) -> Any:
    """The nearest widget above ``widget`` that is a ``kind`` (None if there is none)."""
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, kind):
        parent = parent.parentWidget()
    return parent


def _relayout_scroll_area(native: Any) -> None:
    """Ask the scroll area around ``native`` to fit its contents to their new minimum height.
    It did not always notice on its own: about one time in two, after the first inspection,
    the Spike inspector's contents kept their old height and the firing-rate plot was drawn
    over the summary, whose new lines it hid."""
    from qtpy.QtWidgets import QApplication, QScrollArea

    area = _ancestor(native, QScrollArea)
    # every layout between the label and the scroll area takes the new height: the row holding
    # the inspector's summary kept its old one, once napari had drawn the maps' colour bars, and
    # cut the summary to three lines
    parent = native.parentWidget()
    while parent is not None and parent is not area:
        if parent.layout() is not None:
            parent.layout().invalidate()
        parent.updateGeometry()
        parent = parent.parentWidget()
    if area is not None:  # (queued: after the contents' own layout has taken the new height)
        QApplication.postEvent(area, QEvent(QEvent.Type.LayoutRequest))


class _HeightKeeper(QObject):
    """Refits a compact label's height (:func:`fit_height`) when its width changes, and when
    anything that sets how its text wraps does: the font or style (napari's stylesheet reaches a
    widget when it is first shown) or its being shown."""

    REFIT = (QEvent.Type.Show, QEvent.Type.FontChange, QEvent.Type.StyleChange, QEvent.Type.Polish)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
        kind = event.type()
        if (kind == QEvent.Type.Resize and event.size().width() != event.oldSize().width()) or kind in self.REFIT:
            fit_height(obj)
        return False


_HEIGHT_KEEPER = _HeightKeeper()


def full_width(*widgets: Any) -> None:
    """Give widgets without a label of their own (text, tables) the dock's whole width: in a
    labelled magicgui container every row keeps a column for its label, empty or not, which left
    texts half the width of a narrow dock and cut words like "medspikeformer" at its edge.
    Call it after the widgets are in their container."""
    for widget in widgets:
        row = widget._labeled_widget() if hasattr(widget, "_labeled_widget") else None
        if row is not None:  # (magicgui's row wrapper: its label widget goes, the widget stays)
            row._label_widget.native.hide()


def show_text(label: Any, text: str, width: int = TEXT_WIDTH) -> None:
    """Put ``text`` in a label; words longer than ``width`` characters (paths, file names) get
    break opportunities so a narrow dock can wrap them too. The tooltip has the text as given."""
    import re

    zero_width_space = "\u200b"
    label.value = re.sub(rf"[^\s]{{{width},}}",
                         lambda m: re.sub(r"([/_\-.])", rf"\1{zero_width_space}", m.group(0)), text)
    label.tooltip = text
    if label.native.wordWrap():
        fit_height(label.native)
        from qtpy.QtCore import QTimer

        native = label.native
        # again once the events queued meanwhile (layouts, styles) have run: one of them may
        # change the width or font it wraps at without a resize of its own
        QTimer.singleShot(0, lambda: _refit_if_alive(native))


def _refit_if_alive(native: Any) -> None:
    """:func:`fit_height`, unless Qt has deleted the label meanwhile (its dock closed)."""
    try:
        fit_height(native)
    except RuntimeError:  # "wrapped C/C++ object ... has been deleted"
        pass


class DockContainer(Container):
    """A magicgui container that scrolls inside its napari dock.

    napari docks a magicgui widget's ``.native``; for a scrollable container that is the inner
    widget, not the scroll area around it, so the dock would neither scroll nor shrink. Here
    ``.native`` is the scroll area; :attr:`inner` holds the layout.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(scrollable=True, **kwargs)

    @property
    def native(self) -> Any:  # type: ignore[override]
        return self.root_native_widget

    @property
    def inner(self) -> Any:
        """The Qt widget that holds the layout (add non-magicgui widgets here)."""
        return self._widget._mgui_get_native_widget()


#: Pixels added to the label column of a dock, so that its widest label shows its last letter.
LABEL_SLACK = 6
#: Docks narrower than this start to clip their fields.
DOCK_MIN_WIDTH = 210


def make_narrow(container: Any) -> None:
    """Let a (scrollable) dock container shrink to :data:`DOCK_MIN_WIDTH` so the canvas keeps the
    room: drop-downs and file fields no longer size themselves to their longest entry."""
    from qtpy.QtWidgets import QAbstractSpinBox, QComboBox, QLineEdit

    container._full_choice = _FullChoiceTip(container.root_native_widget)  # lives with the dock
    for combo in container.native.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(3)
        combo.installEventFilter(container._full_choice)
    for line in container.native.findChildren(QLineEdit):
        line.setMinimumWidth(40)
    for spin in container.native.findChildren(QAbstractSpinBox):
        spin.setMinimumWidth(56)
        if spin.buttonSymbols() == QAbstractSpinBox.ButtonSymbols.NoButtons:  # a slider's readout, "0.50"
            spin.setStyleSheet(spin.styleSheet() + " min-width: 40px;")  # (napari's style gives 90 px)
    for widget in container:
        row = widget._labeled_widget() if hasattr(widget, "_labeled_widget") else None
        if row is not None:  # magicgui's label column fits the widest label to the pixel: its last letter was cut
            row._label_widget.native.setMinimumWidth(row._label_widget.native.minimumWidth() + LABEL_SLACK)
        button = getattr(widget, "choose_btn", None)  # a FileEdit: "Choose directory" -> "…"
        if button is not None:
            button.tooltip = button.text
            button.text = "…"
            button.native.setMaximumWidth(32)
    container.root_native_widget.setMinimumWidth(DOCK_MIN_WIDTH)
    container._width_keeper = _WidthKeeper(container.root_native_widget)  # kept alive with the dock
    container.inner.installEventFilter(container._width_keeper)


class _FullChoiceTip(QObject):
    """A narrow drop-down cuts its choice short ("polyp (Kv"): hovering it shows the whole
    choice above the box's own tooltip, which stays as it was."""

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.ToolTip:
            from qtpy.QtWidgets import QToolTip

            text = obj.currentText()
            tip = obj.toolTip()
            if text and obj.fontMetrics().horizontalAdvance(text) > obj.contentsRect().width() - 40:
                tip = f"{text}\n\n{tip}" if tip else text  # (40 px: the arrow and the frame)
            if tip:
                QToolTip.showText(event.globalPos(), tip, obj)
            else:
                QToolTip.hideText()
            return True
        return False


class _WidthKeeper(QObject):
    """Keeps a scrolling dock at least as wide as its contents' minimum plus a vertical scroll
    bar: the docks never scroll sideways, so whatever did not fit (the right end of the fields,
    the last words of a text) was hidden under the scroll bar once one appeared. Runs whenever
    the contents' layout changes (a table shown, a style applied)."""

    def __init__(self, scroll_area: Any) -> None:
        super().__init__()
        self.scroll_area = scroll_area

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
        if event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Show):
            from qtpy.QtWidgets import QStyle

            area = self.scroll_area
            bar = area.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
            need = obj.minimumSizeHint().width() + bar + 2 * area.frameWidth()
            if area.minimumWidth() != max(DOCK_MIN_WIDTH, need):
                area.setMinimumWidth(max(DOCK_MIN_WIDTH, need))
        return False


def plot_theme(viewer: Any) -> dict[str, str]:
    """matplotlib settings that draw a dock's plot in the viewer's napari theme (a white figure
    glares in the dark theme), for ``matplotlib.rc_context``; empty for a theme napari cannot
    name (matplotlib's own look)."""
    from napari.utils.theme import get_theme

    try:
        theme = get_theme(str(getattr(viewer, "theme", "dark")))
    except Exception:  # (a custom theme that is gone, an old napari)
        return {}
    face, text = theme.background.as_hex(), theme.text.as_hex()
    return {"figure.facecolor": face, "axes.facecolor": face, "savefig.facecolor": face, "axes.edgecolor": text,
            "axes.labelcolor": text, "axes.titlecolor": text, "xtick.color": text, "ytick.color": text,
            "text.color": text, "legend.labelcolor": text}


class DockPlot:
    """A matplotlib figure on a Qt canvas in a dock, drawn in the napari theme given as
    ``style`` (:func:`plot_theme`). Subclasses draw inside :meth:`redraw`."""

    def __init__(self, figsize: tuple[float, float], min_size: tuple[int, int],
                 style: dict[str, str] | None = None) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.style = style or {}
        with self.themed():
            self.figure = Figure(figsize=figsize, dpi=90, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumSize(*min_size)

    def themed(self) -> Any:
        """A context in which new artists take the theme's colours."""
        from matplotlib import rc_context

        return rc_context(self.style)

    def redraw(self, draw: Callable[[], None]) -> None:
        """Run ``draw`` (which changes the figure) in the theme, then repaint the canvas."""
        with self.themed():
            draw()
        self.canvas.draw_idle()


def viewer_grid(viewer: Any) -> Any:
    """The viewer's grid settings (``viewer.canvas.grid`` from napari 0.9, ``viewer.grid`` before)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def show_for_editing(viewer: Any, mask: Any, image: Any = None) -> None:
    """Make ``mask`` ready to paint: the grid off (the mask lies over its image, not in a cell
    of its own), the mask and its image visible with no other image drawn over that image (the
    inspector's spike maps) nor masks segmented for other images, the mask on top of the layer
    list and the active layer (napari's paint tools act on it)."""
    from napari.layers import Image

    if mask is None or mask not in viewer.layers:
        return
    grid = viewer_grid(viewer)
    if grid.enabled:  # out of the inspector's grid: no cell titles, the image filling the canvas
        grid.enabled = False
        for layer in viewer.layers:
            layer.name_overlay.visible = False
        viewer.reset_view()
    for layer in (image, mask):
        if layer is not None and layer in viewer.layers:
            layer.visible = True
    if image is not None and image in viewer.layers:
        for layer in list(viewer.layers)[viewer.layers.index(image) + 1:]:
            if layer is not mask and (isinstance(layer, Image) or made_for_another_image(layer, image, viewer)):
                layer.visible = False
    index, top = viewer.layers.index(mask), len(viewer.layers) - 1
    if index != top:
        viewer.layers.move(index, top + 1)
    viewer.layers.selection.active = mask


class _ShowFilter(QObject):
    """Calls ``callback`` whenever the widget it filters is shown: its dock opened or raised.

    A dock raised by its tab (docks stacked as tabs) sends its contents no Show event on every
    Qt binding, so once the widget sits in a ``QDockWidget`` (it is put there after it is made:
    a ParentChange event) the dock's ``visibilityChanged(True)`` calls back instead."""

    def __init__(self, callback: Callable[[], None]) -> None:
        super().__init__()
        self.callback = callback
        self.dock: Any = None

    def _on_visibility(self, visible: bool) -> None:
        if visible:
            self.callback()

    def _find_dock(self, widget: Any) -> None:
        from qtpy.QtWidgets import QDockWidget

        parent = _ancestor(widget, QDockWidget)
        if parent is not None and parent is not self.dock:
            if self.dock is not None:
                self.dock.visibilityChanged.disconnect(self._on_visibility)
            self.dock = parent
            parent.visibilityChanged.connect(self._on_visibility)

    def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.ParentChange:
            self._find_dock(watched)
        elif event.type() == QEvent.Type.Show and self.dock is None:
            self.callback()
        return False


def call_when_shown(widget: Any, callback: Callable[[], None]) -> None:
    """Call ``callback`` each time the magicgui ``widget``'s dock is opened or raised."""
    widget._show_filter = _ShowFilter(callback)  # kept alive with the widget
    widget.native.installEventFilter(widget._show_filter)


class _CloseFilter(QObject):
    """Calls its callbacks when the widget it filters loses its parent: napari's dock ✕ takes it
    out of its dock (``remove_dock_widget``) without deleting it."""

    def __init__(self) -> None:
        super().__init__()
        self.callbacks: list[Callable[[], None]] = []

    def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.ParentChange and watched.parentWidget() is None:
            for callback in self.callbacks:
                callback()
        return False


def call_when_closed(widget: Any, callback: Callable[[], None]) -> None:
    """Call ``callback`` when the magicgui ``widget``'s dock is closed, and when Qt deletes it
    (so it may be called twice). napari keeps a closed dock's contents alive, unseen, while
    anything holds them (a job's callbacks, the viewer's events): being deleted alone may never
    come."""
    if getattr(widget, "_close_filter", None) is None:
        widget._close_filter = _CloseFilter()  # kept alive with the widget
        widget.native.installEventFilter(widget._close_filter)
    widget._close_filter.callbacks.append(callback)
    widget.native.destroyed.connect(lambda *_: callback())


def connect_until_closed(widget: Any, emitter: Any, callback: Callable[..., Any]) -> None:
    """Connect ``callback`` to a napari event ``emitter`` (the viewer's or a layer's) for as long
    as ``widget``'s dock is open. A closed dock is not deleted (:func:`call_when_closed`): still
    connected, it went on following layers, and Segment's measured every painted stroke again."""
    emitter.connect(callback)
    call_when_closed(widget, lambda: emitter.disconnect(callback))  # (twice does no harm)


#: Qt property that marks the docks of this plugin's widgets (see :func:`tab_with_sibling_docks`).
SIBLING_PROPERTY = "napari_medspike_dock"


def _tab_in(dock: Any) -> None:
    """Put ``dock`` in the tab group of another dock of this plugin in the same area of the
    window, in front, unless it is in one already (napari's ``tabify``) or floats."""
    from qtpy.QtWidgets import QDockWidget, QMainWindow

    window = dock.parentWidget()
    if not isinstance(window, QMainWindow) or dock.isFloating():
        return
    area = window.dockWidgetArea(dock)

    def sibling(other: Any) -> bool:
        return (other is not dock and bool(other.property(SIBLING_PROPERTY)) and not other.isFloating()
                and window.dockWidgetArea(other) == area
                and (other.isVisibleTo(window) or bool(window.tabifiedDockWidgets(other))))

    siblings = [other for other in window.findChildren(QDockWidget) if sibling(other)]
    if siblings and not any(other in siblings for other in window.tabifiedDockWidgets(dock)):
        from qtpy.QtCore import QTimer

        window.tabifyDockWidget(siblings[0], dock)
        QTimer.singleShot(0, dock.raise_)  # once Qt has made the tab: the dock just opened in front


class _DockedFilter(QObject):
    """Once the widget it filters is put in a ``QDockWidget`` (a ParentChange event), marks
    that dock as this plugin's and, when napari has added it to the window, tabs it in."""

    def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QDockWidget

        if event.type() == QEvent.Type.ParentChange:
            dock = _ancestor(watched, QDockWidget)
            if dock is not None and not dock.property(SIBLING_PROPERTY):
                dock.setProperty(SIBLING_PROPERTY, True)
                # after napari has added it, and after Qt has updated the tab groups of any docks
                # napari tabbed meanwhile (Qt does that on its next turn: one turn later)
                QTimer.singleShot(0, lambda: QTimer.singleShot(0, lambda: _tab_in(dock)))
        return False


def tab_with_sibling_docks(widget: Any) -> None:
    """Dock the magicgui ``widget`` as a tab beside this plugin's other docks. Opened one after
    another from napari's Plugins menu, the docks were stacked in one column, each a few rows
    high (Segment showed two fields at 1280x800); as tabs, each gets the column's height."""
    widget._docked_filter = _DockedFilter()  # kept alive with the widget
    widget.native.installEventFilter(widget._docked_filter)


#: Metadata key that marks the layers the Spike inspector made.
MAP_TAG = "medspike_inspector_map"


def is_users_image(layer: Any) -> bool:
    """Whether ``layer`` is an image the user opened or added, not one of this plugin's results
    (probabilities, the inspector's maps)."""
    from napari.layers import Image

    metadata = getattr(layer, "metadata", None) or {}
    return isinstance(layer, Image) and "source_image" not in metadata and MAP_TAG not in metadata


def same_layer(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same napari layer. Not ``is``: napari hands a plugin's
    widget a proxy of the viewer, whose ``viewer.layers[name]`` wraps the layer in a new proxy
    each time (iterating gives the layers themselves), so the same layer can be two objects."""
    return a is b or (a is not None and b is not None
                      and getattr(a, "unique_id", None) is not None and a.unique_id == getattr(b, "unique_id", None))


def file_of(layer: Any) -> str:
    """The file a layer was opened from (napari's source, else the path its metadata records),
    or ``""``."""
    return str(getattr(getattr(layer, "source", None), "path", None) or layer.metadata.get("path", ""))


def link_to_image(image_layer: Any) -> dict[str, str]:
    """Metadata that ties a result layer (probability, mask) to the image it was made for: the
    image's name, napari's ``unique_id`` of its layer, which a rename keeps, and its file when
    it was opened from one (which keeps the drafts of two pictures of one name apart)."""
    path = file_of(image_layer)
    return {"source_image": image_layer.name, "source_image_id": str(image_layer.unique_id),
            **({"source_path": path} if path else {})}


def image_made_for(layer: Any, viewer: Any) -> Any:
    """The open layer ``layer`` was made for (:func:`link_to_image`): found by its id, so a renamed
    image keeps its masks; else by name (an image opened again, a sample's ground truth);
    ``None`` when ``layer`` is tied to no image or its image is closed."""
    from napari.layers import Image

    metadata = getattr(layer, "metadata", None) or {}
    images = [candidate for candidate in viewer.layers if isinstance(candidate, Image)]
    made_for = metadata.get("source_image_id")
    for candidate in images if made_for is not None else ():
        if str(candidate.unique_id) == made_for:
            return candidate
    name = metadata.get("source_image")
    # a sample opened twice: napari names the second image and its ground truth "<name> [1]"
    copy = re.search(r" \[\d+\]$", str(getattr(layer, "name", ""))) if made_for is None else None
    names = ([f"{name}{copy.group(0)}"] if copy else []) + [name]
    return next((candidate for wanted in names for candidate in images if candidate.name == wanted), None)


def made_for_another_image(layer: Any, image: Any, viewer: Any) -> bool:
    """Whether ``layer`` is a result made for an image other than ``image`` (open or closed)."""
    metadata = getattr(layer, "metadata", None) or {}
    return "source_image" in metadata and not same_layer(image_made_for(layer, viewer), image)


def image_box(viewer: Any) -> Any:
    """A drop-down of the images the user opened or added (:func:`is_users_image`), not this
    plugin's results: with its image closed, a dock fell back on '<image> probability', which
    Save correction then stored as a training image and Segment segmented again."""
    from magicgui.widgets import ComboBox

    return ComboBox(label="image", choices=lambda *_: [layer for layer in viewer.layers if is_users_image(layer)],
                    nullable=False)


def follow_layers(widget: Any, viewer: Any, new_images: bool = False) -> None:
    """Refresh a widget's layer pickers whenever layers are added or removed; ``new_images``:
    an image the user opens becomes the widget's image (Segment would otherwise segment the
    earlier one again)."""
    def inserted(event: Any) -> None:
        widget.reset_choices()
        layer = getattr(event, "value", None)
        if new_images and is_users_image(layer) and layer in widget.image.choices:
            widget.image.value = layer

    connect_until_closed(widget, viewer.layers.events.inserted, inserted)
    connect_until_closed(widget, viewer.layers.events.removed, widget.reset_choices)


def selected_image_and_model(
    layer: Any, session: ModelSession, source: str | None = None, viewer: Any = None, stacks: bool = False
) -> tuple[np.ndarray, Segmenter] | None:
    """The pixels of the chosen image layer and the model of ``session`` to use (``source``, or
    its current one), or None after telling the user (as a notification) what is missing.
    ``stacks=True`` takes a whole stack; otherwise a stack gives the slice ``viewer`` shows."""
    if layer is None:
        show_error("open an image first")
        return None
    try:
        data = image_data(layer) if stacks else image_data_2d(layer, viewer)
        return data, session.get(source)
    except Exception as err:
        show_error(str(err))
        return None


class JobFailed(Exception):
    """A job's RuntimeError, passed on as an ordinary error (see :func:`start_worker`)."""


#: How fast napari's "in progress" animation plays while one of this plugin's jobs runs, in per
#: cent of its own speed (see :func:`calm_activity_spinners`).
SPINNER_SPEED = 10
_jobs_running = 0


def _activity_spinners() -> list[Any]:
    """The "in progress" animations (a 90-frame GIF) of napari's windows' status bars; empty
    where napari's window is laid out otherwise (they are not public)."""
    from qtpy.QtWidgets import QApplication

    movies = []
    for window in QApplication.topLevelWidgets():
        try:
            movie = window._activity_dialog._toggleButton._inProgressIndicator.movie()
        except (AttributeError, RuntimeError):
            continue
        if movie is not None and hasattr(movie, "setSpeed"):
            movies.append(movie)
    return movies


def calm_activity_spinners(running: bool) -> None:
    """Slow napari's "in progress" animation while a job of this plugin runs (``running``), and
    give it back its speed when the last one ends. Without a GPU for the window (a remote
    desktop, a virtual machine, Xvfb) every frame of it re-composes the whole window, OpenGL
    canvas included: segmenting 8 frames in the Segment dock took 2.0 s with it at full speed,
    1.0 s at a tenth, 0.8 s from Python, on 2 CPU cores (``benchmarks/dock_overhead.py``). It
    keeps turning, a tenth as fast."""
    global _jobs_running
    _jobs_running = max(0, _jobs_running + (1 if running else -1))
    speed = SPINNER_SPEED if _jobs_running else 100
    for movie in _activity_spinners():
        movie.setSpeed(speed)


def start_worker(
    job: Callable[[], Generator[Any, None, Any]],
    description: str,
    on_yield: Callable[[Any], None] | None = None,
    on_return: Callable[[Any], None] | None = None,
    on_finish: Callable[[], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
) -> Any:
    """Run a generator function in a napari thread worker with a progress bar.

    Yielded objects with ``done``/``total`` (or ``step``/``steps``) move the bar; errors become
    notifications (and go to ``on_error``, e.g. for the dock's status line); ``worker.quit()``
    stops the job at its next yield.
    """
    from napari.qt.threading import create_worker

    def guarded() -> Generator[Any, None, Any]:
        try:
            return (yield from job())
        except RuntimeError as err:
            # superqt treats a RuntimeError from a job as a deleted worker: it would emit neither
            # `errored` nor `finished`, and the dock would wait forever (torch raises these)
            raise JobFailed(f"{type(err).__name__}: {err}") from err

    def alive(callback: Callable[..., None] | None) -> Callable[..., None] | None:
        """``callback``, quiet when its dock was closed (with napari) while the job ran: Qt has
        deleted the widgets it would update, which is no error of the user's."""
        if callback is None:
            return None

        def call(*args: Any) -> None:
            try:
                callback(*args)
            except RuntimeError as err:
                if "has been deleted" not in str(err):
                    raise
        return call

    on_yield, on_return, on_finish, on_error = alive(on_yield), alive(on_return), alive(on_finish), alive(on_error)
    worker = create_worker(guarded, _ignore_errors=True)  # errors are shown by `errored` below, once
    bar = progress(total=0, desc=description)

    def yielded(event: Any) -> None:
        done = getattr(event, "done", None)
        total = getattr(event, "total", None)
        if done is None and hasattr(event, "step"):
            total = event.steps * event.epochs
            done = (event.epoch - 1) * event.steps + event.step
        if total:
            bar.total = total
            bar.n = done
            bar.set_description(f"{description}: {getattr(event, 'message', '')}".rstrip(": "))
            bar.refresh()
        if on_yield is not None:
            on_yield(event)

    def errored(err: Exception) -> None:
        show_error(f"{description} failed: {err}")
        if on_error is not None:
            on_error(err)

    def finished() -> None:
        try:
            bar.close()
        finally:  # (napari closed meanwhile: the bar's widget may be gone; the count goes down anyway)
            calm_activity_spinners(False)
        if on_finish is not None:
            on_finish()

    worker.yielded.connect(yielded)
    worker.errored.connect(errored)
    worker.aborted.connect(lambda: show_info(f"{description} cancelled"))
    if on_return is not None:
        worker.returned.connect(on_return)
    worker.finished.connect(finished)
    worker.start()
    calm_activity_spinners(True)  # (once it started: its `finished` brings the count down)
    return worker


def drafts_folder() -> Path:
    """Where painted masks are autosaved: ``<user data dir>/napari-medspike/drafts``."""
    from ..data.corrections import default_store

    return default_store().parent / "drafts"


class DraftSaver:
    """Autosave a mask layer shortly after each paint stroke, so a crash or a closed viewer
    loses nothing that was painted (``drafts/``, written atomically, one file per layer name and
    picture file)."""

    def __init__(self, layer: Any, folder: Path | None = None, delay_ms: int = 1500) -> None:
        from qtpy.QtCore import QTimer

        self.layer, self.folder = layer, folder
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(delay_ms)
        self.timer.timeout.connect(self.save)

    def schedule(self, *_: Any) -> None:
        self.timer.start()

    def save(self) -> Path:
        """Write the draft now: ``drafts/<sanitised name>-<hash>.png`` plus a sidecar with the
        full layer name (unique and bounded for any layer name; see
        :func:`~napari_medspike.data.corrections.write_draft`)."""
        from ..data.corrections import write_draft

        data = np.asarray(self.layer.data)
        if data.ndim != 2:  # a stack's mask: Save correction stores the slice shown
            return None
        return write_draft(self.folder or drafts_folder(), self.layer.name, data != 0,  # (labels may be negative)
                           image=str(self.layer.metadata.get("source_path", "")))


#: Layers being given new data by this plugin, not by the user (see :func:`set_own_data`), by
#: napari's unique id (a layer reached through napari's plugin proxy is another Python object).
_OWN_WRITES: set[Any] = set()


def set_own_data(layer: Any, data: np.ndarray) -> None:
    """Give ``layer`` new ``data`` as this plugin's result (a new segmentation, a threshold):
    not counted as the user's edit by :func:`mark_edits`."""
    key = getattr(layer, "unique_id", id(layer))
    _OWN_WRITES.add(key)
    try:
        layer.data = data
    finally:
        _OWN_WRITES.discard(key)


def mark_edits(layer: Any) -> None:
    """Remember that the user changed a mask layer (no later result overwrites it) and autosave
    it after each change: a stroke of napari's paint tools, or new data given from the console
    or another plugin (``layer.data = ...``)."""
    paint = getattr(layer.events, "paint", None)
    if paint is None:
        return
    saver = DraftSaver(layer)  # kept alive by the connections below, as long as the layer

    def edited(*_: Any) -> None:
        if getattr(layer, "unique_id", id(layer)) not in _OWN_WRITES:
            layer.metadata["edited"] = True
            saver.schedule()

    paint.connect(edited)
    layer.events.data.connect(edited)


#: Mask colours that stand out on red mucosa, skin and grey ultrasound alike.
MASK_COLOURS = ("cyan", "yellow", "lime", "magenta", "white")
MASK_STYLES = ("outline", "filled")


def style_mask(layer: Any, colour: str = MASK_COLOURS[0], style: str = MASK_STYLES[0]) -> None:
    """Show a 0/1 mask layer in one contrasting colour, as an outline (2 px) or filled (the
    layer's metadata keeps both, see :func:`mask_look`)."""
    from napari.utils.colormaps import DirectLabelColormap

    # every label above 0 is foreground (a stroke painted with label 2 after pressing M too)
    layer.colormap = DirectLabelColormap(color_dict={None: colour, 0: "transparent", 1: colour})
    layer.contour = 2 if style == "outline" else 0
    layer.opacity = 1.0 if style == "outline" else 0.5
    layer.metadata.update(mask_colour=colour, mask_style=style)


def mask_look(layer: Any) -> tuple[str, str]:
    """The colour and style :func:`style_mask` gave ``layer`` (the defaults for a layer it did
    not style, such as one the user added)."""
    metadata = getattr(layer, "metadata", None) or {}
    return metadata.get("mask_colour", MASK_COLOURS[0]), metadata.get("mask_style", MASK_STYLES[0])


def other_colour(colour: str) -> str:
    """The first mask colour that is not ``colour`` (a second mask must stand apart)."""
    return next(c for c in MASK_COLOURS if c != colour)


def placement_of(image_layer: Any, nd: int) -> dict[str, Any]:
    """Where a result of ``nd`` axes goes to lie on ``image_layer``: its scale, translate and
    units on those axes, and its rotation, shear and affine transform when it has ``nd`` axes."""
    placement: dict[str, Any] = {"scale": tuple(image_layer.scale[-nd:]),
                                 "translate": tuple(image_layer.translate[-nd:])}
    units = getattr(image_layer, "units", None)
    if units is not None:
        placement["units"] = tuple(units[-nd:])
    if image_layer.ndim == nd:
        placement.update(rotate=image_layer.rotate, shear=image_layer.shear, affine=image_layer.affine)
    return placement


def axis_aligned(layer: Any) -> bool:
    """Whether ``layer`` is only scaled and moved (no rotation, shear or affine transform)."""
    return (np.allclose(layer.rotate, np.eye(layer.ndim)) and np.allclose(layer.shear, 0)
            and np.allclose(layer.affine.affine_matrix, np.eye(layer.ndim + 1)))


def world_matrix_of(layer: Any) -> np.ndarray:
    """The ``(ndim + 1)²`` matrix that takes ``layer``'s pixel coordinates to the world: its scale,
    translate, rotation and shear, then its affine transform (napari's order)."""
    from napari.utils.transforms import Affine

    own = Affine(scale=layer.scale, translate=layer.translate, rotate=layer.rotate, shear=layer.shear,
                 ndim=layer.ndim)
    return layer.affine.affine_matrix @ own.affine_matrix


def _same_setting(now: Any, wanted: Any) -> bool:
    """Whether a layer's ``now`` value of scale, translate, rotate, shear, affine or units already
    is ``wanted`` (numbers compared as numbers, units by their names)."""
    now, wanted = (getattr(value, "affine_matrix", value) for value in (now, wanted))  # (napari's Affine)
    try:
        return np.shape(now) == np.shape(wanted) and np.allclose(np.asarray(now, float), np.asarray(wanted, float))
    except (TypeError, ValueError):  # units
        return [str(v) for v in np.ravel(np.asarray(now, dtype=object))] == \
            [str(v) for v in np.ravel(np.asarray(wanted, dtype=object))]


def add_segmentation_layers(
    viewer: Any, image_layer: Any, prob: np.ndarray, threshold: float, suffix: str = "",
    colour: str = MASK_COLOURS[0], style: str = MASK_STYLES[0], settings: dict[str, Any] | None = None,
    model_source: str | None = None,
) -> tuple[Any, Any]:
    """Add or update ``<image> probability`` and ``<image> mask`` aligned with the image layer.

    Only this plugin's own unpainted results for this image are updated (data, scale and
    translate); a layer of the same name that the user painted on, opened from a file or made
    for another image is never overwritten: the new layer gets a new name (``... [2]``).
    The mask is drawn in a contrasting ``colour``, as an ``outline`` or ``filled``
    (:func:`style_mask`). ``settings`` (``predict``'s mode, flips and device) are kept in the
    mask's metadata as ``segmented_with``, so re-segmenting after fine-tuning can repeat them;
    ``model_source`` (the model that made it) as ``segmented_by``, which a saved correction records.
    """
    from napari.layers import Image, Labels

    nd = prob.ndim  # 2, or 3 for a stack: aligned with the image layer's own axes
    placement = placement_of(image_layer, nd)
    mask = (prob >= threshold).astype(np.uint8)

    def free_name(base: str, kind: type) -> str:
        """``base``, unless a layer of that name is not one of this plugin's results for this
        image that may be updated (another kind, another image, another number of axes, or a
        mask the user painted on): then ``base [2]``, ``base [3]``, ..."""
        name, n = base, 2
        while name in viewer.layers:
            layer = viewer.layers[name]
            if (isinstance(layer, kind) and same_layer(image_made_for(layer, viewer), image_layer)
                    and not layer.metadata.get("edited") and layer.data.ndim == nd):
                break
            name, n = f"{base} [{n}]", n + 1
        return name

    mask_name = free_name(f"{image_layer.name} mask{suffix}", Labels)
    # the probabilities take their mask's number: beside a painted mask kept as "<image> mask",
    # the new "<image> mask [2]" comes with "<image> probability [2]" (the painted mask's own
    # probabilities were replaced by the new model's)
    number = mask_name[len(f"{image_layer.name} mask{suffix}"):]
    prob_name = free_name(f"{image_layer.name} probability{suffix}{number}", Image)
    for name, data in ((prob_name, prob), (mask_name, mask)):
        if name in viewer.layers:  # this image's earlier result: new data, and where the image is now
            layer = viewer.layers[name]
            # only what changed: each assignment redraws the layer, and a Labels layer's outline is
            # worked out again each time (2.2 s on the GUI thread for a 12-megapixel image)
            for key, value in placement.items():
                if not _same_setting(getattr(layer, key), value):
                    setattr(layer, key, value)
            set_own_data(layer, data)
    if mask_name in viewer.layers and mask_look(viewer.layers[mask_name]) != (colour, style):
        style_mask(viewer.layers[mask_name], colour, style)  # as the dock's boxes say
    if prob_name not in viewer.layers:  # rgb=False: napari would guess [H, W, 3] probabilities are colours
        viewer.add_image(prob, name=prob_name, colormap="magma", opacity=0.45, blending="additive", rgb=False,
                         contrast_limits=(0.0, 1.0), visible=False, metadata=link_to_image(image_layer),
                         **placement)
    if mask_name not in viewer.layers:
        base = f"{image_layer.name} mask{suffix}"
        if mask_name != base and base in viewer.layers and mask_look(viewer.layers[base])[0] == colour:
            colour = other_colour(colour)  # beside the mask kept (e.g. painted): told apart at a glance
        layer = viewer.add_labels(mask, name=mask_name, metadata=link_to_image(image_layer), **placement)
        style_mask(layer, colour, style)
        mark_edits(layer)
    viewer.layers[mask_name].metadata["threshold"] = threshold
    if settings is not None:
        viewer.layers[mask_name].metadata["segmented_with"] = dict(settings)
    if model_source is not None:
        viewer.layers[mask_name].metadata["segmented_by"] = model_source
    return viewer.layers[prob_name], viewer.layers[mask_name]
