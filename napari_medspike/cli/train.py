"""``medspike-train`` and ``medspike-finetune``: train or fine-tune a segmenter on image folders."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

from ..common import DEBUG_HELP, run_command
from ..engine.config import DEFAULT_LR_TEXT, FINETUNE, TrainConfig, TrainEvent, TrainProgress
from ..engine.finetune import finetune, scratch_run_folder
from ..engine.schedule import SCHEDULES
from ..engine.trainer import PRECISIONS, train
from ..models import TRAINABLE_ARCHITECTURES
from ..runtime import reexec_with_huge_pages
from .options import add_config_options, config_from_options

EPILOG = """
A DATA folder holds images/ and masks/ with matching file stems (png, jpg, bmp, tif; in a mask,
0 is background; a two-valued mask such as 0/255 or 0/1 is foreground wherever it is not 0, so is
a label image with objects numbered 1, 2, ...; a mask with more values otherwise, such as a JPEG
mask, where it reaches half its largest value). Give several folders to train on all of them.

Examples
  # ANN twin first, then MedSpikeFormer initialised from it and aligned to it:
  medspike-train --arch ann_twin --data kvasir-seg --out runs/twin --epochs 60
  medspike-train --arch medspikeformer --data kvasir-seg --out runs/snn \\
      --init-from runs/twin/best.safetensors --teacher runs/twin/best.safetensors
  # MedQKFormer at 128x128 with a 90-minute budget, then resume if interrupted:
  medspike-train --arch medqkformer --data kvasir-seg --out runs/qk --size 128 --minutes 90
  medspike-train --arch medqkformer --data kvasir-seg --out runs/qk --size 128 --resume
  # several GPUs or CPU processes:
  torchrun --nproc_per_node=2 -m napari_medspike.cli.train --arch medqkformer --data kvasir-seg --out runs/ddp

The run folder receives best.safetensors (+ best.md model card), last.pt (for --resume),
split.json, history.csv/json and curves.png. A new run refuses a folder that already holds
best.safetensors or last.pt: pass --resume to continue it or --overwrite to replace it.

