"""Carry a twin's weights over to another member of the MedSpikeFormer family and measure it.

    python training/convert_twin.py --checkpoint runs/ramp/best.safetensors \
        --arch medspikeformer --config '{"timesteps": 4, "threshold": 0.5}' \
        --data data/kvasir-seg --out ramp_as_snn.safetensors

The ANN twin, the rate twin (``rate`` or ``ramp`` activation) and the SNN share one skeleton and
one state dict, so the weights load as they are. The target's batch-norm statistics are then
re-estimated on training images (``--calibration``; a spiking network's depend on its neurons),
and it is validated at the training size on the validation images the checkpoint records, with
the trainer's own loss and metrics. Prints one JSON line; ``--out`` writes the converted model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from napari_medspike.data.dataset import CachedPairs, find_pairs
from napari_medspike.engine.checkpoint import load_model, read_metadata, resolve_checkpoint, save_checkpoint
from napari_medspike.engine.trainer import NORM_CALIBRATION_IMAGES, recalibrate_norms, validate
from napari_medspike.models import create_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="the trained twin (or any family member)")
    parser.add_argument("--arch", required=True, choices=("medspikeformer", "rate_twin", "ann_twin"))
    parser.add_argument("--config", default="{}", help="the target's options as JSON (e.g. timesteps, threshold)")
    parser.add_argument("--data", nargs="+", required=True, help="the folders the checkpoint was trained on")
    parser.add_argument("--calibration", type=int, default=NORM_CALIBRATION_IMAGES,
                        help="training images that re-estimate the batch-norm statistics (0: keep them)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", help="write the converted model here (a .safetensors file)")
    args = parser.parse_args(argv)

    path = resolve_checkpoint(args.checkpoint)
    meta = read_metadata(path)
    training = meta.get("training", {})
    val_keys = set(training.get("val_keys") or [])
    if not val_keys:
        raise SystemExit(f"{path} records no validation images: nothing honest to measure on")
    size = int(meta.get("input_size") or 128)
    pairs = find_pairs(args.data)[0]
    train = [p for p in pairs if p.key not in val_keys]
    val = [p for p in pairs if p.key in val_keys]
    if len(val) != len(val_keys):
        raise SystemExit(f"found {len(val)} of the {len(val_keys)} validation images in {args.data}")

    source = load_model(path)
    accepted = create_model(args.arch).config  # options the target takes (others are dropped)
    config = {k: v for k, v in {**source.config, **json.loads(args.config)}.items() if k in accepted}
    model = create_model(args.arch, **config)
    model.load_state_dict(source.state_dict(), strict=True)
    device = torch.device("cpu")
    if args.calibration:
        calibration = CachedPairs(train[: args.calibration], size, training.get("mode", "resize"), random_crops=False)
        recalibrate_norms(model, calibration, args.calibration, args.batch_size, device)
    val_set = CachedPairs(val, size, training.get("mode", "resize"), random_crops=False)
    metrics = validate(model, torch.utils.data.DataLoader(val_set, batch_size=args.batch_size), device)
    print(json.dumps({"checkpoint": str(path), "arch": args.arch, "config": model.config, "size": size,
                      "n_val": len(val_set), **metrics}))
    if args.out:
        converted = {**training, "converted_from": str(path), "norm_calibration_images": args.calibration}
        save_checkpoint(model, Path(args.out), input_size=size, training=converted, metrics=metrics)


if __name__ == "__main__":
    main()
