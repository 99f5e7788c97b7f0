"""Time the GUI thread spends showing a segmentation of a 12-megapixel image: the first time (new
layers) and again (the same layers updated, as when segmenting the image again).

    xvfb-run -a python benchmarks/resegment_gui_time.py

Each line is one call of ``add_segmentation_layers`` plus the Qt events it queues (the redraws).
"""

from __future__ import annotations

import time

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_medspike.widgets.masks import add_segmentation_layers


def main() -> None:
    viewer = napari.Viewer(show=True)
    image = viewer.add_image(np.zeros((3000, 4000, 3), np.uint8), rgb=True, name="big", scale=(0.5, 0.5))
    yy, xx = np.mgrid[:3000, :4000]
    prob = np.exp(-((yy - 1500) ** 2 + (xx - 2000) ** 2) / 8e5).astype(np.float32)
    for i in range(3):
        start = time.perf_counter()
        add_segmentation_layers(viewer, image, prob * (0.9 + 0.05 * i), 0.5)
        QApplication.processEvents()
        print(f"{'first' if i == 0 else 'again'}: {time.perf_counter() - start:.2f} s")
    viewer.close()


if __name__ == "__main__":
    main()
