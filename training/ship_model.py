"""Copy a run's best checkpoint into the package as a shipped model, with its model card.

    python training/ship_model.py --run runs/qk128 --name default --flips \
        --eval val_flips_on.json --eval val_flips_off.json --note "Training data licence: ..."

Adds the recommended inference settings (``--flips``: mirror test-time augmentation), the run's
validation keys (so ``medspike-evaluate --subset val`` finds them), the evaluations at original
resolution (``medspike-evaluate --json`` outputs; the one matching the recommendation comes
first on the card), the energy estimate on validation images, the domain record (what kind of images it knows,
for fine-tuning that keeps it) and the notes, and writes
``napari_medspike/weights/NAME.safetensors`` (float16) + ``NAME.md``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from napari_medspike.analysis.energy import estimate_energy, weighted_rate
from napari_medspike.data.io import image_to_tensor, read_image
from napari_medspike.engine.checkpoint import WEIGHTS_DIR, load_model, read_metadata, save_checkpoint
from napari_medspike.engine.reports import dataset_name, write_model_card
from napari_medspike.engine.routing import domain_record
from napari_medspike.models.info import ModelInfo


def part_firing_rates(reports: list) -> dict[str, float]:
    """Firing rate of each part of the network (encoder stage, decoder stage, head) over the
    reports' images: that part's spikes over its neurons and timesteps (its layers' rates
    weighted by their sizes; ``weighted_rate``), averaged over the images."""
    parts: dict[str, list[float]] = {}
    for report in reports:
        names: dict[str, list[str]] = {}
        for name in report.firing_rates:
            match = re.match(r"(stages\.\d+|decoders\.\d+|head)", name)
            names.setdefault(match.group(1) if match else "other", []).append(name)
        for part, members in names.items():
            parts.setdefault(part, []).append(weighted_rate(report.firing_rates, report.neurons, members))
    return {part: sum(rates) / len(rates) for part, rates in parts.items()}


def measure_energy(model, images: list, size: int) -> list:
    """Energy reports of ``model`` on image files resized to ``size`` (as the model sees them)."""
    reports = []
    for image in images:
        x = image_to_tensor(read_image(image))
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        reports.append(estimate_energy(model, x))
    return reports


def energy_metrics(reports: list) -> dict[str, float]:
    """The card's energy record: means over the reports' images."""
    n = len(reports)
    return {
        "images": n,
        "mean_firing_rate": sum(e.mean_firing_rate for e in reports) / n,
        "spikes_per_neuron_step": sum(e.spikes_per_neuron_step for e in reports) / n,
        "energy_mj": sum(e.energy_pj for e in reports) / n / 1e9,
        "dense_ann_energy_mj": sum(e.ann_energy_pj for e in reports) / n / 1e9,
        "sops_g": sum(e.sops for e in reports) / n / 1e9,
        "analog_gmacs": sum(e.analog_macs for e in reports) / n / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--name", default="default")
    parser.add_argument("--eval", type=Path, action="append", default=[],
                        help="medspike-evaluate --json output on the validation subset (repeat for flips on and off)")
    parser.add_argument("--flips", action="store_true",
                        help="recommend mirror test-time augmentation (the plugin and medspike-evaluate then use it by default)")
    parser.add_argument("--energy-images", type=int, default=8, help="validation images for the energy estimate")
    parser.add_argument("--twin", type=Path, default=None,
                        help="the ANN twin checkpoint: its energy on the same images goes on the card")
    parser.add_argument("--note", action="append", default=[], help="extra lines for the model card")
    args = parser.parse_args()

    best = args.run / "best.safetensors"
    meta = read_metadata(best)
    split = json.loads((args.run / "split.json").read_text())
    meta["training"]["val_keys"] = [row["key"] for row in split["val"]]
    history = json.loads((args.run / "history.json").read_text())
    meta["training"]["epochs_run"] = len(history)
    meta["training"]["minutes"] = sum(h["time_s"] for h in history) / 60
    meta["inference"] = {"flips": bool(args.flips)}
    for path in args.eval:
        ev = json.loads(path.read_text())
        figures = {k: ev[k] for k in ev if k.startswith(("mean_", "ci95_")) or k == "count"}
        figures["flips"] = bool(ev.get("flips", False))
        if ev.get("precision"):
            figures["precision"] = ev["precision"]
        key = "original_resolution" if figures["flips"] == args.flips else "original_resolution_alternative"
        meta["metrics"][key] = figures
    model = load_model(best)
    size = int(meta["input_size"])
    twin = load_model(args.twin) if args.twin else None
    images = [row["image"] for row in split["val"][: args.energy_images]]
    energies = measure_energy(model, images, size)
    twin_energies = measure_energy(twin, images, size) if twin is not None else []
    if energies and model.spiking:
        meta["metrics"]["firing_rate_per_part"] = part_firing_rates(energies)
    if twin_energies:
        meta["metrics"]["twin_energy_mj"] = sum(e.energy_pj for e in twin_energies) / len(twin_energies) / 1e9
    if energies:
        meta["metrics"]["energy"] = energy_metrics(energies)
    if "domain" not in meta:  # runs from before the trainer recorded it
        names = ", ".join(dataset_name(d) for d in meta["training"].get("data", []))
        meta["domain"] = domain_record(model, [row["image"] for row in split["train"]],
                                       source=f"training images of {names}")
    if args.note:
        meta["training"]["description"] = "\n".join([meta["training"].get("description", ""), *args.note]).strip()
    target = WEIGHTS_DIR / f"{args.name}.safetensors"
    save_checkpoint(model, target, half=True, **ModelInfo.from_metadata(meta).record())
    card = write_model_card(target, read_metadata(target))
    print(f"shipped {target} ({target.stat().st_size / 1e6:.1f} MB) and {card}")


if __name__ == "__main__":
    main()
