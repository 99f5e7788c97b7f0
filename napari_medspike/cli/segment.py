"""``medspike-segment``: segment every image of a folder; masks, optional probabilities, measurements."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..common import atomic_write, run_command
from ..runtime import reexec_with_huge_pages


def _images(folder: Path) -> list[Path]:
    from ..data.io import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def _segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.corrections import png_bytes
    from ..data.io import ImageReadError, read_pixels
    from ..engine.checkpoint import load_model
    from ..inference.measure import measure_regions, write_csv
    from ..inference.predictor import pick_device, predict

    images = _images(args.input)
    model = load_model(args.model)
    device, note = pick_device(args.device)
    print(f"{len(images)} images, model {args.model}, {note}", file=sys.stderr)
    flips = {"auto": None, "on": True, "off": False}[args.flips]
    (args.out / "masks").mkdir(parents=True, exist_ok=True)
    if args.probabilities:
        (args.out / "probabilities").mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    for path in tqdm(images, unit="image", file=sys.stderr):
        try:
            image = read_pixels(path)  # predict converts it, in bounded memory
        except ImageReadError as err:
            failed.append(str(err))
            continue
        prob = predict(model, image, mode=args.mode, device=device, flips=flips)
        mask = prob >= args.threshold
        encoded = png_bytes(mask.astype(np.uint8) * 255)
        atomic_write(args.out / "masks" / f"{path.stem}.png", lambda tmp: tmp.write_bytes(encoded))
        if args.probabilities:
            import tifffile

            atomic_write(args.out / "probabilities" / f"{path.stem}.tif",
                         lambda tmp: tifffile.imwrite(tmp, prob.astype(np.float32)))
        rows += measure_regions(mask, prob, image=path.name)
    write_csv(rows, args.out / "measurements.csv")
    for problem in failed:
        print(f"skipped: {problem}", file=sys.stderr)
    print(f"{len(images) - len(failed)} masks in {args.out / 'masks'}, {len(rows)} regions in "
          f"{args.out / 'measurements.csv'}", file=sys.stderr)
    return 1 if failed and len(failed) == len(images) else 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # a real command line (not a call from Python): huge-page malloc
        reexec_with_huge_pages()
    parser = argparse.ArgumentParser(
        prog="medspike-segment",
        description="Segment every image in a folder: writes OUT/masks/<name>.png (0/255), optionally "
        "OUT/probabilities/<name>.tif, and OUT/measurements.csv (one row per connected region: area "
        "in pixels, mean probability, centroid).",
    )
    parser.add_argument("input", type=Path, help="folder of images (png, jpg, bmp, tif)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--model", default="default", help="shipped model name or checkpoint path")
    parser.add_argument("--mode", choices=["resize", "tiled"], default="resize")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--flips", choices=["auto", "on", "off"], default="auto",
                        help="mirror test-time augmentation (auto: as the model recommends)")
    parser.add_argument("--probabilities", action="store_true", help="also write float32 probability maps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    args = parser.parse_args(argv)
    if not 0.0 < args.threshold < 1.0:
        parser.error(f"--threshold must lie in (0, 1), got {args.threshold}")
    return run_command(parser.prog, lambda: _segment(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
