"""Wall time of the plugin's jobs through the widgets themselves (run under Xvfb).

    xvfb-run -a python benchmarks/widget_timings.py [--model default] [--json OUT]

Segment on a 256² and a 2048² image (resize and tiled modes), and a 2-epoch fine-tune on 10
stored corrections. Times run from the button press to the layers being added.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import napari

    from napari_medspike.data.synthetic import synthetic_lesion
    from napari_medspike.demo import wait_for

    viewer = napari.Viewer(show=True)
    widgets = {}
    for name in ("Segment", "Correct and fine-tune"):
        _, widgets[name] = viewer.window.add_plugin_dock_widget("napari-medspike", name)
    segment, tune = widgets["Segment"], widgets["Correct and fine-tune"]
    if args.model != "default":
        segment.model_choice.value = segment.model_choice.choices[-1]
        segment.checkpoint.value = args.model
    results = {}
    for size in (256, 2048):
        image, _ = synthetic_lesion((size, size), seed=size)
        layer = viewer.add_image(image, name=f"img{size}", rgb=True)
        segment.reset_choices()
        segment.image.value = layer
        for mode in ("resize", "tiled"):
            segment.mode.value = mode
            t0 = time.perf_counter()
            wait_for(segment.run())
            results[f"segment_{size}_{mode}_s"] = time.perf_counter() - t0
            print(f"segment {size}² {mode}: {results[f'segment_{size}_{mode}_s']:.2f} s", flush=True)
    store = Path(tempfile.mkdtemp(prefix="medspike-timing-"))
    tune.store_dir.value = str(store)
    for i in range(10):
        image, mask = synthetic_lesion((256, 256), seed=100 + i)
        img = viewer.add_image(image, name=f"c{i}", rgb=True)
        lab = viewer.add_labels(mask.astype(np.uint8), name=f"c{i} mask")
        tune.reset_choices()
        tune.image.value, tune.mask.value = img, lab
        wait_for(tune.save_correction())
    tune.epochs.value = 2
    t0 = time.perf_counter()
    wait_for(tune.run())
    results["finetune_2_epochs_10_corrections_s"] = time.perf_counter() - t0
    print(f"fine-tune 2 epochs on 10 corrections: {results['finetune_2_epochs_10_corrections_s']:.1f} s "
          f"({tune.result.value.splitlines()[0]})", flush=True)
    if tune.resegment_worker is not None:
        wait_for(tune.resegment_worker)
    viewer.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
