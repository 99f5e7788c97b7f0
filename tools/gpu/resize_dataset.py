"""Write a dataset folder resized to the training size exactly as the trainer's cache resizes it
(images bilinear with antialiasing, masks nearest), images as JPEG: a copy small enough to carry
to a machine without the data. The folder keeps the source's name and file stems, so the seeded
split (by key) is the same as on the original.

    python tools/gpu/resize_dataset.py ../shared/data/kvasir-seg .gpu 128
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from napari_medspike.data.dataset import find_pairs, load_pair
from napari_medspike.data.resize import resize_image, resize_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="folder with images/ and masks/")
    parser.add_argument("parent", help="folder to write SOURCE_NAME/images and SOURCE_NAME/masks into")
    parser.add_argument("size", type=int, help="the training size (--size of medspike-train)")
    parser.add_argument("--quality", type=int, default=92, help="JPEG quality of the images")
    args = parser.parse_args()
    pairs, _ = find_pairs(args.source)
    out = Path(args.parent) / Path(args.source).resolve().name
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        image, mask = load_pair(pair)
        img = resize_image(torch.from_numpy(image.transpose(2, 0, 1))[None], args.size)
        msk = resize_mask(torch.from_numpy(mask)[None, None].float(), args.size)
        pixels = (img[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(out / "images" / f"{Path(pair.image).stem}.jpg", quality=args.quality,
                                     subsampling=0)
        Image.fromarray((msk[0, 0].numpy() > 0).astype(np.uint8) * 255).save(
            out / "masks" / f"{Path(pair.mask).stem}.png", optimize=True)
    print(f"{len(pairs)} pairs -> {out}")


if __name__ == "__main__":
    main()
