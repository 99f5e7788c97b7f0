"""A dock's life in napari's window: told when it is shown or closed, tabbed beside this
plugin's other docks, its layer boxes following the viewer's layers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QObject

from .layers import is_users_image
from .layout import ancestor

if TYPE_CHECKING:  # annotations only
    from magicgui.widgets import ComboBox
    from napari.viewer import Viewer


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

        parent = ancestor(widget, QDockWidget)
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
            dock = ancestor(watched, QDockWidget)
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


def image_box(viewer: Viewer) -> ComboBox:
    """A drop-down of the images the user opened or added (:func:`is_users_image`), not this
    plugin's results: with its image closed, a dock fell back on '<image> probability', which
    Save correction then stored as a training image and Segment segmented again."""
    from magicgui.widgets import ComboBox

    return ComboBox(label="image", choices=lambda *_: [layer for layer in viewer.layers if is_users_image(layer)],
                    nullable=False)


def follow_layers(widget: Any, viewer: Viewer, new_images: bool = False) -> None:
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
