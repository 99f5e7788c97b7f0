"""``medspike-evaluate``: per-image Dice, IoU, sensitivity and specificity of a checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from ..data.dataset import find_pairs, load_pair
from ..data.io import ImageReadError
from ..common import atomic_write
from ..engine.checkpoint import load_model
from ..engine.metrics import METRICS, binary_metrics, summarise
from ..inference.predictor import pick_device, predict, recommended_flips
from ..runtime import reexec_with_huge_pages


def select_subset(pairs, subset: str, model, split_file: str | None):
    """Restrict pairs to the validation (or training) keys of a split file or of the checkpoint."""
    if subset == "all":
        return pairs
    if split_file:
        split = json.loads(Path(split_file).read_text())
        keys = {row["key"] for row in split[subset]}
    else:
        keys = set((model.checkpoint_info.get("training") or {}).get(f"{subset}_keys") or [])
        if not keys:
            raise SystemExit(f"the checkpoint records no {subset} keys: pass --split RUN/split.json")
    chosen = [p for p in pairs if p.key in keys]
    if not chosen:
        raise SystemExit(f"none of the {len(keys)} {subset} images of the split is in the given folders")
    return chosen


def write_gallery(rows: list[dict], images: dict[str, tuple], path: Path, n: int = 4) -> None:
    """PNG of the best and worst cases: image with ground truth (green) and prediction (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = sorted(rows, key=lambda r: r["dice"])
    picks = [("worst", r) for r in ranked[:n]] + [("best", r) for r in ranked[::-1][:n]]
    fig, axes = plt.subplots(2, n, figsize=(3 * n, 6.4), squeeze=False)
    for ax, (label, row) in zip(axes.flat, picks):
        image, mask, pred = images[row["key"]]
        ax.imshow(image)
        ax.contour(mask, levels=[0.5], colors="lime", linewidths=1.2)
        if pred.any():
            ax.contour(pred, levels=[0.5], colors="red", linewidths=1.2)
        ax.set_title(f"{label}: Dice {row['dice']:.3f}\n{row['key']}", fontsize=8)
        ax.axis("off")
    fig.suptitle("ground truth green, prediction red")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # a real command line (not a call from Python): huge-page malloc
        reexec_with_huge_pages()
    parser = argparse.ArgumentParser(
        prog="medspike-evaluate",
        description="Evaluate a checkpoint on folders of images and masks (per-image metrics at the "
        "original resolution, threshold 0.5; an empty prediction on an empty mask scores 1).",
    )
    parser.add_argument("--checkpoint", default="default", help="'default', a shipped model name or a path")
    parser.add_argument("--data", nargs="+", required=True, help="folder(s) with images/ and masks/")
    parser.add_argument("--json", type=Path, help="write per-image metrics and means here")
    parser.add_argument("--report", type=Path, help="folder for an overlay gallery of the best and worst cases")
    parser.add_argument("--subset", choices=["all", "val", "train"], default="all",
                        help="evaluate only the validation/training images of the checkpoint's split")
    parser.add_argument("--split", help="split.json of a run (instead of the checkpoint's own record)")
    parser.add_argument("--mode", choices=["resize", "tiled"], default="resize")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--flips", choices=["auto", "on", "off"], default="auto",
                        help="test-time augmentation, logits averaged over the four mirror images "
                        "(auto: as the checkpoint recommends)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    model = load_model(args.checkpoint)
    device, note = pick_device(args.device)
    flips = recommended_flips(model) if args.flips == "auto" else args.flips == "on"
    print(f"{model.checkpoint_info['path']} ({model.arch}, flips {'on' if flips else 'off'}); {note}", file=sys.stderr)
    pairs, problems = find_pairs(args.data)
    for p in problems:
        print("skipped:", p, file=sys.stderr)
    pairs = select_subset(pairs, args.subset, model, args.split)
    rows, keep = [], {}
    for pair in tqdm(pairs, desc="evaluating", file=sys.stderr):
        try:
            image, mask = load_pair(pair)
        except ImageReadError as err:
            print("skipped:", err, file=sys.stderr)
            continue
        prob = predict(model, image, mode=args.mode, device=device, flips=flips)
        pred = prob >= args.threshold
        row = {"key": pair.key, "image": str(pair.image), **binary_metrics(pred, mask)}
        rows.append(row)
        if args.report:
            keep[pair.key] = (image, mask, pred)
    if not rows:
        print("no images could be evaluated", file=sys.stderr)
        return 1
    summary = summarise(rows)
    print(f"{'images':>8} " + " ".join(f"{m:>12}" for m in METRICS))
    print(f"{summary['count']:>8} " + " ".join(f"{summary['mean_' + m]:>12.4f}" for m in METRICS))
    if args.json:
        payload = {"checkpoint": model.checkpoint_info["path"], "arch": model.arch, "subset": args.subset,
                   "mode": args.mode, "flips": flips, "threshold": args.threshold, **summary, "images": rows}
        atomic_write(args.json, lambda tmp: tmp.write_text(json.dumps(payload, indent=1)))
    if args.report:
        args.report.mkdir(parents=True, exist_ok=True)
        write_gallery(rows, keep, args.report / "gallery.png")
        print(f"gallery: {args.report / 'gallery.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
