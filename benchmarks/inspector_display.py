"""How long the Spike inspector holds napari's GUI thread to show each inspection's maps.

    xvfb-run -a -s "-screen 0 1280x800x24" python benchmarks/inspector_display.py [--model spiking]

Segments the bundled polyp, then inspects six times in a row (stages 0-3 of the values, then
queries and keys) and switches the interactions view and the layout; prints the seconds spent
on the GUI thread each time (the network itself runs in a worker and is not counted) and the
number of layers, which should stay the same from one inspection to the next. "Longest
stretch": the longest the GUI stays busy at once from pressing Inspect until 0.5 s after the
maps arrived, drawing of the canvas and the firing-rate plot included (what a user feels as a
freeze).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="spiking", help="shipped name or checkpoint file (a spiking model)")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_medspike.demo import open_plugin, plugin_dock, settle, wait_for
    from napari_medspike.widgets.inspector import InspectorWidget

    def watched(worker) -> float:
        """Run the event loop until ``worker`` is done and 0.5 s more; the longest single pass."""
        done, longest, end = [], 0.0, None
        worker.finished.connect(lambda: done.append(True))
        while end is None or time.time() < end:
            start = time.perf_counter()
            QApplication.processEvents()
            longest = max(longest, time.perf_counter() - start)
            time.sleep(0.005)
            if done and end is None:
                end = time.time() + 0.5
        return longest

    shown: list[float] = []
    show = InspectorWidget._show

    def timed(self, *a, **k):  # the GUI-thread part of an inspection: its maps put in layers
        start = time.perf_counter()
        show(self, *a, **k)
        shown.append(time.perf_counter() - start)

    InspectorWidget._show = timed
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    widgets = open_plugin(viewer, "kvasir")
    segment, inspector = widgets["Segment"], widgets["Spike inspector"]
    if args.model in segment.model_choice.choices:
        segment.model_choice.value = args.model
    else:
        segment.model_choice.value = segment.model_choice.choices[-1]  # a checkpoint file
        segment.checkpoint.value = args.model
    wait_for(segment.run())
    plugin_dock(viewer, "Spike inspector").raise_()
    settle(0.5)
    for stage, spike in ((0, "v"), (1, "v"), (2, "v"), (3, "v"), (0, "q"), (1, "k")):
        inspector.stage.value, inspector.spikes.value = stage, spike
        longest = watched(inspector.run())
        print(f"inspect stage {stage} {spike}: {shown[-1]:.2f} s on the GUI thread to show the maps, longest "
              f"stretch {longest:.2f} s, {len(viewer.layers)} layers", flush=True)
    for box, value in ((inspector.interactions, 1), (inspector.view, 1), (inspector.view, 0)):
        start = time.perf_counter()
        box.value = box.choices[value]
        print(f"{box.label} -> {box.value}: {time.perf_counter() - start:.2f} s", flush=True)
    viewer.close()


if __name__ == "__main__":
    main()
