"""The spike inspector's figures as files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_medspike.analysis.export import inspection_record, write_inspection
from napari_medspike.analysis.maps import inspect_steps
from napari_medspike.common import run_job


def test_an_inspections_figures_are_written_as_json_and_csv(calibrated, tmp_path):
    model = calibrated("medspikeformer", timesteps=2)
    image = (np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)
    maps, report = run_job(inspect_steps(model, image, 1))
    record = inspection_record(maps, report, image="photo", model="tiny", frame=3)

    back = json.loads(write_inspection(tmp_path / "figures.json", record).read_text())
    assert back["image"] == "photo" and back["frame"] == 3 and back["timesteps"] == 2 and back["stage_shown"] == 1
    assert back["energy"]["energy_mj"] == pytest.approx(report.energy_pj / 1e9)
    assert back["energy"]["analog_macs"] == report.analog_macs > 0
    assert sum(op["energy_pj"] for op in back["operations"]) == pytest.approx(report.energy_pj)
    assert back["operations"][0]["input"] == "analog"  # the encoding layer
    assert back["stage_firing_rates"] == pytest.approx(maps.stage_firing_rates)
    assert set(back["layer_firing_rates"]) == set(maps.layer_rates) and back["layer_firing_rates"]

    with write_inspection(tmp_path / "rates.csv", record).open() as f:
        rows = list(csv.DictReader(f))
    assert [row["layer"] for row in rows] == list(maps.layer_rates)
    first = rows[0]
    assert first["part"] == "stage 0" and {"t0", "t1"} <= set(first)
    assert float(first["mean_firing_rate"]) == pytest.approx(float(np.mean(maps.layer_rates[first["layer"]])))

    with pytest.raises(ValueError, match=r"\.json .* or \.csv"):
        write_inspection(tmp_path / "figures.txt", record)
