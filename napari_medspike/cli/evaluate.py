"""``medspike-evaluate``: per-image Dice, IoU, sensitivity and specificity of a checkpoint."""

from __future__ import annotations

import argparse
import errno
import heapq
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.dataset import Pair, find_pairs, load_pair
from ..data.io import ImageReadError, to_rgb_uint8
from ..common import DEBUG_HELP, WriteError, atomic_write, check_writable, run_command
from ..engine.checkpoint import load_model
from ..engine.metrics import METRICS, binary_metrics, paired_difference, summarise
from ..engine.reports import dataset_name
from ..inference.predictor import predict, recommended_flips, resolve_mode
from ..models.base import Segmenter
from ..runtime import PRECISION_HELP, PRECISIONS, bf16_inference, pick_device, reexec_with_huge_pages

#: Images in each row of the gallery (the worst and the best cases).
GALLERY_SIZE = 4
#: Longest side, in pixels, at which the gallery keeps and draws an image (a panel is about
#: 270 pixels wide); larger images are subsampled for the picture only, metrics use them whole.
GALLERY_SIDE = 512


def for_display(image: np.ndarray, mask: np.ndarray, pred: np.ndarray,
                max_side: int = GALLERY_SIDE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An evaluated image, its mask and prediction, subsampled alike to at most ``max_side``
    pixels on the long side, the image as uint8: what a gallery panel needs, in a fraction
    of the memory (drawing full-size images and outlines costs hundreds of MB)."""
    image, mask, pred = np.asarray(image), np.asarray(mask, bool), np.asarray(pred, bool)
    if image.ndim == 3 and image.shape[0] in (3, 4) and image.shape[-1] not in (3, 4):
        image = np.moveaxis(image, 0, -1)  # channel-first TIFF pixels
    step = max(1, -(-max(image.shape[:2]) // max_side))
    if step > 1:
        image, mask, pred = image[::step, ::step], mask[::step, ::step], pred[::step, ::step]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:  # any stored pixels -> RGB 8-bit
        image = to_rgb_uint8(image)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask), np.ascontiguousarray(pred)


def select_subset(pairs: list[Pair], subset: str, model: Segmenter, split_file: str | None) -> list[Pair]:
    """Restrict pairs to the validation (or training) keys of a split file or of the checkpoint.

    Raises ``ValueError`` (naming the split file where one is given) if the keys are unknown or
    none of them is among ``pairs``."""
    if subset == "all":
        return pairs
    if split_file:
        try:
            split = json.loads(Path(split_file).read_text(encoding="utf-8"))
            keys = {row["key"] for row in split[subset]}
        except FileNotFoundError:
            raise FileNotFoundError(f"{split_file}: no such split file") from None
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{split_file}: not a split.json with {subset!r} keys "
                             f"({type(err).__name__}: {err})") from None
        if not keys:  # (a one-image fine-tune holds nothing out)
            raise ValueError(f"{split_file}: its {subset!r} list is empty: no {subset} images to evaluate")
    else:
        training = model.info.training
        keys = set(training.get(f"{subset}_keys") or [])
        val_keys = set(training.get("val_keys") or [])
        if not keys and subset == "train" and val_keys:
            # the checkpoint records its validation images: its training images are the other
            # images of the folders it was trained on
            trained_on = {dataset_name(d) for d in training.get("data", [])}
            keys = {p.key for p in pairs if p.key not in val_keys and p.key.split("/")[0] in trained_on}
            if not keys:
                raise ValueError(f"none of the given folders is one {model.info.path or 'the checkpoint'} was "
                                 f"trained on ({', '.join(sorted(trained_on)) or 'not recorded'})")
        if not keys:
            raise ValueError(f"{model.info.path or 'the checkpoint'} records no {subset} keys: "
                             "pass --split RUN/split.json")
    chosen = [p for p in pairs if p.key in keys]
    if not chosen:
        raise ValueError(f"none of the {len(keys)} {subset} images of the split is in the given folders "
                         f"(the split names them by folder and file name, e.g. {min(keys)}; the folders give "
                         f"e.g. {min(p.key for p in pairs) if pairs else 'none'})")
    return chosen


class GalleryPicker:
    """The ``n`` worst and ``n`` best images by Dice, kept while streaming through a folder.

    Memory is bounded by ``2 n`` images however many are evaluated (two bounded heaps; ties go
    to the earlier image among the worst and the later one among the best, as a stable sort
    of all rows would). :meth:`write` draws exactly the gallery :func:`write_gallery` would
    draw from every row.
    """

    def __init__(self, n: int = GALLERY_SIZE) -> None:
        if n < 1:
            raise ValueError(f"a gallery needs n >= 1 images per row, got {n}")
        self.n = n
        self._worst: list[tuple] = []  # max-heap of the n smallest (dice, index): keys negated
        self._best: list[tuple] = []  # min-heap of the n largest (dice, index)
        self._seen = 0

    def add(self, row: dict, image: np.ndarray, mask: np.ndarray, pred: np.ndarray) -> None:
        """Offer one evaluated image (``row`` has ``key`` and ``dice``); kept only if it is among
        the ``n`` worst or ``n`` best so far."""
        index, dice = self._seen, float(row["dice"])
        self._seen += 1
        worst_in = len(self._worst) < self.n or (dice, index) < (-self._worst[0][0], -self._worst[0][1])
        best_in = len(self._best) < self.n or (dice, index) > self._best[0][:2]
        if not (worst_in or best_in):
            return
        entry = (index, row, for_display(image, mask, pred))
        if worst_in:
            item = (-dice, -index, entry)
            (heapq.heappush if len(self._worst) < self.n else heapq.heapreplace)(self._worst, item)
        if best_in:
            item = (dice, index, entry)
            (heapq.heappush if len(self._best) < self.n else heapq.heapreplace)(self._best, item)

    def __len__(self) -> int:
        """How many images are kept now (at most ``2 n``)."""
        return len({item[2][0] for item in self._worst + self._best})

    def kept(self) -> tuple[list[dict], dict[str, tuple]]:
        """The kept rows (in the order they were added) and their ``(image, mask, pred)`` by key."""
        entries = sorted({item[2][0]: item[2] for item in self._worst + self._best}.values(), key=lambda e: e[0])
        return [e[1] for e in entries], {e[1]["key"]: e[2] for e in entries}

    def write(self, path: Path) -> list[tuple[str, str]]:
        """Draw the gallery (see :func:`write_gallery`); return the ``(row label, key)`` shown."""
        rows, images = self.kept()
        return write_gallery(rows, images, path, n=self.n)


def _outline(ax, mask: np.ndarray, color: str) -> None:
    """Draw the outline of ``mask`` on an ``imshow`` axis, also for masks under 2x2 pixels and
    for regions touching the border (the mask is padded with background first)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return
    h, w = mask.shape
    padded = np.pad(mask.astype(np.float32), 1)
    ax.contour(np.arange(-1, w + 1), np.arange(-1, h + 1), padded, levels=[0.5], colors=color, linewidths=1.2)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def write_gallery(rows: list[dict], images: dict[str, tuple], path: Path, n: int = GALLERY_SIZE) -> list[tuple[str, str]]:
    """PNG of the best and worst cases: image with ground truth (green) and prediction (red).

    Returns the ``(row label, image key)`` pairs shown; no image appears in both rows. Images
    of any size draw, down to 1x1 pixel; large ones are subsampled for the picture
    (:func:`for_display`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = sorted(rows, key=lambda r: r["dice"])
    k = max(1, min(n, len(ranked) // 2))  # on small sets the two rows must not repeat images
    worst, best = ranked[:k], ranked[len(ranked) - k:][::-1] if len(ranked) > 1 else []
    picks = [("worst", r) for r in worst] + [("best", r) for r in best]
    fig, axes = plt.subplots(2 if best else 1, k, figsize=(3 * k, 6.4 if best else 3.4), squeeze=False)
    for ax, (label, row) in zip(axes.flat, picks):
        image, mask, pred = for_display(*images[row["key"]])
        ax.imshow(image)
        _outline(ax, mask, "lime")
        _outline(ax, pred, "red")
        ax.set_title(f"{label}: Dice {row['dice']:.3f}\n{row['key']}", fontsize=8)
        ax.axis("off")
    fig.suptitle("ground truth green, prediction red")
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    finally:
        plt.close(fig)
    return [(label, row["key"]) for label, row in picks]


#: What a row of an evaluation must hold to be compared with (:func:`read_evaluation`).
EVALUATION_KEYS = frozenset({"key", "dice", "iou"})


def read_evaluation(path: Path) -> list[dict]:
    """The per-image rows of a ``medspike-evaluate --json`` file; ``ValueError`` naming the
    file if it is not one."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))["images"]
        lacking = next((EVALUATION_KEYS - set(r) for r in rows if not EVALUATION_KEYS <= set(r)), set())
        if not rows or lacking:
            raise KeyError(", ".join(sorted(lacking)) or "images")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such evaluation file") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a medspike-evaluate --json file ({type(err).__name__}: {err})") from None
    return rows


