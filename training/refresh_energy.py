"""Measure a shipped model's energy and firing rates again, on the validation images its card names,
and rewrite its card (the weights stay as they are).

    python training/refresh_energy.py spiking default

For cards measured before the firing rate counted spikes over neurons and timesteps (it was the
plain mean of the layers' rates). Needs the training data the card names (``../shared/data``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_medspike.data.dataset import find_pairs
from napari_medspike.engine.checkpoint import WEIGHTS_DIR, load_model, read_metadata
from napari_medspike.engine.reports import refresh_metadata

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ship_model import energy_metrics, measure_energy, part_firing_rates  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def validation_images(meta: dict, count: int) -> list[Path]:
    """The first ``count`` validation images of a checkpoint's split, as ``ship_model.py`` took them."""
    train = meta["training"]
    folders = [Path(d) if Path(d).is_absolute() else REPO / d for d in train["data"]]
    pairs, _ = find_pairs(folders)
    by_key = {pair.key: pair.image for pair in pairs}
    missing = [key for key in train["val_keys"][:count] if key not in by_key]
    if missing:
        raise SystemExit(f"validation images not found in {', '.join(map(str, folders))}: {missing[:3]}")
    return [by_key[key] for key in train["val_keys"][:count]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="shipped model names (napari_medspike/weights/NAME.safetensors)")
    parser.add_argument("--images", type=int, default=8, help="validation images, as the card measured them")
    args = parser.parse_args()
    for name in args.names:
        path = WEIGHTS_DIR / f"{name}.safetensors"
        meta = read_metadata(path)
        model = load_model(path)
        reports = measure_energy(model, validation_images(meta, args.images), int(meta["input_size"]))
        metrics = dict(meta.get("metrics", {}))
        before = metrics.get("energy", {})
        metrics["energy"] = energy_metrics(reports)
        if model.spiking:
            metrics["firing_rate_per_part"] = part_firing_rates(reports)
        refresh_metadata(path, metrics=metrics)
        after = metrics["energy"]
        print(f"{name}: energy {before.get('energy_mj', float('nan')):.3f} -> {after['energy_mj']:.3f} mJ, "
              f"firing rate {before.get('mean_firing_rate', float('nan')):.4f} (mean over layers) -> "
              f"{after['mean_firing_rate']:.4f} (spikes over neurons and timesteps; "
              f"{after['spikes_per_neuron_step']:.3f} spikes per neuron and timestep)")
        print("  per part: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.get("firing_rate_per_part", {}).items()))


if __name__ == "__main__":
    main()
