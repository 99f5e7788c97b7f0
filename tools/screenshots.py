"""Walk the whole loop in a real napari window and save screenshots at two screen sizes.

    xvfb-run -a -s "-screen 0 1920x1080x24" python tools/screenshots.py OUT_DIR [--model CKPT]

Segment the bundled polyp, inspect the spikes (side by side, then overlaid), save a correction,
fine-tune one epoch and segment again; a PNG of the window after each step, at 1280x800 and at
1920x1080. Used to look at what a user sees; the GUI tests check the same things by numbers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", help="checkpoint file or shipped name (default: the default model)")
    parser.add_argument("--sizes", nargs="+", default=["1280x800", "1920x1080"])
    parser.add_argument("--finetune", action="store_true", help="also fine-tune (slow on a CPU)")
    parser.add_argument("--sample", default="kvasir", help="bundled sample to open: kvasir, ph2, busi or glas")
    parser.add_argument("--more-corrections", type=Path, default=None,
                        help="a folder with images/ and masks/: its first --count pairs join the stored "
                        "corrections before fine-tuning (a user who has corrected more images)")
    parser.add_argument("--count", type=int, default=4)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import napari

    from napari_medspike.demo import open_plugin, plugin_dock, settle, wait_for

    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        viewer = napari.Viewer(title="napari-medspike", show=True)
        viewer.window._qt_window.resize(w, h)
        settle()
        widgets = open_plugin(viewer, args.sample)
        segment, inspector, tune = widgets["Segment"], widgets["Spike inspector"], widgets["Correct and fine-tune"]
        if args.model:
            choices = dict((v, v) for v in segment.model_choice.choices)
            if args.model in choices:
                segment.model_choice.value = args.model
            else:
                segment.model_choice.value = segment.model_choice.choices[-1]
                segment.checkpoint.value = args.model
        wait_for(segment.run())
        settle()
        viewer.screenshot(str(args.out / f"{size}-1-segment.png"), canvas_only=False)
        dock = plugin_dock(viewer, "Spike inspector")
        dock.raise_()
        wait_for(inspector.run())
        settle(1.0)
        viewer.screenshot(str(args.out / f"{size}-2-inspect-grid.png"), canvas_only=False)
        inspector.interactions.value = inspector.interactions.choices[1]  # sum, shares, φ
        settle(1.0)
        viewer.screenshot(str(args.out / f"{size}-2b-inspect-grid-decomposed.png"), canvas_only=False)
        inspector.interactions.value = inspector.interactions.choices[0]
        viewer.dims.set_current_step(0, 2)
        inspector.view.value = "overlay"
        settle(1.0)
        viewer.screenshot(str(args.out / f"{size}-3-inspect-overlay-t2.png"), canvas_only=False)
        plugin_dock(viewer, "Correct and fine-tune").raise_()
        tune.store_dir.value = tempfile.mkdtemp(prefix="medspike-shots-")
        tune.reset_choices()
        masks = [layer for layer in viewer.layers if layer.name.endswith(" mask")]
        truth = [layer for layer in viewer.layers if layer.name.endswith("ground truth")]
        if truth:
            masks[-1].data = truth[-1].data.astype(masks[-1].data.dtype)
        tune.mask.value = masks[-1]
        wait_for(tune.save_correction())
        if args.more_corrections:
            from napari_medspike.data.dataset import find_pairs
            from napari_medspike.data.io import read_mask, read_pixels

            for pair in find_pairs(args.more_corrections)[0][: args.count]:
                tune.store.save(read_pixels(pair.image), read_mask(pair.mask), {"source": str(pair.image)})
            tune.refresh()
        settle()
        viewer.screenshot(str(args.out / f"{size}-4-correction.png"), canvas_only=False)
        if args.finetune:
            tune.epochs.value = 1
            wait_for(tune.run(), timeout=3600)
            if tune.resegment_worker is not None:
                wait_for(tune.resegment_worker)
            settle(1.0)
            viewer.screenshot(str(args.out / f"{size}-5-finetuned.png"), canvas_only=False)
        canvas = viewer.window._qt_viewer.canvas.native.width()
        print(f"{size}: canvas {canvas} px of {viewer.window._qt_window.width()} px "
              f"({canvas / viewer.window._qt_window.width():.0%})")
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
