"""The fine-tuning defaults (chosen with benchmarks/adaptation.py): auto epochs from the number of
corrections, the architecture's own learning rate, a time limit, and that they adapt a model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lesions import write_lesion_pairs
from napari_medspike import create_model, load_model, save_checkpoint
from napari_medspike.data.synthetic import synthetic_lesion
from napari_medspike.engine import finetune as finetune_module
from napari_medspike.engine.checkpoint import read_metadata
from napari_medspike.engine.config import FINETUNE
from napari_medspike.engine.finetune import finetune
from napari_medspike.engine.metrics import binary_metrics
from napari_medspike.inference.predictor import predict

TINY = {"widths": [8, 16, 32, 64]}


def mean_dice(model, seeds: range, shape=(48, 64)) -> float:
    scores = []
    for s in seeds:
        image, mask = synthetic_lesion(shape, seed=s)
        scores.append(binary_metrics(predict(model, image, flips=False) >= 0.5, mask)["dice"])
    return float(np.mean(scores))


def test_auto_epochs_give_few_corrections_more_epochs_within_bounds():
    assert FINETUNE.epochs == 0 and FINETUNE.lr == 0.0  # both "auto" by default
    epochs = [FINETUNE.epochs_for(n) for n in (1, 4, 8, 20, 100, 10_000)]
    assert epochs == sorted(epochs, reverse=True)
    assert epochs[0] == FINETUNE.max_epochs and epochs[-1] == FINETUNE.min_epochs
    assert FINETUNE.epochs_for(20) == round(FINETUNE.image_passes / 20)


def test_auto_settings_reach_the_training_loop(tmp_path, monkeypatch):
    """epochs=0 trains epochs_for(training pairs) epochs; lr=0 uses the architecture's rate."""
    data = write_lesion_pairs(tmp_path / "c", range(5), stem="s{:03d}")  # 4 train + 1 held out
    monkeypatch.setattr(finetune_module, "FINETUNE",
                        dataclasses.replace(FINETUNE, image_passes=8, min_epochs=1, max_epochs=10))
    model = create_model("medqkformer", **TINY)
    start = save_checkpoint(model, tmp_path / "start.safetensors", input_size=32)
    result = finetune(start, data, tmp_path / "tuned.safetensors", epochs=0, lr=0.0, device="cpu")
    assert len(result.history) == 2  # 8 image passes / 4 training pairs
    training = read_metadata(result.checkpoint)["training"]
    assert training["lr"] == model.default_lr == 1e-3


def test_the_time_limit_stops_after_the_epoch_that_crosses_it(tmp_path):
    data = write_lesion_pairs(tmp_path / "c", range(5), stem="s{:03d}")
    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "start.safetensors", input_size=32)
    result = finetune(start, data, tmp_path / "tuned.safetensors", epochs=20, minutes=1e-6, device="cpu")
    assert len(result.history) == 1 and result.checkpoint.is_file()
    with pytest.raises(ValueError, match="minutes"):
        finetune(start, data, tmp_path / "x.safetensors", minutes=-1)


def test_default_fine_tuning_raises_dice_on_held_back_images(tmp_path):
    """With the defaults alone, 8 corrected images make a model better on 8 images it never saw."""
    corrections = write_lesion_pairs(tmp_path / "corrections", range(8), stem="s{:03d}")
    start_model = create_model("medqkformer", **TINY).eval()
    start = save_checkpoint(start_model, tmp_path / "start.safetensors", input_size=32)
    held_back = range(100, 108)
    before = mean_dice(load_model(start), held_back)
    result = finetune(start, corrections, tmp_path / "tuned.safetensors", device="cpu")
    after = mean_dice(load_model(result.checkpoint), held_back)
    assert after > before + 0.2 and after > 0.5, (before, after)
