"""How long Save correction holds napari's GUI thread, and when the correction is written.

    xvfb-run -a -s "-screen 0 1280x800x24" python benchmarks/save_correction.py [--size 3000 4000]

A Kvasir-SEG photo (from ../shared/data, else a synthetic lesion) scaled to the size given,
its mask painted, saved twice (the second replaces the first) in a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(3000, 4000))
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication
    from skimage.transform import resize

    from napari_medspike.data.io import read_pixels
    from napari_medspike.data.synthetic import synthetic_lesion

    photos = sorted(Path(__file__).resolve().parents[1].parent.glob("shared/data/kvasir-seg/images/*.jpg"))
    picture = read_pixels(photos[0]) if photos else synthetic_lesion((512, 512), seed=0)[0]
    big = resize(picture, args.size, order=1, preserve_range=True).astype(np.uint8)
    viewer = napari.Viewer(show=False)
    _, tune = viewer.window.add_plugin_dock_widget("napari-medspike", "Correct and fine-tune")
    layer = viewer.add_image(big, name="photo", rgb=True)
    mask = viewer.add_labels(np.zeros(args.size, np.uint8), name="photo mask")
    tune.store_dir.value = tempfile.mkdtemp(prefix="medspike-save-")
    tune.reset_choices()
    tune.image.value, tune.mask.value = layer, mask
    for i in range(2):
        mask.data[args.size[0] // 3 + i : 2 * args.size[0] // 3, args.size[1] // 4 : 3 * args.size[1] // 4] = 1
        start = time.perf_counter()
        tune.save_correction()
        on_gui = time.perf_counter() - start
        while tune.save_worker is not None:
            QApplication.processEvents()
            time.sleep(0.002)
        print(f"save {i + 1}: GUI thread {on_gui:.3f} s, written after {time.perf_counter() - start:.2f} s", flush=True)
    viewer.close()


if __name__ == "__main__":
    main()