Problems with the input (a missing or damaged file, a run folder conflict, a full disk) are
reported in one line, "medspike-train: error: ...", with exit status 2; --debug shows the full
traceback instead.
"""


def _tqdm_progress() -> tuple[callable, callable]:
    bar: dict[str, tqdm] = {}

    def report(p: TrainProgress) -> None:
        if p.kind == TrainEvent.START:  # a fine-tune's starting weights, the figures to beat
            m = p.metrics
            tqdm.write(f"start: val {m['val_loss']:.4f}  Dice {m['val_dice']:.4f}  IoU {m['val_iou']:.4f}")
            return
        if p.kind == TrainEvent.EPOCH:
            if "bar" in bar:
                bar.pop("bar").close()
            m = p.metrics
            tqdm.write(
                f"epoch {p.epoch}/{p.epochs}: train {m['train_loss']:.4f}  val {m['val_loss']:.4f}  "
                f"Dice {m['val_dice']:.4f}  IoU {m['val_iou']:.4f}  lr {m['lr']:.2e}  {m['time_s']:.0f}s"
            )
            return
        if "bar" not in bar:
            # started at the first report's step, so the rate is measured from there (not "8000 it/s")
            bar["bar"] = tqdm(total=p.steps, initial=p.step, desc=f"epoch {p.epoch}/{p.epochs}", unit="step",
                              leave=False, file=sys.stderr)
        bar["bar"].n = p.step
        bar["bar"].set_postfix(loss=f"{p.loss:.4f}", refresh=False)
        bar["bar"].refresh()

    def close() -> None:
        if "bar" in bar:
            bar.pop("bar").close()

    return report, close


def train_main(argv: list[str] | None = None) -> int:
    """``medspike-train``: train a model on folders of images and masks; the exit status."""
    if argv is None:  # a real command line (not a call from Python): huge-page malloc
        reexec_with_huge_pages()
    parser = argparse.ArgumentParser(
        prog="medspike-train",
        description="Train a spiking segmenter on folders of images and masks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_options(parser, TrainConfig, choices={"arch": sorted(TRAINABLE_ARCHITECTURES), "mode": ["resize", "crop"],
                                                     "precision": list(PRECISIONS),
                                                     "schedule": list(SCHEDULES)})
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last.pt (an error if there is none)")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return run_command(parser.prog, lambda: _train(args), debug=args.debug)


def _train(args: argparse.Namespace) -> int:
    cfg = config_from_options(TrainConfig, args)
    report, close = _tqdm_progress()
    try:
        result = train(cfg, progress=report, resume=args.resume)
    except KeyboardInterrupt:
        close()
        out = Path(cfg.out_dir)
        if (out / "last.pt").is_file():
            print(f"interrupted: {out / 'best.safetensors'} holds the best epoch so far; continue the run in {out} "
                  "with --resume and the options it was started with", file=sys.stderr)
        else:
            print("interrupted before the first epoch ended: nothing to continue, start the run again",
                  file=sys.stderr)
        return 130
    finally:
        close()
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    best = result.best
    print(f"best epoch {best.get('epoch')}: Dice {best.get('val_dice', float('nan')):.4f} "
          f"IoU {best.get('val_iou', float('nan')):.4f} -> {result.checkpoint}")
    return 0


def finetune_main(argv: list[str] | None = None) -> int:
    """``medspike-finetune``: fine-tune a checkpoint on corrections; the exit status."""
    if argv is None:  # a real command line (not a call from Python): huge-page malloc
        reexec_with_huge_pages()
    parser = argparse.ArgumentParser(
        prog="medspike-finetune",
        description="Fine-tune a checkpoint (or a shipped model) on a folder of images and masks.",
    )
    parser.add_argument("--checkpoint", default="default", help="shipped model name or checkpoint path")
    parser.add_argument("--data", nargs="+", required=True, help="folder(s) with images/ and masks/")
    parser.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--epochs", type=int, default=FINETUNE.epochs,
                        help=f"0 (default): auto, about {FINETUNE.image_passes} training images in all "
                        f"({FINETUNE.min_epochs}-{FINETUNE.max_epochs} epochs)")
    parser.add_argument("--minutes", type=float, default=FINETUNE.minutes,
                        help=f"stop after the epoch that crosses this time (default {FINETUNE.minutes:g}; "
                        "0: no limit); the best weights so far are kept")
    parser.add_argument("--lr", type=float, default=FINETUNE.lr,
                        help=f"0 (default): the architecture's training rate ({DEFAULT_LR_TEXT})")
    parser.add_argument("--batch-size", type=int, default=FINETUNE.batch_size)
    parser.add_argument("--val-fraction", type=float, default=FINETUNE.val_fraction)
    parser.add_argument("--replay", nargs="*", help="original training folder(s) to mix in (needs --replay-samples)")
    parser.add_argument("--replay-samples", type=int, default=0,
                        help="how many pairs of the --replay folders to mix in (0, the default: none); never "
                        "an image the run holds out or trains on already, nor one the starting model records "
                        "as its validation image")
    parser.add_argument("--anchor-weight", type=float, default=FINETUNE.anchor_weight,
                        help="pull the weights toward the starting ones (L2-SP; 0: off): less forgetting, less adaptation")
    parser.add_argument("--freeze-norm-stats", action=argparse.BooleanOptionalAction, default=FINETUNE.freeze_norm_stats,
                        help="keep the starting model's batch-norm statistics")
    parser.add_argument("--route", action=argparse.BooleanOptionalAction, default=FINETUNE.route,
                        help="when the corrections are another kind of image than the starting model's training "
                        "data, the output keeps the starting model for images like that data (a gate picks per "
                        "image; the file holds both); --no-route: one fine-tuned network")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    if args.replay and args.replay_samples <= 0:  # else the replay folders would be ignored without a word
        parser.error("--replay mixes in nothing unless --replay-samples N says how many of its pairs to use")
    if Path(args.out).is_file() and not args.overwrite:  # checked now, not after the fine-tune
        started_there = Path(args.checkpoint).is_file() and Path(args.checkpoint).resolve() == Path(args.out).resolve()
        parser.error(f"{args.out} already exists{' (it is the --checkpoint to start from)' if started_there else ''}: "
                     "choose another --out, or pass --overwrite to replace it")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return run_command(parser.prog, lambda: _finetune(args), debug=args.debug)


def _finetune(args: argparse.Namespace) -> int:
    report, close = _tqdm_progress()
    run = scratch_run_folder(args.out)  # where its logs (and, if interrupted, its best epoch) go
    try:
        result = finetune(
            args.checkpoint, args.data, args.out, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
            val_fraction=args.val_fraction, minutes=args.minutes, replay=args.replay, replay_samples=args.replay_samples,
            anchor_weight=args.anchor_weight, freeze_norm_stats=args.freeze_norm_stats, route=args.route,
            device=args.device,
            seed=args.seed, progress=report, run_dir=run,
        )
    except KeyboardInterrupt:
        close()
        kept = f"; the best epoch so far is in {run / 'best.safetensors'}" if (run / "best.safetensors").is_file() else ""
        print(f"interrupted: fine-tuning stopped before it finished, {args.out} not written{kept}", file=sys.stderr)
        return 130
    finally:
        close()
    print(f"{result.describe()} -> {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
