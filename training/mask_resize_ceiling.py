"""What resizing masks to the training size costs: Dice of each mask resized to SIZE and back to
its own size (bilinearly, as predictions are), against itself, by three ways of shrinking it.

    python training/mask_resize_ceiling.py --data ../shared/data/kvasir-seg --size 128 --model default

A model trained on such masks cannot beat this ceiling at the original resolution. ``nearest-exact``
(nearest neighbour sampled at pixel centres) is how the trainer resizes masks by default,
``nearest-top-left`` is PyTorch's ``"nearest"``, which the trainer used before (each box's top-left
pixel: masks half a pixel off their images), ``area`` is ``--soft-masks`` (each pixel holds the
fraction of foreground it covers).
With ``--model`` the images are the validation images that model records; otherwise all.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from napari_medspike.cli.evaluate import select_subset
from napari_medspike.data.dataset import find_pairs
from napari_medspike.data.io import read_mask
from napari_medspike.data.resize import resize_image, resize_map, resize_mask
from napari_medspike.engine.checkpoint import load_model
from napari_medspike.engine.metrics import binary_metrics

SHRINK = {
    "nearest-top-left": lambda m, size: F.interpolate(m, size=(size, size), mode="nearest"),
    "nearest-exact": resize_mask,
    "area": resize_image,
}


def round_trip_dice(mask: np.ndarray, size: int) -> dict[str, float]:
    """Dice of ``mask`` against itself shrunk to ``size x size`` each way and grown back."""
    m = torch.from_numpy(np.asarray(mask, bool).astype(np.float32))[None, None]
    return {name: binary_metrics(resize_map(shrink(m, size), m.shape[-2:])[0, 0].numpy() >= 0.5, mask)["dice"]
            for name, shrink in SHRINK.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--model", help="a checkpoint or shipped model: use its validation images")
    args = parser.parse_args()
    pairs = find_pairs([args.data])[0]
    if args.model:
        pairs = select_subset(pairs, "val", load_model(args.model), None)
    rows = [round_trip_dice(read_mask(p.mask), args.size) for p in pairs]
    print(f"{len(rows)} masks, shrunk to {args.size}² and grown back:")
    for name in SHRINK:
        d = np.array([r[name] for r in rows])
        print(f"  {name:14} Dice mean {d.mean():.4f}, lowest {d.min():.4f}")


if __name__ == "__main__":
    main()
