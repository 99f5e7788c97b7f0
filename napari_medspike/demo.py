"""The main job, scripted: open a sample, segment it, inspect the spikes, save a correction.

    python -m napari_medspike.demo --screenshot OUT.png     (headless: run under Xvfb)

Everything goes through the dock widgets themselves, as a user would click them; the script
prints the layers it created and exits 0 (1 if a step failed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._sample_data import SAMPLE_KEYS


def wait_for(worker: Any, timeout: float = 600.0) -> None:
    """Process Qt events until a napari worker has finished (the GUI stays live meanwhile)."""
    from qtpy.QtWidgets import QApplication

    if worker is None:
        raise RuntimeError("the widget did not start a job (see the notification above)")
    done = {"flag": False}
    worker.finished.connect(lambda: done.update(flag=True))
    start = time.time()
    while not done["flag"]:
        QApplication.processEvents()
        time.sleep(0.01)
        if time.time() - start > timeout:
            raise TimeoutError("job did not finish in time")


def settle(seconds: float = 0.5) -> None:
    """Process Qt events for ``seconds`` (layouts, redraws and queued signals catch up)."""
    from qtpy.QtWidgets import QApplication

    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def open_plugin(viewer: Any, sample: str = "kvasir", model: str | None = None) -> dict[str, Any]:
    """Dock the three widgets as tabs of one dock column and open a bundled sample; return the
    widgets by name. ``model``: a checkpoint file for Segment (default: its own choice)."""
    from .widgets.layout import DOCK_MIN_WIDTH

    widgets, docks = {}, {}
    for i, name in enumerate(("Segment", "Spike inspector", "Correct and fine-tune")):
        docks[name], widgets[name] = viewer.window.add_plugin_dock_widget("napari-medspike", name, tabify=i > 0)
    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, docks["Segment"].raise_)  # after Qt has settled the tabs: Segment in front
    # a dock column of about a fifth of the window: the canvas keeps more than half of it
    from qtpy.QtCore import Qt

    window = viewer.window._qt_window
    width = max(DOCK_MIN_WIDTH, int(0.17 * window.width()))
    window.resizeDocks([docks["Segment"]], [width], Qt.Orientation.Horizontal)
    viewer.open_sample("napari-medspike", sample)
    segment = widgets["Segment"]
    if model:
        segment.model_choice.value = segment.model_choice.choices[-1]
        segment.checkpoint.value = model
    for w in widgets.values():
        w.reset_choices()
    image_layers = [layer for layer in viewer.layers if layer._type_string == "image"]
    for w in widgets.values():
        w.image.value = image_layers[-1]
    return widgets


def plugin_dock(viewer: Any, name: str) -> Any:
    """The Qt dock that holds this plugin's widget ``name`` (e.g. ``"Spike inspector"``), through
    napari's public ``dock_widgets`` where it has it."""
    title = f"{name} (napari-medspike)"
    widgets = getattr(viewer.window, "dock_widgets", None)
    if widgets is not None and title in widgets:
        inner = widgets[title]
        return getattr(inner, "native", inner).parent()
    return viewer.window._dock_widgets[title]


def main(argv: list[str] | None = None) -> int:
    """Run the scripted main job (see the module's docstring); 0 if every step worked, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshot", type=Path, help="save a PNG of the whole window here")
    parser.add_argument("--sample", default=SAMPLE_KEYS[0], choices=SAMPLE_KEYS)
    parser.add_argument("--model", help="checkpoint file instead of the shipped default model")
    parser.add_argument("--store", type=Path, help="correction folder (default: a temporary one)")
    args = parser.parse_args(argv)

    import napari

    viewer = napari.Viewer(title="napari-medspike demo", show=True)
    try:
        widgets = open_plugin(viewer, args.sample, args.model)
        wait_for(widgets["Segment"].run())
        inspector = widgets["Spike inspector"]
        wait_for(inspector.run())
        tune = widgets["Correct and fine-tune"]
        tune.store_dir.value = str(args.store or Path(tempfile.mkdtemp(prefix="medspike-corrections-")))
        tune.reset_choices()
        masks = [layer for layer in viewer.layers if layer.name.endswith(" mask")]
        truth = [layer for layer in viewer.layers if layer.name.endswith("ground truth")]
        if truth:  # stand in for a user's painting: correct the mask with the expert annotation
            masks[-1].data = truth[-1].data.astype(masks[-1].data.dtype)
        tune.mask.value = masks[-1]
        wait_for(tune.save_correction())  # (it writes in a worker)
        entry = tune.last_saved
        if entry is None:
            raise RuntimeError("saving the correction failed")
        print(f"saved correction {entry.stem} in {tune.store_dir.value}")
        print(inspector.summary.value)
        for layer in viewer.layers:
            print(f"layer {layer.name!r}: {type(layer).__name__} {tuple(layer.data.shape)}")
        if args.screenshot:
            from qtpy.QtWidgets import QApplication

            for _ in range(20):
                QApplication.processEvents()
                time.sleep(0.02)
            viewer.screenshot(str(args.screenshot), canvas_only=False)
            print(f"screenshot: {args.screenshot}")
    except Exception as err:
        print(f"demo failed: {err}", file=sys.stderr)
        viewer.close()
        return 1
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
