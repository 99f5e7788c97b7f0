"""Pieces the three widgets share: the current model, workers with progress, result layers."""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils import progress
from napari.utils.notifications import show_error, show_info

from ..engine.checkpoint import list_models, load_model
from ..models.base import Segmenter


class ModelSession:
    """The model the widgets work with (shared: fine-tuning updates what Segment uses)."""

    def __init__(self) -> None:
        self.model: Segmenter | None = None
        self.source: str = ""
        self._listeners: list[Callable[[str], None]] = []

    def get(self, source: str | Path | None = None) -> Segmenter:
        """The current model, or load ``source`` (a shipped name or a path) and make it current."""
        if source is not None and str(source) != self.source:
            self.set(load_model(source), str(source))
        if self.model is None:
            if not list_models():
                raise RuntimeError("no model loaded and no shipped model found: choose a checkpoint file")
            self.set(load_model("default" if "default" in list_models() else next(iter(list_models()))), "default")
        assert self.model is not None
        return self.model

    def set(self, model: Segmenter, source: str) -> None:
        self.model, self.source = model, source
        for listener in list(self._listeners):
            listener(source)

    def subscribe(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)


SESSION = ModelSession()


def summary_of(model: Segmenter) -> str:
    """One or two lines about a model for the dock: architecture, size, validation Dice."""
    info = getattr(model, "checkpoint_info", None) or {}
    metrics = info.get("metrics") or {}
    orig = metrics.get("original_resolution") or {}
    dice = orig.get("mean_dice", metrics.get("val_dice"))
    text = f"{model.arch}, input {info.get('input_size', 256)}², T={model.timesteps}"
    if dice is not None:
        text += f"\nvalidation Dice {dice:.3f} ({', '.join(info.get('training', {}).get('data', []))[-40:]})"
    return text


def image_data_2d(layer: Any) -> np.ndarray:
    """A 2D image layer's pixels; a clear error for stacks and multiscale layers."""
    if getattr(layer, "multiscale", False):
        raise ValueError(f"'{layer.name}' is multiscale: open the full-resolution image instead")
    if layer.ndim != 2:
        raise ValueError(f"'{layer.name}' has {layer.ndim} dimensions: select a 2D image or save one slice")
    return np.asarray(layer.data)


def follow_layers(widget: Any, viewer: Any) -> None:
    """Refresh a widget's layer pickers whenever layers are added or removed."""
    viewer.layers.events.inserted.connect(widget.reset_choices)
    viewer.layers.events.removed.connect(widget.reset_choices)


def selected_image_and_model(layer: Any, source: str | None = None) -> tuple[np.ndarray, Segmenter] | None:
    """The 2D pixels of the chosen image layer and the model to use, or None after telling the
    user (as a notification) what is missing."""
    if layer is None:
        show_error("open an image first")
        return None
    try:
        return image_data_2d(layer), SESSION.get(source)
    except Exception as err:
        show_error(str(err))
        return None


def start_worker(
    job: Callable[[], Generator[Any, None, Any]],
    description: str,
    on_yield: Callable[[Any], None] | None = None,
    on_return: Callable[[Any], None] | None = None,
    on_finish: Callable[[], None] | None = None,
) -> Any:
    """Run a generator function in a napari thread worker with a progress bar.

    Yielded objects with ``done``/``total`` (or ``step``/``steps``) move the bar; errors become
    notifications; ``worker.quit()`` stops the job at its next yield.
    """
    from napari.qt.threading import create_worker

    worker = create_worker(job)
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

    def finished() -> None:
        bar.close()
        if on_finish is not None:
            on_finish()

    worker.yielded.connect(yielded)
    worker.errored.connect(errored)
    worker.aborted.connect(lambda: show_info(f"{description} cancelled"))
    if on_return is not None:
        worker.returned.connect(on_return)
    worker.finished.connect(finished)
    worker.start()
    return worker


def drafts_folder() -> Path:
    """Where painted masks are autosaved: ``<user data dir>/napari-medspike/drafts``."""
    from ..data.corrections import default_store

    return default_store().parent / "drafts"


class DraftSaver:
    """Autosave a mask layer shortly after each paint stroke, so a crash or a closed viewer
    loses nothing that was painted (``drafts/<layer name>.png``, written atomically)."""

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
        import re

        from ..data.corrections import png_bytes
        from ..engine.checkpoint import atomic_write

        folder = self.folder or drafts_folder()
        name = re.sub(r"[^A-Za-z0-9_-]+", "_", self.layer.name).strip("_") or "mask"
        encoded = png_bytes((np.asarray(self.layer.data) > 0).astype(np.uint8) * 255)
        return atomic_write(folder / f"{name}.png", lambda tmp: tmp.write_bytes(encoded))


def _mark_edits(layer: Any) -> None:
    """Remember that the user painted on a mask layer (no later result overwrites it) and
    autosave it after each stroke."""
    paint = getattr(layer.events, "paint", None)
    if paint is not None:
        saver = DraftSaver(layer)  # kept alive by the connection below, as long as the layer
        paint.connect(lambda *_: layer.metadata.__setitem__("edited", True))
        paint.connect(lambda *_: saver.schedule())


def add_segmentation_layers(
    viewer: Any, image_layer: Any, prob: np.ndarray, threshold: float, suffix: str = ""
) -> tuple[Any, Any]:
    """Add or update ``<image> probability`` and ``<image> mask`` aligned with the image layer.

    A mask layer the user has painted on is never overwritten: the new mask gets a new name.
    """
    scale, translate = tuple(image_layer.scale[-2:]), tuple(image_layer.translate[-2:])
    mask = (prob >= threshold).astype(np.uint8)
    prob_name = f"{image_layer.name} probability{suffix}"
    mask_name = f"{image_layer.name} mask{suffix}"
    n = 2
    while mask_name in viewer.layers and viewer.layers[mask_name].metadata.get("edited"):
        mask_name = f"{image_layer.name} mask{suffix} [{n}]"
        n += 1
    if prob_name in viewer.layers:
        viewer.layers[prob_name].data = prob
    else:
        viewer.add_image(prob, name=prob_name, colormap="magma", opacity=0.45, blending="additive",
                         contrast_limits=(0.0, 1.0), scale=scale, translate=translate, visible=False)
    if mask_name in viewer.layers:
        viewer.layers[mask_name].data = mask
    else:
        layer = viewer.add_labels(mask, name=mask_name, opacity=0.5, scale=scale, translate=translate,
                                  metadata={"source_image": image_layer.name})
        _mark_edits(layer)
    viewer.layers[mask_name].metadata["threshold"] = threshold
    return viewer.layers[prob_name], viewer.layers[mask_name]
