"""Spatial-only gradients (SLTT) against full backpropagation through time, at equal training time.

    python benchmarks/sltt_vs_bptt.py --data ../shared/data/kvasir-seg --minutes 15 --checkpoints 3

The binary spike-driven MedSpikeFormer (T = 4, LIF threshold 0.5: SLTT needs binary spikes), from
one random initialisation, trained on the training images of the default model's seeded split of
Kvasir-SEG (seed 0, 10 % held out) at 128², batch 8, Adam lr 1e-3, with the trainer's
augmentation, loss and step (``StepLoss``, ``Optimisation``), once with BPTT and once with SLTT-K
(backpropagating through K random timesteps of the T, the membrane's path through time detached).
Both runs see the same images in the same order. Each run's clock counts its training steps only
(augmentation, forward, backward, Adam), not data loading or validation, and the process
runs with huge-page ``malloc`` as ``medspike-train`` does; at each checkpoint the
run is validated as the trainer validates (batch-norm statistics re-estimated on 64 training
images; per-image Dice at threshold 0.5 at 128²) on the held-out images. Prints Dice against
training minutes and steps for both.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from napari_medspike.data.dataset import CachedPairs, find_pairs, split_pairs
from napari_medspike.engine.config import TrainConfig
from napari_medspike.engine.trainer import (
    Optimisation,
    StepLoss,
    build_augment,
    recalibrate_norms,
    seed_everything,
    validate,
)
from napari_medspike.models import create_model
from napari_medspike.runtime import reexec_with_huge_pages, release_free_memory


def gradient_name(sltt: int) -> str:
    """How the table names a run's gradient."""
    return f"SLTT-{sltt}" if sltt else "BPTT"


def train_for(cfg: TrainConfig, train_set: CachedPairs, val_loader: torch.utils.data.DataLoader,
              minutes: float, checkpoints: int) -> list[dict[str, float]]:
    """Train a fresh binary MedSpikeFormer (seeded by ``cfg.seed``) for ``minutes`` of step time;
    validate it at ``checkpoints`` evenly spaced times. One row per checkpoint."""
    device = torch.device("cpu")
    seed_everything(cfg.seed)
    model = create_model("medspikeformer", timesteps=4, threshold=0.5)
    model.check_inputs = False
    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    optimisation = Optimisation(cfg, model, cfg.lr, len(loader), distributed=False)
    step_loss = StepLoss(cfg, model, model)
    augment = build_augment()
    marks = [minutes * (i + 1) / checkpoints for i in range(checkpoints)]
    rows: list[dict[str, float]] = []
    trained, steps, running, seen = 0.0, 0, 0.0, 0
    while marks:
        for x, y in loader:
            model.train()
            start = time.perf_counter()
            x, y = augment(x, y)
            with torch.enable_grad():
                loss = step_loss(x, y)
                optimisation.step(loss)
            value = loss.item()
            del loss
            release_free_memory(even_if_tuned=True)  # as the trainer does on a CPU
            trained += time.perf_counter() - start
            steps += 1
            running, seen = running + value * len(x), seen + len(x)
            if trained / 60 >= marks[0]:
                recalibrate_norms(model, train_set, 64, cfg.batch_size, device)
                metrics = validate(model, val_loader, device)
                rows.append({"minutes": trained / 60, "steps": steps, "train_loss": running / seen, **metrics})
                print(f"  {gradient_name(cfg.sltt)}: {trained / 60:.1f} min, {steps} steps, "
                      f"train loss {running / seen:.3f}, val Dice {metrics['val_dice']:.3f}", flush=True)
                running, seen = 0.0, 0
                marks.pop(0)
                if not marks:
                    break
    return rows


def main() -> None:
    reexec_with_huge_pages()  # as medspike-train runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="Kvasir-SEG (images/ and masks/)")
    parser.add_argument("--minutes", type=float, default=15.0, help="training time of each run")
    parser.add_argument("--checkpoints", type=int, default=3, help="validations per run, evenly spaced in time")
    parser.add_argument("--sltt", type=int, default=1, help="K of SLTT-K")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--train-images", type=int, default=0, help="use only this many training images (0: all)")
    parser.add_argument("--val-images", type=int, default=0, help="validate on only this many (0: all)")
    args = parser.parse_args()
    pairs, problems = find_pairs(args.data)
    if not pairs:
        raise SystemExit(f"no image/mask pairs in {args.data}" + (f": {problems[0]}" if problems else ""))
    train_pairs, val_pairs = split_pairs(pairs, 0.1, 0)
    train_pairs = train_pairs[:args.train_images or None]
    val_pairs = val_pairs[:args.val_images or None]
    train_set = CachedPairs(train_pairs, args.size, "resize", random_crops=True)
    val_set = CachedPairs(val_pairs, args.size, "resize", random_crops=False)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=8)
    print(f"{len(train_set)} training, {len(val_set)} validation images at {args.size}², "
          f"{args.minutes:g} min of training steps per run, {torch.get_num_threads()} threads", flush=True)
    results = {}
    for sltt in (0, args.sltt):
        cfg = TrainConfig(data=[str(args.data)], out_dir="unused", arch="medspikeformer", lr=1e-3, batch_size=8,
                          size=args.size, sltt=sltt)
        results[gradient_name(sltt)] = train_for(cfg, train_set, val_loader, args.minutes,
                                                                    args.checkpoints)
    print("\n| gradient | minutes of training | steps | training loss since the last row | val Dice | val IoU |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        for row in rows:
            print(f"| {name} | {row['minutes']:.1f} | {row['steps']} | {row['train_loss']:.3f} | "
                  f"{row['val_dice']:.3f} | {row['val_iou']:.3f} |")


if __name__ == "__main__":
    main()
