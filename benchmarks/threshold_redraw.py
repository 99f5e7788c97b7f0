"""How long moving the Segment dock's threshold holds napari's GUI thread on a large mask.

    xvfb-run -a -s "-screen 0 1280x800x24" python benchmarks/threshold_redraw.py [--size 3000 4000]

A smooth synthetic probability map of the size given (a 12-megapixel photo by default) becomes
the dock's last result; the threshold then moves three times. Each move redraws the mask from the
probabilities on the GUI thread (napari draws a Labels outline: most of the time) and measures it
again in a worker.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(3000, 4000))
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_medspike.widgets.masks import add_segmentation_layers

    h, w = args.size
    yy, xx = np.mgrid[:h, :w]
    prob = np.clip(1 - np.hypot(yy - h / 2, xx - w / 2) / (0.4 * max(h, w)), 0, 1).astype(np.float32)
    viewer = napari.Viewer(show=False)
    _, segment = viewer.window.add_plugin_dock_widget("napari-medspike", "Segment")
    image = viewer.add_image(np.zeros((h, w), np.uint8), name="photo")
    _, segment._mask_layer = add_segmentation_layers(viewer, image, prob, 0.5)
    segment._measure(image, prob, [])

    for threshold in (0.3, 0.6, 0.45):
        with segment.threshold.changed.blocked():  # (the dock's own 200 ms pause is left out)
            segment.threshold.value = threshold
        shown = segment.measurements
        start = time.perf_counter()
        segment.apply_threshold()
        on_gui = time.perf_counter() - start
        while segment.measurements is shown:  # the table is filled again when the worker returns
            QApplication.processEvents()
            time.sleep(0.005)
        print(f"threshold {threshold}: GUI thread {on_gui:.2f} s, measured after {time.perf_counter() - start:.2f} s",
              flush=True)
    viewer.close()


if __name__ == "__main__":
    main()
