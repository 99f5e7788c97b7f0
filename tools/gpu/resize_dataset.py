"""Write a dataset folder resized to the training size exactly as the trainer's cache resizes it
(images bilinear with antialiasing, masks nearest), images as JPEG: a copy small enough to carry
to a machine without the data. The folder keeps the source's name and file stems, so the seeded
split (by key) is the same as on the original.

    python tools/gpu/resize_dataset.py ../shared/data/kvasir-seg .gpu 128
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from napari_medspike.data.dataset import CachedPairs, find_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="folder with images/ and masks/")
    parser.add_argument("parent", help="folder to write SOURCE_NAME/images and SOURCE_NAME/masks into")
    parser.add_argument("size", type=int, help="the training size (--size of medspike-train)")
    parser.add_argument("--quality", type=int, default=92, help="JPEG quality of the images")
    args = parser.parse_args()
    pairs, _ = find_pairs(args.source)
    cached = CachedPairs(pairs, size=args.size, mode="resize")  # the trainer's own resizing
    out = Path(args.parent) / Path(args.source).resolve().name
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for pair, image, mask in zip(cached.pairs, cached.images, cached.masks):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(
            out / "images" / f"{Path(pair.image).stem}.jpg", quality=args.quality, subsampling=0)
        Image.fromarray(mask[0].numpy() * 255).save(out / "masks" / f"{Path(pair.mask).stem}.png", optimize=True)
    print(f"{len(cached.pairs)} pairs -> {out}" + (f" ({len(cached.skipped)} skipped)" if cached.skipped else ""))


if __name__ == "__main__":
    main()
