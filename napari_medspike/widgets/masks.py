"""Segmentation results as napari layers: probabilities and masks added or updated and styled;
the user's paint strokes on a mask marked as edits and autosaved as drafts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .layers import image_made_for, link_to_image, placement_of, same_layer, same_setting

if TYPE_CHECKING:  # annotations only
    from napari.layers import Image, Labels
    from napari.viewer import Viewer


def drafts_folder() -> Path:
    """Where painted masks are autosaved: ``<user data dir>/napari-medspike/drafts``."""
    from ..data.corrections import default_store

    return default_store().parent / "drafts"


class DraftSaver:
    """Autosave a mask layer shortly after each paint stroke, so a crash or a closed viewer
    loses nothing that was painted (``drafts/``, written atomically, one file per layer name and
    picture file)."""

    def __init__(self, layer: Labels, folder: Path | None = None, delay_ms: int = 1500) -> None:
        from qtpy.QtCore import QTimer

        self.layer, self.folder = layer, folder
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(delay_ms)
        self.timer.timeout.connect(self.save)

    def schedule(self, *_: Any) -> None:
        """Save the draft once painting pauses (the timer restarts at each stroke)."""
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


def set_own_data(layer: Labels, data: np.ndarray) -> None:
    """Give ``layer`` new ``data`` as this plugin's result (a new segmentation, a threshold):
    not counted as the user's edit by :func:`mark_edits`."""
    key = getattr(layer, "unique_id", id(layer))
    _OWN_WRITES.add(key)
    try:
        layer.data = data
    finally:
        _OWN_WRITES.discard(key)


def mark_edits(layer: Labels) -> None:
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


def style_mask(layer: Labels, colour: str = MASK_COLOURS[0], style: str = MASK_STYLES[0]) -> None:
    """Show a 0/1 mask layer in one contrasting colour, as an outline (2 px) or filled (the
    layer's metadata keeps both, see :func:`mask_look`)."""
    from napari.utils.colormaps import DirectLabelColormap

    # every label above 0 is foreground (a stroke painted with label 2 after pressing M too)
    layer.colormap = DirectLabelColormap(color_dict={None: colour, 0: "transparent", 1: colour})
    layer.contour = 2 if style == "outline" else 0
    layer.opacity = 1.0 if style == "outline" else 0.5
    layer.metadata.update(mask_colour=colour, mask_style=style)


def mask_look(layer: Labels) -> tuple[str, str]:
    """The colour and style :func:`style_mask` gave ``layer`` (the defaults for a layer it did
    not style, such as one the user added)."""
    metadata = getattr(layer, "metadata", None) or {}
    return metadata.get("mask_colour", MASK_COLOURS[0]), metadata.get("mask_style", MASK_STYLES[0])


def other_colour(colour: str) -> str:
    """The first mask colour that is not ``colour`` (a second mask must stand apart)."""
    return next(c for c in MASK_COLOURS if c != colour)


def add_segmentation_layers(
    viewer: Viewer, image_layer: Image, prob: np.ndarray, threshold: float, suffix: str = "",
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
                if not same_setting(getattr(layer, key), value):
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
