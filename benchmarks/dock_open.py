"""How long opening each of the plugin's docks holds napari's GUI thread.

    xvfb-run -a -s "-screen 0 1280x800x24" python benchmarks/dock_open.py

The three docks in the order a user meets them; the first pays for importing torch and the
models, each later one only for what it adds.
"""

from __future__ import annotations

import time


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    for _ in range(10):
        QApplication.processEvents()
    for name in ("Segment", "Correct and fine-tune", "Spike inspector"):
        start = time.perf_counter()
        viewer.window.add_plugin_dock_widget("napari-medspike", name)
        print(f"{name}: {time.perf_counter() - start:.2f} s", flush=True)
    viewer.close()


if __name__ == "__main__":
    main()
