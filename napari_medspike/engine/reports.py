"""What a training run leaves for people: logs, curves and the model card beside a checkpoint."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from ..common import atomic_write
from ..data.dataset import dataset_name
from .checkpoint import read_metadata


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Loss and Dice/IoU curves of a run, as a PNG. Drawn on its own Agg canvas: no pyplot
    state and no backend switch, so it is safe in a worker thread of a running napari."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.2), dpi=110, layout="tight")
    FigureCanvasAgg(fig)
    a, b = fig.subplots(1, 2)
    a.plot(epochs, [h["train_loss"] for h in history], label="train")
    a.plot(epochs, [h["val_loss"] for h in history], label="validation")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    b.plot(epochs, [h["val_dice"] for h in history], label="Dice")
    b.plot(epochs, [h["val_iou"] for h in history], label="IoU")
    b.set_xlabel("epoch"), b.set_ylim(0, 1), b.legend()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def write_logs(out: Path, history: list[dict[str, float]], plot: bool = True) -> None:
    """``history.json``, ``history.csv`` and (``plot``) ``curves.png`` in the run folder ``out``."""
    atomic_write(out / "history.json", lambda tmp: tmp.write_text(json.dumps(history, indent=1), encoding="utf-8"))

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)

    atomic_write(out / "history.csv", write_csv)
    if plot:
        plot_curves(history, out / "curves.png")


def is_measured(value: Any) -> bool:
    """Whether a figure was measured: a finite number (not None, not NaN)."""
    import math

    return isinstance(value, (int, float)) and math.isfinite(value)


#: How the model card's line about a domain record starts.
DOMAIN_LINE_START = "- Kind of images it knows:"


def domain_line(meta: dict[str, Any]) -> str:
    """The model card's line about a checkpoint's domain record (metadata ``"domain"``)."""
    record = meta.get("domain") or {}
    return (f"{DOMAIN_LINE_START} style vectors of {record.get('images')} {record.get('source')} "
            "(fine-tuning it on another kind of image keeps it for this kind)")


def _interval(figures: dict[str, Any], metric: str) -> str:
    """`` (95 % CI low-high)`` of an evaluation's metric; empty for evaluations from before
    intervals were reported, or of one image (which has none)."""
    low_high = figures.get(f"ci95_{metric}")
    if not low_high or any(v is None or not math.isfinite(v) for v in low_high):  # one image: none
        return ""
    return f" (95 % CI {low_high[0]:.3f}-{low_high[1]:.3f})"


def energy_lines(metrics: dict[str, Any]) -> list[str]:
    """The model card's lines on energy and firing rates, from a checkpoint's ``metrics``."""
    lines: list[str] = []
    energy = metrics.get("energy")
    if energy:
        lines.append(
            f"- Energy estimate (mean of {energy['images']} validation images, 45 nm: 4.6 pJ/MAC, 0.9 pJ/AC):"
            f" {energy['energy_mj']:.2f} mJ vs {energy['dense_ann_energy_mj']:.2f} mJ for the dense ANN;"
            f" {energy['analog_gmacs']:.2f} G analog MACs + {energy['sops_g']:.2f} G synaptic ops"
            " (synaptic operations only, for both: neuron updates, norms not folded into a convolution and"
            " additions are not counted)"
        )
        rate = energy.get("mean_firing_rate")
        if not is_measured(rate) or not rate:  # an ANN: no spikes
            pass
        elif "spikes_per_neuron_step" in energy:  # measured as spikes over neurons and timesteps
            per_step = energy["spikes_per_neuron_step"]
            virtual = round(per_step / rate)
            lines.append(
                f"- Firing rate {rate:.3f}: spikes over all neurons and timesteps"
                + (f" (each timestep as {virtual} virtual steps of its integer spikes: {per_step:.3f} spikes per"
                   " neuron and timestep)" if virtual > 1 else ""))
        else:  # cards from before: the plain mean of the layers' rates
            lines.append(f"- Mean firing rate over neuron layers: {rate:.3f}")
        if is_measured(metrics.get("twin_energy_mj")):
            twin = metrics["twin_energy_mj"]
            lines.append(f"- Energy of its ANN twin on the same images: {twin:.2f} mJ; this model needs "
                         f"{energy['energy_mj'] / twin:.0%} of it")
    parts = metrics.get("firing_rate_per_part")
    if parts:
        lines.append("- Firing rate per part (its spikes over its neurons and timesteps): "
                     + ", ".join(f"{name} {rate:.3f}" for name, rate in parts.items()))
    return lines


def write_model_card(checkpoint: Path, meta: dict[str, Any]) -> Path:
    """A markdown card beside the checkpoint: architecture, data, split, metrics, training.

    Figures that were not measured are said to be so (a card never shows NaN)."""
    train = meta.get("training", {})
    metrics = meta.get("metrics", {})
    if is_measured(metrics.get("val_dice")):
        on = train.get("validated_on", "held-out images")
        validation = (f"- Validation on {on} (per-image mean, threshold 0.5, at model resolution): Dice "
                      f"{metrics['val_dice']:.4f}, IoU {metrics.get('val_iou', float('nan')):.4f} at epoch {metrics.get('epoch')}")
    else:
        validation = "- Validation: not measured (no validation images)"
    lines = [
        f"# {checkpoint.stem if checkpoint.stem != 'best' else f'{checkpoint.parent.name}: best epoch'}",
        "",
        f"- Architecture: `{meta['arch']}` {json.dumps(meta['config'])}",
        f"- Input: {meta.get('input_size')}×{meta.get('input_size')}, {meta.get('normalisation')}",
        f"- Training data: {', '.join(dataset_name(d) for d in train.get('data', []))} (mode {train.get('mode')})"
        + (f"; replayed against forgetting: {train['replay']['images']} images of "
           f"{', '.join(dataset_name(d) for d in train['replay']['data'])}" if train.get("replay") else ""),
        f"- Split: seed {train.get('seed')}, {train.get('n_train')} train / {train.get('n_val')} validation images"
        " (by image; `split.json` in the run folder lists them)",
        validation,
    ]
    if is_measured(metrics.get("firing_rate")):
        lines.append(f"- Firing rate during training (first validation batch; the mean over neuron layers, as "
                     f"the spike budget counts): {metrics['firing_rate']:.4f}")
    lines += [
        f"- Training: {train.get('epochs_run')} epoch{'s' * (train.get('epochs_run') != 1)}"
        + (f" ({train['stopped']})" if train.get("stopped") else "") + ", "
        f"{train.get('minutes', 0):.1f} min on {train.get('device')}"
        f", Adam lr {train.get('lr')}, batch {train.get('batch_size')}"
        + (f", {train['gradient']}" if train.get("gradient", "BPTT") != "BPTT" else ""),
        f"- Initialised from: {train.get('init_from') or 'scratch'}; alignment teacher: {train.get('teacher') or 'none'}"
        + (f"; distilled from: {train['distill']} (targets {1 - train['distill_mix']:g} mask + "
           f"{train['distill_mix']:g} its probabilities)" if train.get("distill") else "")
        + (f"; spike budget: mean firing rate {train['max_firing_rate']:g} (penalty weight "
           f"{train['firing_weight']:g})" if train.get("max_firing_rate") else ""),
        f"- Package version: {meta.get('package_version')}",
    ]
    if "inference" in meta:
        flips = meta["inference"].get("flips", False)
        lines.append(f"- Recommended inference: mirror test-time augmentation {'on' if flips else 'off'}"
                     " (the plugin and `medspike-evaluate` follow it unless told otherwise)")
    for key in ("original_resolution", "original_resolution_alternative"):
        orig = metrics.get(key)
        if orig:
            tta = {True: ", mirror TTA on (`--flips on`)", False: ", mirror TTA off (`--flips off`)"}.get(orig.get("flips"), "")
            if orig.get("precision"):  # (bf16 and fp32 differ by a few thousandths for some models)
                tta += f", {orig['precision']} (`--precision {orig['precision']}`)"
            lines.append(
                f"- Validation at the original image resolution ({orig.get('count')} images, `medspike-evaluate"
                f" --subset val`{tta}): Dice {orig['mean_dice']:.4f}{_interval(orig, 'dice')}, IoU"
                f" {orig['mean_iou']:.4f}{_interval(orig, 'iou')}, sensitivity {orig['mean_sensitivity']:.4f},"
                f" specificity {orig['mean_specificity']:.4f}"
            )
    lines += energy_lines(metrics)
    if isinstance(meta.get("domain"), dict):
        lines.append(domain_line(meta))
    routing = meta.get("routing")
    if isinstance(routing, dict):
        lines.append(
            f"- Routed: each image goes to the starting model ({routing.get('start')}) or to its fine-tuned copy, "
            f"whichever kind of image it resembles (gate on {routing.get('features', 'image style')}); leaving one "
            f"image out at a time, {routing.get('corrections_routed_leave_one_out', float('nan')):.0%} of the "
            f"{routing.get('corrections')} corrections went to the fine-tuned copy and "
            f"{routing.get('start_misrouted_leave_one_out', float('nan')):.0%} of {routing.get('start_images')} "
            "of the starting model's training images did")
        if routing.get("first_expert"):
            lines.append("- Since then the starting model's network was fine-tuned on corrections like its own kind, "
                         "its first stage (what the gate reads) kept as it was; the fine-tuned copy is unchanged")
    if train.get("description"):
        lines += ["", train["description"]]
    path = checkpoint.with_suffix(".md")
    atomic_write(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n", encoding="utf-8"))
    return path


def refresh_training_record(checkpoint: Path, **training: Any) -> None:
    """Update the ``training`` entries of a checkpoint's metadata (e.g. epochs run so far) and
    rewrite its model card; the weights are copied unchanged (atomically)."""
    meta = read_metadata(checkpoint)
    refresh_metadata(checkpoint, training={**meta.get("training", {}), **training})


def refresh_metadata(checkpoint: Path, **entries: Any) -> None:
    """Replace top-level entries of a checkpoint's metadata and rewrite its model card; the
    weights are copied unchanged (atomically)."""
    from safetensors.torch import load, save_file

    from .checkpoint import METADATA_KEY

    meta = {**read_metadata(checkpoint), **entries}
    # read into memory, not mapped: Windows cannot replace a file that is mapped
    tensors = load(Path(checkpoint).read_bytes())
    header = {METADATA_KEY: json.dumps(meta, default=str)}
    atomic_write(checkpoint, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    write_model_card(checkpoint, meta)
