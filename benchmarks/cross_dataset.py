"""How the shipped models carry over to datasets they were never trained on.

    python benchmarks/cross_dataset.py --data data/kvasir-seg data/ph2 data/busi [--models default ...]

Each shipped model is evaluated on every dataset folder whose name is not among the datasets it
(or the model it was fine-tuned from) was trained on: all of that dataset's images, at their
original resolution, with the model's recommended mirror TTA, threshold 0.5, mean per-image
Dice and IoU. Prints a markdown table with, beside each figure, the Dice of a mask that marks the
whole image (the trivial answer a model must beat to have found anything: on a dataset whose
objects fill most of each image it is high).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from napari_medspike.data.dataset import Pair, find_pairs
from napari_medspike.data.io import read_mask
from napari_medspike.engine.checkpoint import list_models, load_model, read_metadata, resolve_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from adaptation import evaluate  # noqa: E402


def seen_datasets(name: str) -> set[str]:
    """Dataset folder names a shipped model (and what it was initialised from) trained on."""
    seen: set[str] = set()
    source: str | None = name
    while source:
        try:
            training = read_metadata(resolve_checkpoint(source)).get("training", {})
        except Exception:
            break
        seen |= {Path(str(d).rstrip("/")).name for d in training.get("data", [])}
        parent = training.get("init_from")
        source = None if not parent or Path(str(parent)).stem == Path(str(source)).stem else Path(str(parent)).stem
    return seen


def whole_image_dice(pairs: list[Pair]) -> float:
    """Mean per-image Dice of masks that mark every pixel (an empty true mask scores 0)."""
    scores = []
    for pair in pairs:
        share = float((read_mask(pair.mask) > 0).mean())
        scores.append(2 * share / (1 + share))
    return float(np.mean(scores)) if scores else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--models", nargs="+", default=None, help="shipped model names (default: all but 'spiking')")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    names = args.models or [m for m in list_models() if m != "spiking"]
    rows = []
    whole_image = {}  # per dataset: the same for every model
    for name in names:
        seen = seen_datasets(name)
        model = load_model(name)
        for folder in args.data:
            dataset = Path(folder).name
            if dataset in seen:
                continue
            pairs, _ = find_pairs(folder)
            result = evaluate(model, pairs)
            if dataset not in whole_image:
                whole_image[dataset] = whole_image_dice(pairs)
            rows.append({"model": name, "trained_on": sorted(seen), "dataset": dataset, **result,
                         "whole_image_dice": whole_image[dataset]})
            print(f"{name} (trained on {', '.join(sorted(seen))}) on {dataset}: Dice {result['dice']:.3f} "
                  f"IoU {result['iou']:.3f} ({result['n']} images)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print("| model | trained on | never-seen dataset | images | Dice | IoU | Dice of a whole-image mask |\n"
          "|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {', '.join(r['trained_on'])} | {r['dataset']} | {r['n']} | {r['dice']:.3f} | "
              f"{r['iou']:.3f} | {r['whole_image_dice']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
