"""The spike inspector's figures as files: everything as JSON, or the firing rates as CSV.

The dock shows one inspection's totals and plots; a researcher comparing models, images or
training runs needs the numbers themselves (per layer, per timestep, per synaptic operation).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from ..common import atomic_write
from .energy import EnergyReport
from .maps import StageMaps, stage_of

#: What :func:`write_inspection` can write, by file extension.
FORMATS = (".json", ".csv")


def _number(value: float) -> float | None:
    """JSON has no NaN: a stage without neurons is written as null."""
    return None if value is None or not math.isfinite(value) else float(value)


def inspection_record(maps: StageMaps, report: EnergyReport, image: str = "", model: str = "",
                      frame: int | None = None) -> dict[str, Any]:
    """One inspection's figures, JSON-ready: what was inspected, the energy estimate with its
    per-operation table, and every spiking layer's firing rate per (virtual) timestep."""
    return {
        "image": image,
        **({"frame": frame} if frame is not None else {}),
        "model": model,
        "arch": report.arch,
        "input_shape": list(report.input_shape),
        "timesteps": maps.timesteps,
        "virtual_timesteps": maps.virtual,
        "spike_levels": maps.spike_levels,
        "firing_rate": "mean spike count per neuron and (virtual) timestep, over a full spike's count",
        "stage_shown": maps.stage,
        "spikes_shown": maps.spike_name,
        "interaction_correlation": _number(maps.interaction_correlation),
        "stage_firing_rates": [_number(r) for r in maps.stage_firing_rates],
        "energy": {
            "energy_mj": report.energy_pj / 1e9,
            "dense_ann_energy_mj": report.ann_energy_pj / 1e9,
            "ratio_to_dense_ann": report.energy_pj / max(report.ann_energy_pj, 1e-12),
            "synaptic_ops": report.sops,
            "analog_macs": report.analog_macs,
            "dense_ann_macs": report.ann_macs,
            "e_mac_pj": report.e_mac_pj,
            "e_ac_pj": report.e_ac_pj,
        },
        "layer_firing_rates": {name: [float(r) for r in rates] for name, rates in maps.layer_rates.items()},
        "operations": [
            {"layer": layer.name, "op": layer.op, "macs": layer.macs,
             "input": "analog" if layer.input_rate is None else "spikes",
             "input_spike_count": layer.input_rate, "synaptic_ops": layer.sops, "energy_pj": layer.energy_pj}
            for layer in report.layers
        ],
    }


def write_inspection(path: str | Path, record: dict[str, Any]) -> Path:
    """Write :func:`inspection_record`'s figures: ``.json`` all of them; ``.csv`` one row per
    spiking layer (its part of the network, mean firing rate and the rate at each timestep).
    Raises ``ValueError`` for another extension, :class:`~napari_medspike.common.WriteError`
    when the file cannot be written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path.name}: write the figures as .json (all of them) or .csv (firing rates per layer)")
    if suffix == ".json":
        return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1), encoding="utf-8"))
    rates = record["layer_firing_rates"]
    steps = max((len(r) for r in rates.values()), default=0)

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["layer", "part", "mean_firing_rate", *(f"t{t}" for t in range(steps))])
            for name, values in rates.items():
                out.writerow([name, stage_of(name), sum(values) / len(values) if values else "", *values])

    return atomic_write(path, write)
