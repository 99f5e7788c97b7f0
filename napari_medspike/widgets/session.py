"""The model the docks of one viewer share, and how a model reads in a dock."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error

from ..engine.checkpoint import finetuned_time, list_models, load_model, resolve_checkpoint
from ..models.base import Segmenter
from .layers import image_data, image_data_2d
from .layout import elide

if TYPE_CHECKING:  # annotations only
    from napari.layers import Image
    from napari.viewer import Viewer


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
        """Make ``model`` (loaded from ``source``) current, remember a checkpoint file, and tell the docks."""
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

    Fine-tuned checkpoints (``finetuned_YYYYmmdd-HHMMSS``) read as ``fine-tuned HH:MM:SS (YYYY-mm-dd)``.
    """
    if source in list_models():
        return source
    made = finetuned_time(source)
    return Path(source).stem if made is None else f"fine-tuned {made:%H:%M:%S} ({made:%Y-%m-%d})"


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


_SESSIONS: weakref.WeakKeyDictionary[Any, ModelSession] = weakref.WeakKeyDictionary()


def session_of(viewer: Viewer) -> ModelSession:
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
        if not info.validated_on_held_out:  # a fine-tune with nothing held out
            return text + f"\nDice {dice:.3f} on its own training images (none held out)"
        parts = [elide(dataset_names(training.get("data", [])), 40)]
        count = len(training.get("val_keys", []))
        if count:
            parts.append("1 image" if count == 1 else f"{count} images")
        said = ", ".join(part for part in parts if part)
        text += f"\nvalidation Dice {dice:.3f}" + (f" ({said})" if said else "")
    return text


def selected_image_and_model(
    layer: Image | None, session: ModelSession, source: str | None = None, viewer: Viewer | None = None, stacks: bool = False
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
