"""Whether the mask rule tells label images from JPEG and anti-aliased masks, on real masks.

    python training/mask_rule_check.py --data ../shared/data --per-set 80

For each binary mask (0/255) of each dataset folder under DATA, up to PER_SET of them, it makes
four versions a user may bring and checks what ``napari_medspike.data.io.is_label_image`` says:
the mask JPEG-compressed at quality 75 and 95 and the mask scaled to 37 % with anti-aliasing
(not label images: read at half their largest value), and its connected regions numbered 1, 2,
... in 8 and 32 bits (label images: read as > 0, which must give back the mask). Versions with
two values or fewer are left out: the rule reads those as > 0 whatever this test says. It prints
the range of ``inside_fraction`` of each version, on which the rule decides (unless at most 0.1 %
of a mask's pixels lie between 0 and half its largest value: then it reads it as > 0).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import measure, transform

from napari_medspike.data.io import inside_fraction, is_label_image, read_mask, to_binary_mask


def versions(mask: np.ndarray) -> list[tuple[str, np.ndarray, bool]]:
    """``(name, array, is a label image)`` for each version of a binary ``mask``."""
    grey = mask.astype(np.uint8) * 255
    out = []
    for quality in (75, 95):
        buffer = io.BytesIO()
        Image.fromarray(grey).save(buffer, "JPEG", quality=quality)
        out.append((f"jpeg{quality}", np.asarray(Image.open(io.BytesIO(buffer.getvalue()))), False))
    smooth = transform.rescale(mask.astype(float), 0.37, anti_aliasing=True)
    out.append(("anti-aliased", (smooth * 255).round().astype(np.uint8), False))
    labels = measure.label(mask)
    out.append(("labels", labels.astype(np.uint16 if labels.max() > 255 else np.uint8), True))
    out.append(("labels-32bit", labels.astype(np.int32), True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--per-set", type=int, default=80)
    args = parser.parse_args()
    checked, wrong, fractions = 0, [], {}
    for folder in sorted(p for p in args.data.iterdir() if (p / "masks").is_dir()):
        for path in sorted((folder / "masks").iterdir())[: args.per_set]:
            mask = read_mask(path)
            if not mask.any():
                continue
            for name, array, label_image in versions(mask):
                if len(np.unique(array)) <= 2:
                    continue
                checked += 1
                fractions.setdefault(name, []).append(inside_fraction(array))  # None: too few low pixels
                if is_label_image(array) != label_image or (label_image and (to_binary_mask(array) != mask).any()):
                    wrong.append(f"{folder.name}/{path.name} {name}")
    print(f"{checked} versions checked, {len(wrong)} misread; inside fraction (label image from 0.2):")
    for name, values in fractions.items():
        known = [v for v in values if v is not None]
        span = f"{min(known):.3f}-{max(known):.3f}" if known else "-"
        print(f"  {name:>13}: {span} ({len(values)} masks; {len(values) - len(known)} with at most 0.1 % of "
              "their pixels below half)")
    for line in wrong:
        print("  misread:", line)


if __name__ == "__main__":
    main()
