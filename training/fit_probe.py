"""How fast does a model fit a handful of training images? A quick probe of a training recipe.

    python training/fit_probe.py --arch medspikeformer --config '{"timesteps": 4, "threshold": 0.5}' \
        --lr 3e-3 --data data/kvasir-seg

Takes the first ``--images`` training images of the seeded split (never a validation image),
resized to ``--size``, and trains on all of them as one batch (no augmentation) for ``--steps``
Adam steps. Every ``--every`` steps it prints the segmentation loss and the Dice of the
training-mode output on those images. It says nothing about generalisation; it separates "the
network cannot learn this quickly" from "the recipe is slow" in minutes instead of epochs (at
64², 8 images: about 40 s for 80 steps of the ANN twin and 3 min of the SNN on 2 CPU cores).
What a few images show need not hold for many: training/README.md, "Fit probe".
``--bn-init SCALE,SHIFT`` starts every batch norm at that scale and shift.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from napari_medspike.data.dataset import CachedPairs, find_pairs, split_pairs
from napari_medspike.engine.checkpoint import load_model
from napari_medspike.engine.metrics import per_image_metrics
from napari_medspike.models import create_model, segmentation_loss


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with images/ and masks/")
    parser.add_argument("--arch", default="medspikeformer")
    parser.add_argument("--config", default="{}", help="model options as JSON")
    parser.add_argument("--init", default=None, help="start from this checkpoint or shipped model instead of scratch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (0: the shipped models')")
    parser.add_argument("--bn-init", default=None, help="SCALE,SHIFT for every batch norm at the start")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    pairs, _ = find_pairs([args.data])
    train, _ = split_pairs(pairs, 0.1, args.seed)
    data = CachedPairs(train[: args.images], size=args.size)
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.stack([data[i][1] for i in range(len(data))])
    model = load_model(args.init) if args.init else create_model(args.arch, **json.loads(args.config))
    if args.bn_init:
        scale, shift = (float(v) for v in args.bn_init.split(","))
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                torch.nn.init.constant_(module.weight, scale)
                torch.nn.init.constant_(module.bias, shift)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start, rows = time.perf_counter(), []
    for step in range(args.steps + 1):
        logits = model(x)
        loss = segmentation_loss(logits.float(), y)
        if step % args.every == 0 or step == args.steps:
            dice = per_image_metrics(logits.detach() > 0, y > 0.5)["dice"]
            rows.append({"step": step, "loss": round(loss.item(), 3), "dice": round(float(dice.mean()), 3)})
            print(json.dumps(rows[-1]), flush=True)
        if step == args.steps:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()  # the next forward resets the neurons
    print(json.dumps({"arch": model.arch, "lr": args.lr, "init": args.init, "seconds": round(time.perf_counter() - start),
                      "final": rows[-1]}))


if __name__ == "__main__":
    main()