def _interval_text(low_high: list[float]) -> str:
    """``0.812-0.901``, or ``n/a`` where one image gave no interval."""
    return "%.3f-%.3f" % tuple(low_high) if np.isfinite(low_high).all() else "n/a"


def _nan_as_null(value):
    """``value`` with every NaN float replaced by None (JSON has no NaN; other tools reject it)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_as_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_as_null(v) for v in value]
    return value


def describe_comparison(comparison: dict) -> list[str]:
    """Lines for the terminal: each metric's mean per-image difference and its interval."""
    lines = [f"against {comparison['baseline']} ({comparison['dice']['images']} shared images):"]
    for metric in ("dice", "iou"):
        c = comparison[metric]
        low, high = (np.nan if v is None else v for v in c["interval"])
        if not np.isfinite([low, high]).all():  # one shared image: no interval, no verdict
            lines.append(f"  {metric:>4} {c['mean_difference']:+.4f} (one image: too few for an interval "
                         f"or a verdict)")
            continue
        verdict = "better" if low > 0 else "worse" if high < 0 else "no clear difference"
        lines.append(f"  {metric:>4} {c['mean_difference']:+.4f} (95% CI {low:+.4f} to {high:+.4f}; higher on "
                     f"{c['better']}, lower on {c['worse']} images): {verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``medspike-evaluate``: a checkpoint's figures on a folder at the original resolution; the exit status."""
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
    parser.add_argument("--mode", choices=["auto", "resize", "tiled"], default="auto",
                        help="resize: the whole image at the model's input size; tiled: overlapping tiles at full "
                        "resolution; auto (default): as the model was trained (tiled after random crops)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--flips", choices=["auto", "on", "off"], default="auto",
                        help="test-time augmentation, logits averaged over the four mirror images "
                        "(auto: as the checkpoint recommends)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="auto", help=PRECISION_HELP)
    parser.add_argument("--gallery-size", type=int, default=GALLERY_SIZE, metavar="N",
                        help=f"images in each row of the --report gallery (default {GALLERY_SIZE})")
    parser.add_argument("--compare", type=Path, metavar="JSON",
                        help="an earlier --json of another model or setting on the same images: report the "
                        "per-image difference in Dice and IoU, with 95 %% bootstrap intervals")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    if args.gallery_size < 1:
        parser.error("--gallery-size must be at least 1")
    if not 0.0 < args.threshold < 1.0:  # (a probability cut: at 5, every image scored Dice 0)
        parser.error(f"--threshold must lie in (0, 1), got {args.threshold}")
    if args.split and args.subset == "all":  # (every image was evaluated, training images too, unsaid)
        parser.error("--split picks a run's images: add --subset val (its held-out images) or --subset train")
    return run_command(parser.prog, lambda: _evaluate(args), debug=args.debug)


def _evaluate(args: argparse.Namespace) -> int:
    baseline = read_evaluation(args.compare) if args.compare else None  # a bad file fails before the work
    # where the results go, checked before the work (a file given as a folder failed only after it)
    if args.json:
        if args.json.is_dir():
            raise WriteError(f"cannot write {args.json}: it is a folder; give a file name for --json",
                             args.json, errno.EISDIR)
        check_writable(args.json.parent)
    if args.report:
        check_writable(args.report)
    model = load_model(args.checkpoint)
    device, note = pick_device(args.device)
    flips = recommended_flips(model) if args.flips == "auto" else args.flips == "on"
    mode = resolve_mode(model, args.mode)
    precision = "bf16" if bf16_inference(model, device, args.precision) else "fp32"
    print(f"{model.info.path} ({model.arch}, mode {mode}, flips {'on' if flips else 'off'}, {precision}); {note}",
          file=sys.stderr)
    pairs, problems = find_pairs(args.data)
    for p in problems:
        print("skipped:", p, file=sys.stderr)
    pairs = select_subset(pairs, args.subset, model, args.split)
    if baseline is not None and not {p.key for p in pairs} & {r["key"] for r in baseline}:
        raise ValueError(f"{args.compare} evaluated none of these {len(pairs)} images: nothing to compare "
                         "(evaluate the same folders and --subset)")  # said before the work, not after
    rows = []
    gallery = GalleryPicker(args.gallery_size) if args.report else None
    for pair in tqdm(pairs, desc="evaluating", file=sys.stderr):
        try:
            image, mask = load_pair(pair, as_float=False)  # predict converts, in bounded memory
        except ImageReadError as err:
            tqdm.write(f"skipped: {err}", file=sys.stderr)  # above the progress bar, not through it
            problems.append(str(err))
            continue
        prob = predict(model, image, mode=mode, device=device, flips=flips, precision=precision)
        pred = prob >= args.threshold
        row = {"key": pair.key, "image": str(pair.image), **binary_metrics(pred, mask)}
        rows.append(row)
        if gallery is not None:  # only the best and worst few are kept, not every image
            gallery.add(row, image, mask, pred)
    if not rows:
        print("no images could be evaluated" + ("" if pairs else f" (no image/mask pairs in "
              f"{', '.join(map(str, args.data))}{' for this subset' if args.subset != 'all' else ''})"),
              file=sys.stderr)
        return 1
    summary = summarise(rows)
    print(f"{'images':>8} " + " ".join(f"{m:>12}" for m in METRICS))
    print(f"{summary['count']:>8} " + " ".join(f"{summary['mean_' + m]:>12.4f}" for m in METRICS))
    print(f"{'95% CI':>8} " + " ".join(f"{_interval_text(summary['ci95_' + m]):>12}" for m in METRICS))
    comparison = None
    if baseline is not None:
        comparison = {"baseline": str(args.compare),
                      **{m: paired_difference(rows, baseline, m) for m in ("dice", "iou")}}
        for line in describe_comparison(comparison):
            print(line)
    if args.json:
        # what was measured, on its own: the folders, the split and what was left out
        payload = {"checkpoint": model.info.path, "arch": model.arch, "data": [str(d) for d in args.data],
                   "subset": args.subset, **({"split": str(args.split)} if args.split else {}),
                   "skipped": list(problems),
                   "mode": mode, "flips": flips, "precision": precision, "threshold": args.threshold,
                   **summary, **({"comparison": comparison} if comparison else {}), "images": rows}
        text = json.dumps(_nan_as_null(payload), indent=1, allow_nan=False)
        atomic_write(args.json, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if gallery is not None:
        args.report.mkdir(parents=True, exist_ok=True)
        gallery.write(args.report / "gallery.png")
        print(f"gallery: {args.report / 'gallery.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
