"""A second round of corrections on a fine-tuned (routed) model, of the *first* kind of image.

The default is fine-tuned on k corrected images of a new kind (PH2 dermoscopy): the result keeps
the default for polyps behind a gate. Then that model is fine-tuned again on k corrected polyp
images (Kvasir-SEG training images, never its validation images). Both models are evaluated on
the new kind's other images and on the default's own validation images, at their original
resolution with the recommended inference setting.

    python benchmarks/second_round.py --new data/ph2 --first data/kvasir-seg [--plain-lr 0 1e-4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from adaptation import corrections_folder, evaluate
from napari_medspike.cli.evaluate import select_subset
from napari_medspike.data.dataset import find_pairs
from napari_medspike.engine.checkpoint import load_model
from napari_medspike.engine.finetune import finetune


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--new", required=True, help="a dataset of another kind than the model's")
    parser.add_argument("--first", required=True, help="the model's training dataset")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-max", type=int, default=60, help="new-kind images to evaluate on (0: all)")
    parser.add_argument("--plain-lr", type=float, nargs="*", default=[], metavar="LR",
                        help="also fine-tune the model itself (not routed) on the second round's corrections at "
                             "these learning rates (0: the default) and evaluate it on the first kind")
    args = parser.parse_args(argv)
    base = load_model(args.model)
    rng = np.random.default_rng(args.seed)
    new = find_pairs(args.new)[0]
    new = [new[i] for i in rng.permutation(len(new))]
    held = new[25:][: args.eval_max or None]  # as benchmarks/adaptation.py: never a correction
    first_all = find_pairs(args.first)[0]
    val = select_subset(first_all, "val", base, None)
    val_keys = {p.key for p in val}
    train = [p for p in first_all if p.key not in val_keys]
    second = [train[i] for i in rng.permutation(len(train))[: args.k]]
    rows = {"start": (evaluate(base, held), evaluate(base, val))}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        one = finetune(args.model, corrections_folder(new[: args.k], tmp / "a"), tmp / "one.safetensors", seed=args.seed)
        t1 = time.perf_counter()
        two = finetune(one.checkpoint, corrections_folder(second, tmp / "b"), tmp / "two.safetensors", seed=args.seed)
        t2 = time.perf_counter()
        for name, result, seconds in (("round 1", one, t1 - t0), ("round 2", two, t2 - t1)):
            model = load_model(result.checkpoint)
            rows[name] = (evaluate(model, held), evaluate(model, val))
            print(f"{name}: {seconds:.0f} s, {model.arch}; {result.describe()}")
        for lr in args.plain_lr:
            plain = finetune(args.model, corrections_folder(second, tmp / f"plain{lr}"), tmp / f"plain{lr}.safetensors",
                             lr=lr, seed=args.seed)
            print(f"{args.model} alone + the second round's corrections, lr {lr or 'default'}: {plain.describe()}; "
                  f"{Path(args.first).name} validation Dice {evaluate(load_model(plain.checkpoint), val)['dice']:.3f}")
    print(f"| model | {Path(args.new).name} Dice ({len(held)} images) | {Path(args.first).name} validation Dice ({len(val)}) |")
    print("|---|---:|---:|")
    for name, (a, b) in rows.items():
        print(f"| {name} | {a['dice']:.3f} | {b['dice']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
