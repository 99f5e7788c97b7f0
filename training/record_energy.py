"""Measure a checkpoint's energy estimate and firing rates again, as ``ship_model.py`` does, and
rewrite its metadata and the energy lines of its model card (after a change to the accounting).

    python training/record_energy.py --model spiking --data data/kvasir-seg

Uses the first ``--images`` validation images the checkpoint records (the ones ``ship_model.py``
used), resized to its input size; rewrites the checkpoint with the same tensors (float16
storage stays float16). In its card only the lines on energy and firing rates are replaced: what
was written there by hand stays (a card without such lines is written again from the metadata).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from napari_medspike.data.dataset import find_pairs
from napari_medspike.engine.checkpoint import load_model, read_metadata, resolve_checkpoint, save_checkpoint
from napari_medspike.engine.reports import energy_lines, write_model_card
from ship_model import energy_metrics, measure_energy, part_firing_rates  # (training/, this script's folder)

#: Card lines that :func:`energy_lines` writes (the firing rate during training is another line).
ENERGY_LINE = re.compile(r"- (Energy estimate|Energy of its ANN twin|Mean firing rate over|Firing rate per part"
                         r"|Firing rate [0-9.]+:)")


def replace_energy_lines(card: Path, metrics: dict) -> bool:
    """Put the energy lines of ``metrics`` where the card's were; whether it had any."""
    lines = card.read_text(encoding="utf-8").split("\n")
    at = [i for i, line in enumerate(lines) if ENERGY_LINE.match(line)]
    if not at:
        return False
    kept = [line for i, line in enumerate(lines) if i not in at]
    kept[at[0]:at[0]] = energy_lines(metrics)
    card.write_text("\n".join(kept), encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="shipped model name or checkpoint file (rewritten)")
    parser.add_argument("--data", nargs="+", required=True, help="the folders it was trained on")
    parser.add_argument("--images", type=int, default=8, help="validation images to average over")
    args = parser.parse_args(argv)
    path = resolve_checkpoint(args.model)
    meta = read_metadata(path)
    model = load_model(path).float().eval()
    size = int(meta["input_size"])
    pairs = {p.key: p for p in find_pairs(args.data)[0]}
    keys = [k for k in meta.get("training", {}).get("val_keys", []) if k in pairs][: args.images]
    if not keys:
        raise SystemExit(f"none of the checkpoint's validation images is in {args.data}")
    old = meta["metrics"].get("energy", {})
    reports = measure_energy(model, [pairs[k].image for k in keys], size)
    new = meta["metrics"]["energy"] = energy_metrics(reports)
    if model.spiking:
        meta["metrics"]["firing_rate_per_part"] = part_firing_rates(reports)
    stored = load_model(path)  # as stored (the model above runs in float32)
    save_checkpoint(stored, path, half=meta.get("storage_dtype") == "float16",
                    **{**stored.info.record(), "metrics": meta["metrics"]})
    card = path.with_suffix(".md")
    if not (card.is_file() and replace_energy_lines(card, meta["metrics"])):
        write_model_card(path, read_metadata(path))
    print(f"{path}: {new['energy_mj']:.3f} mJ vs {new['dense_ann_energy_mj']:.3f} mJ dense "
          f"({new['energy_mj'] / new['dense_ann_energy_mj']:.1%}) on {new['images']} validation images; before "
          f"{old.get('energy_mj', float('nan')):.3f} vs {old.get('dense_ann_energy_mj', float('nan')):.3f}")


if __name__ == "__main__":
    main()
