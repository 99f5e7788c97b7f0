"""How far Segment's fast paths are from the plain path on real images, per shipped model.

    python benchmarks/fast_path_agreement.py --data ../shared/data [--models default spiking] [--images 12]

Each model segments the first ``--images`` of its own validation images (recorded in its
checkpoint) at the original resolution, float32, without mirror TTA, once with the fast paths
and once without (``fastpath.disabled()``). Prints the share of pixels whose mask differs (of
all pixels, and of the pixels either mask marks) and the largest difference in probability. The two paths are the same arithmetic in another order:
the differences are floating-point rounding, which can flip a spike near its threshold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_medspike.cli.evaluate import select_subset
from napari_medspike.data.dataset import dataset_name, find_pairs
from napari_medspike.data.io import read_image
from napari_medspike.engine.checkpoint import list_models, load_model
from napari_medspike.inference.predictor import predict
from napari_medspike.models import fastpath
from napari_medspike.models.base import Segmenter


def validation_images(model: Segmenter, root: Path, count: int) -> list[Path]:
    """The first ``count`` of ``model``'s validation images found under ``root`` (in the folders it
    was trained on, by name, as ``medspike-evaluate --subset val`` finds them)."""
    folders = [root / dataset_name(d) for d in model.info.training.get("data", [])]
    folders = [folder for folder in folders if folder.is_dir()]
    if not folders:
        return []
    pairs, _ = find_pairs(folders)
    return [pair.image for pair in select_subset(pairs, "val", model, None)[:count]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding the datasets (kvasir-seg, ph2, ...)")
    parser.add_argument("--models", nargs="+", default=list(list_models()))
    parser.add_argument("--images", type=int, default=12)
    args = parser.parse_args()
    for name in args.models:
        model = load_model(name)
        paths = validation_images(model, args.data, args.images)
        if not paths:
            print(f"{name}: none of its validation images under {args.data}")
            continue
        differing = total = marked = 0
        largest = 0.0
        for path in paths:
            image = read_image(path)
            fast = np.asarray(predict(model, image, flips=False, precision="fp32"))
            with fastpath.disabled():
                plain = np.asarray(predict(model, image, flips=False, precision="fp32"))
            differing += int(((fast >= 0.5) != (plain >= 0.5)).sum())
            marked += int(((fast >= 0.5) | (plain >= 0.5)).sum())
            total += fast.size
            largest = max(largest, float(np.abs(fast - plain).max()))
        print(f"{name:20s} {len(paths):3d} images  mask pixels that differ {100 * differing / total:.3f} % "
              f"({100 * differing / max(marked, 1):.2f} % of those either mask marks)  "
              f"largest probability difference {largest:.3f}")


if __name__ == "__main__":
    main()
