"""How the docks lay out: narrow and scrolling, texts that wrap, plots in napari's theme."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container
from qtpy.QtCore import QEvent, QObject

if TYPE_CHECKING:  # annotations only
    from napari.viewer import Viewer


def elide(text: str, width: int = 48) -> str:
    """``text`` cut in the middle to at most ``width`` characters (paths keep both ends)."""
    return text if len(text) <= width else text[: width // 2 - 1] + "…" + text[-(width - width // 2):]


def typed_folder(value: Any) -> Path | None:
    """The folder a file box holds, as the user means it: ``~`` the home folder, a relative
    folder taken from where napari started, made absolute so that messages say where it is;
    ``None`` for an empty box (magicgui gives ``.`` for one)."""
    text = str(value).strip() if value is not None else ""
    if text in ("", "."):
        return None
    return Path(text).expanduser().absolute()


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


def ancestor(widget: Any, kind: type) -> Any:
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

    area = ancestor(native, QScrollArea)
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


def plot_theme(viewer: Viewer) -> dict[str, str]:
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
