"""How fast the correct-and-fine-tune loop adapts a shipped model to a dataset it never saw.

For each case (a shipped model and a dataset folder with images/ and masks/), the images are
shuffled with a seed; the first k of them (k = 5, 10, 25, nested) play the user's corrections, and
the model is fine-tuned on them with the defaults that the plugin's fine-tune dock and
``medspike-finetune`` use. Every fine-tuned model (and the model before fine-tuning, k = 0) is
evaluated on the same images after the first 25 (never on a correction), at their original
resolution with the model's recommended inference setting. With ``--forgetting DATA``, the
fine-tuned models are also evaluated on that dataset's validation images of the shipped model
(the keys its checkpoint records), to see what they forgot.

    python benchmarks/adaptation.py --data data/ph2 data/busi [--model default] [--k 5 10 25]
        [--forgetting data/kvasir-seg] [--json adaptation.json]

``--epochs``/``--lr``/``--minutes``/``--replay``/``--replay-samples`` override the defaults, to
compare settings. Fine-tune wall time is measured on the machine it runs on; run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_medspike.cli.evaluate import select_subset
from napari_medspike.data.dataset import find_pairs
from napari_medspike.data.io import read_mask, read_pixels
from napari_medspike.engine.checkpoint import load_model
from napari_medspike.engine.config import FINETUNE
from napari_medspike.engine.finetune import finetune
from napari_medspike.engine.metrics import binary_metrics
from napari_medspike.inference.predictor import predict
from napari_medspike.models.routed import RoutedSegmenter


def evaluate(model, pairs) -> dict[str, float]:
    """Mean per-image Dice and IoU at original resolution, recommended flips, threshold 0.5."""
    dice, iou = [], []
    for pair in pairs:
        prob = predict(model, read_pixels(pair.image), flips=None)
        m = binary_metrics(prob >= 0.5, read_mask(pair.mask))
        dice.append(m["dice"])
        iou.append(m["iou"])
    return {"dice": float(np.mean(dice)), "iou": float(np.mean(iou)), "n": len(pairs)}


def interpolated(start, tuned, alpha: float):
    """A copy of ``tuned`` whose floating-point weights and buffers are
    ``start + alpha * (tuned - start)`` (weight-space ensembling, WiSE-FT)."""
    if isinstance(tuned, RoutedSegmenter):  # interpolate its fine-tuned expert
        tuned = tuned.experts[1]
    mixed = copy.deepcopy(tuned)
    begin = start.state_dict()
    mixed.load_state_dict({k: torch.lerp(begin[k].to(v.dtype), v, alpha) if v.is_floating_point() else v
                           for k, v in tuned.state_dict().items()})
    return mixed


def corrections_folder(pairs, root: Path) -> Path:
    """A corrections folder (images/ + masks/) of links to ``pairs``."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for p in pairs:
        (root / "images" / p.image.name).symlink_to(p.image.resolve())
        (root / "masks" / p.mask.name).symlink_to(p.mask.resolve())
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", nargs="+", required=True, help="dataset folders the model was not trained on")
    parser.add_argument("--k", nargs="+", type=int, default=[5, 10, 25])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-max", type=int, default=0, help="evaluate on at most this many images (0: all)")
    parser.add_argument("--forgetting", default=None, help="the model's training dataset: its validation Dice too")
    parser.add_argument("--epochs", type=int, default=FINETUNE.epochs, help="0: auto (the default)")
    parser.add_argument("--lr", type=float, default=FINETUNE.lr)
    parser.add_argument("--minutes", type=float, default=FINETUNE.minutes, help="time limit (0: none)")
    parser.add_argument("--replay", default=None, help="replay folder (e.g. the model's training data)")
    parser.add_argument("--replay-samples", type=int, default=0)
    parser.add_argument("--freeze-norm-stats", action=argparse.BooleanOptionalAction, default=FINETUNE.freeze_norm_stats)
    parser.add_argument("--anchor-weight", type=float, default=FINETUNE.anchor_weight)
    parser.add_argument("--route", action=argparse.BooleanOptionalAction, default=FINETUNE.route,
                        help="keep the starting model for images like its training data (the default); "
                        "--no-route: the fine-tuned network alone")
    parser.add_argument("--interpolate", type=float, nargs="+", default=[], metavar="ALPHA",
                        help="also evaluate each fine-tuned model's weights interpolated with the start's "
                             "(start + ALPHA x (tuned - start), WiSE-FT; 1: the tuned model)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    settings = {"epochs": args.epochs or "auto", "lr": args.lr, "minutes": args.minutes,
                "replay": args.replay, "replay_samples": args.replay_samples,
                "freeze_norm_stats": args.freeze_norm_stats, "anchor_weight": args.anchor_weight,
                "interpolate": args.interpolate}
    base = load_model(args.model)
    # the model's own validation images, as its checkpoint records them
    forget = select_subset(find_pairs(args.forgetting)[0], "val", base, None) if args.forgetting else []
    report = {"model": args.model, "settings": settings, "machine": f"{platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}", "cases": {}}
    before_forget = evaluate(base, forget) if forget else None
    replay_dir = tempfile.TemporaryDirectory()
    replay = args.replay
    if replay:  # never replay an image that the forgetting figure is measured on
        forget_keys = {p.key for p in forget}
        replay_pairs = [p for p in find_pairs(replay)[0] if p.key not in forget_keys]
        replay = str(corrections_folder(replay_pairs, Path(replay_dir.name) / "replay"))
        print(f"replay: {len(replay_pairs)} pairs of {args.replay} (its validation images left out)")
    if before_forget:
        print(f"{args.model} on its own validation images ({before_forget['n']}): Dice {before_forget['dice']:.3f}")
    for data in args.data:
        pairs, _ = find_pairs(data)
        order = np.random.default_rng(args.seed).permutation(len(pairs))
        pairs = [pairs[i] for i in order]
        top = max(args.k)
        held = pairs[top:]
        if args.eval_max:
            held = held[: args.eval_max]
        name = Path(data).name
        rows = [{"k": 0, **evaluate(base, held), "seconds": 0.0, **({"forgetting": before_forget} if forget else {})}]
        print(f"{name}: k=0 Dice {rows[0]['dice']:.3f} on {len(held)} images", flush=True)
        for k in sorted(args.k):
            with tempfile.TemporaryDirectory() as tmp:
                folder = corrections_folder(pairs[:k], Path(tmp) / "corrections")
                start = time.perf_counter()
                result = finetune(args.model, folder, Path(tmp) / "tuned.safetensors", epochs=args.epochs,
                                  lr=args.lr, minutes=args.minutes, replay=replay, replay_samples=args.replay_samples,
                                  freeze_norm_stats=args.freeze_norm_stats,
                                  anchor_weight=args.anchor_weight, route=args.route, seed=args.seed)
                seconds = time.perf_counter() - start
                tuned = load_model(result.checkpoint)
            row = {"k": k, **evaluate(tuned, held), "seconds": seconds, "epochs": len(result.history),
                   "held_out_dice": [result.dice_before, result.dice_after]}
            if forget:
                row["forgetting"] = evaluate(tuned, forget)
            for alpha in args.interpolate:
                mixed = interpolated(base, tuned, alpha)
                figures = {"dice": evaluate(mixed, held)["dice"]}
                if forget:
                    figures["forgetting"] = evaluate(mixed, forget)
                row.setdefault("interpolated", {})[alpha] = figures
                own = f", own validation {figures['forgetting']['dice']:.3f}" if forget else ""
                print(f"{name}: k={k} interpolated at {alpha}: Dice {figures['dice']:.3f}{own}", flush=True)
            rows.append(row)
            extra = f", own validation {row['forgetting']['dice']:.3f}" if forget else ""
            print(f"{name}: k={k} Dice {row['dice']:.3f} (fine-tune {seconds:.0f} s, {row['epochs']} epochs){extra}",
                  flush=True)
        report["cases"][name] = rows
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print("| data | k | Dice | IoU | fine-tune s | epochs |" + (" own val Dice |" if forget else ""))
    print("|---|---|---|---|---|---|" + ("---|" if forget else ""))
    for name, rows in report["cases"].items():
        for r in rows:
            tail = f" {r['forgetting']['dice']:.3f} |" if forget else ""
            print(f"| {name} | {r['k']} | {r['dice']:.3f} | {r['iou']:.3f} | {r['seconds']:.0f} | {r.get('epochs', 0)} |"
                  f"{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
