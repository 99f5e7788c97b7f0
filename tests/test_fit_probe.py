"""training/fit_probe.py, the few-image fitting probe (training/README.md, "Fit probe")."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

import napari_medspike.data.dataset as dataset
from lesions import write_lesion_pairs

PROBE = Path(__file__).resolve().parents[1] / "training" / "fit_probe.py"


def run_probe(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> list[dict]:
    monkeypatch.setattr(sys, "argv", [str(PROBE), *args])
    runpy.run_path(str(PROBE), run_name="__main__")
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_the_probe_fits_training_images_and_reports_loss_and_dice(tmp_path, monkeypatch, capsys):
    data = write_lesion_pairs(tmp_path / "data", range(12), shape=(32, 32))
    rows = run_probe(monkeypatch, capsys, "--data", str(data), "--arch", "ann_twin", "--config",
                     '{"widths": [8, 8, 16, 16], "heads": 2}', "--size", "32", "--images", "4",
                     "--steps", "30", "--every", "10", "--lr", "3e-3", "--bn-init", "1,0")
    steps = [r for r in rows if "step" in r]
    assert [r["step"] for r in steps] == [0, 10, 20, 30]
    assert steps[-1]["loss"] < 0.8 * steps[0]["loss"]  # it learns the four images
    assert steps[-1]["dice"] > steps[0]["dice"]
    assert rows[-1]["final"] == steps[-1] and rows[-1]["arch"] == "ann_twin"


def test_the_probe_never_takes_a_validation_image(tmp_path, monkeypatch, capsys):
    """It reads only the seeded split's training images: asking for all of them gets 90 %."""
    data = write_lesion_pairs(tmp_path / "data", range(20), shape=(32, 32))
    train, val = dataset.split_pairs(dataset.find_pairs([data])[0], 0.1, 0)
    seen: list[str] = []
    original = dataset.CachedPairs.__init__

    def spy(self, pairs, *a, **k):
        seen.extend(p.key for p in pairs)
        original(self, pairs, *a, **k)

    monkeypatch.setattr(dataset.CachedPairs, "__init__", spy)
    run_probe(monkeypatch, capsys, "--data", str(data), "--arch", "ann_twin", "--config",
              '{"widths": [8, 8, 16, 16], "heads": 2}', "--size", "32", "--images", "100", "--steps", "1")
    assert sorted(seen) == sorted(p.key for p in train) and not set(seen) & {p.key for p in val}
