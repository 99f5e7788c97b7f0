"""Resident memory of napari with the plugin over repeated inspections and fine-tunes.

    xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/gui_memory.py [--inspections 5] [--finetunes 3]

Opens the polyp sample, segments it with the ``spiking`` model and inspects it ``--inspections``
times (stages 0-3 in turn), then switches to ``default`` and fine-tunes it ``--finetunes`` times
on three stored corrections (2 epochs each, in a scratch folder). Prints the process's resident
memory (RSS, Linux) after each job: a steady climb, or memory that stays after a one-off job,
is what a user of a long napari session pays.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inspections", type=int, default=5)
    parser.add_argument("--finetunes", type=int, default=3)
    args = parser.parse_args()

    import napari
    import numpy as np

    from napari_medspike.data.corrections import CorrectionStore
    from napari_medspike.data.io import read_mask, read_pixels
    from napari_medspike.demo import open_plugin, plugin_dock, settle, wait_for

    viewer = napari.Viewer(show=True)
    widgets = open_plugin(viewer, "kvasir")
    segment, inspector, tune = widgets["Segment"], widgets["Spike inspector"], widgets["Correct and fine-tune"]
    print(f"napari with the plugin and the sample: {rss_mb():.0f} MB")
    segment.model_choice.value = "spiking"
    wait_for(segment.run())
    plugin_dock(viewer, "Spike inspector").raise_()
    settle(0.5)
    for i in range(args.inspections):
        inspector.stage.value = i % 4
        wait_for(inspector.run())
        settle(0.5)
        print(f"after inspection {i + 1}: {rss_mb():.0f} MB")
    segment.model_choice.value = "default"
    samples = Path(__file__).resolve().parents[1] / "napari_medspike" / "samples"
    image, mask = read_pixels(samples / "kvasir.jpg"), read_mask(samples / "kvasir_mask.png")
    with tempfile.TemporaryDirectory() as scratch:
        store = CorrectionStore(Path(scratch) / "corrections")
        for i in range(3):
            store.save(np.roll(image, 7 * i, axis=1), np.roll(mask, 7 * i, axis=1), {"source": f"shifted {i}"})
        tune.store_dir.value = str(store.root)
        tune.epochs.value = 2
        plugin_dock(viewer, "Correct and fine-tune").raise_()
        settle(0.5)
        for i in range(args.finetunes):
            wait_for(tune.run())
            if tune.resegment_worker is not None:
                wait_for(tune.resegment_worker)
            settle(0.5)
            print(f"after fine-tune {i + 1}: {rss_mb():.0f} MB")
    viewer.close()


if __name__ == "__main__":
    main()
