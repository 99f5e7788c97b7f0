"""The shipped models: present, light, self-describing, and each segments its bundled sample."""

from __future__ import annotations

from pathlib import Path

import pytest

import napari_medspike
from napari_medspike import list_models, load_model
from napari_medspike.data.io import read_image, read_mask
from napari_medspike.engine.checkpoint import model_card_path
from napari_medspike.engine.metrics import binary_metrics
from napari_medspike.inference.predictor import predict

SAMPLES = Path(napari_medspike.__file__).parent / "samples"


def test_default_is_shipped_with_its_card():
    assert "default" in list_models()
    path = list_models()["default"]
    assert path.stat().st_size < 20e6
    card = model_card_path(path).read_text()
    assert "Validation" in card and "kvasir-seg" in card and "licence" in card.lower()
    info = load_model("default").info
    assert info.training["val_keys"] and info.metrics["val_dice"] > 0.5


def test_default_segments_the_bundled_polyp():
    # This image was in the training split: the test checks that the shipped weights load and
    # work end to end, not how well they generalise (the model card reports validation).
    model = load_model("default")
    prob = predict(model, read_image(SAMPLES / "kvasir.jpg"))
    dice = binary_metrics(prob >= 0.5, read_mask(SAMPLES / "kvasir_mask.png"))["dice"]
    assert dice > 0.5, f"Dice {dice:.3f} on the bundled polyp"


MODALITY_SAMPLES = {"dermoscopy": "ph2", "breast-ultrasound": "busi", "histology-glands": "glas"}


def test_shipped_models_stay_light_and_describe_themselves():
    models = list_models()
    # the wheel carries them: well under PyPI's 100 MB a file (four MedQKFormers at 15 MB, the spiking 5 MB)
    assert sum(p.stat().st_size for p in models.values()) < 75e6
    for name, path in models.items():
        card = model_card_path(path).read_text()
        assert "Validation at the original image resolution" in card and "licence" in card.lower(), name
        # what to expect from a new source, with its Dice on a dataset it never saw
        new_source = next((line for line in card.splitlines() if line.startswith("On images from a new source:")), "")
        assert "cross_dataset.py" in new_source and "Dice 0." in new_source, name
        info = load_model(name).info
        assert info.training["val_keys"] and "original_resolution" in info.metrics, name
        domain = info.extra["domain"]  # what kind of images it knows, for fine-tuning that keeps it
        assert domain["images"] == min(128, info.training["n_train"]) == len(domain["styles"]), name


@pytest.mark.parametrize("name", sorted(MODALITY_SAMPLES))
def test_modality_model_segments_its_bundled_sample(name):
    # as above, both samples were in their model's training split: an end-to-end check only
    sample = MODALITY_SAMPLES[name]
    prob = predict(load_model(name), read_image(SAMPLES / f"{sample}.jpg"))
    dice = binary_metrics(prob >= 0.5, read_mask(SAMPLES / f"{sample}_mask.png"))["dice"]
    assert dice > 0.5, f"{name}: Dice {dice:.3f} on the bundled {sample} image"


def test_the_spiking_model_fires_through_time_on_the_bundled_polyp():
    """The shipped MedSpikeFormer is a spiking network the inspector can show: T = 4 timesteps
    that differ, living (not silent, not saturated) firing, and a mask on the sample polyp."""
    import numpy as np
    import torch

    from napari_medspike.analysis.maps import model_input

    model = load_model("spiking")
    assert model.arch == "medspikeformer" and model.timesteps == 4 and model.config["layout"] == "spike_driven"
    image = read_image(SAMPLES / "kvasir.jpg")
    with torch.inference_mode():
        out = model.forward_intermediates(model_input(image, model.input_size))
    spikes = out["stages"][0]["spikes"]["v"]
    assert spikes.shape[0] == 4
    per_step = spikes.float().mean(dim=(1, 2, 3, 4))
    assert float(per_step.max() - per_step.min()) > 1e-4, per_step  # the timesteps are not copies
    rates = np.array([float(r.mean()) for r in out["firing_rates"].values()])
    assert 0.02 < rates.mean() < 0.5, rates.mean()
    mask = predict(model, image) >= 0.5
    assert 0.005 < mask.mean() < 0.9, mask.mean()  # it segments something, not everything
    card = model_card_path(list_models()["spiking"]).read_text()
    assert "Firing rate per part" in card and "ANN twin" in card


def test_the_spiking_model_fires_integer_spikes_at_a_fraction_of_its_twins_energy():
    """The shipped MedSpikeFormer fires several spikes per timestep and uses them (counts above
    one occur), every encoder stage fires at 0.05-0.3 of its virtual sub-steps, and its energy
    estimate on the bundled polyp is at most a third of its ANN twin's."""
    import torch

    from napari_medspike.analysis.energy import estimate_energy
    from napari_medspike.analysis.maps import model_input

    model = load_model("spiking").float().eval()
    assert model.spike_levels >= 2
    x = model_input(read_image(SAMPLES / "kvasir.jpg"), model.input_size)
    with torch.inference_mode():
        counts = model.forward_intermediates(x)["stages"][1]["spikes"]["v"] * model.spike_levels
    assert torch.equal(counts, counts.round()) and float(counts.max()) >= 2
    report = estimate_energy(model, x)
    assert all(0.05 <= rate <= 0.3 for rate in report.stage_firing_rates), report.stage_firing_rates
    assert report.energy_pj <= report.ann_energy_pj / 3, report.summary()


def test_the_spiking_models_interaction_maps_are_one_picture_their_decomposition_is_not():
    """On the bundled polyp the four interaction maps of every stage all follow what reaches each
    pixel (mean pairwise r 0.91-0.99 when measured), while their sum, the two active shares and φ,
    from which the four maps follow exactly, are far less alike (mean |r| 0.11-0.21): the
    inspector's second interactions view."""
    import itertools

    import numpy as np

    from napari_medspike.analysis.maps import DECOMPOSED, INTERACTIONS, inspect_stage

    def mean_abs_r(parts: dict, names: tuple) -> float:
        return float(np.mean([abs(np.corrcoef(np.nan_to_num(parts[a]).ravel(), np.nan_to_num(parts[b]).ravel())[0, 1])
                              for a, b in itertools.combinations(names, 2)]))

    model = load_model("spiking")
    image = read_image(SAMPLES / "kvasir.jpg")
    for stage in range(4):
        maps = inspect_stage(model, image, stage)
        assert all(np.isfinite(maps.decomposed[name]).mean() > 0.9 for name in DECOMPOSED)
        alike, apart = mean_abs_r(maps.interactions, INTERACTIONS), mean_abs_r(maps.decomposed, DECOMPOSED)
        assert alike > 0.85 and apart < 0.4, (stage, alike, apart)
        assert maps.interaction_correlation > 0.75  # the lowest pairwise r, which the dock reports


def test_the_inspectors_maps_firing_rates_and_energy_come_from_one_kind_of_pass():
    """The dock shows stage firing rates and maps beside the energy estimate: they came from the
    merged fast path and the estimate from the plain one, which fire a few spikes differently
    (stage 3 at 0.0826 beside 0.0831 on a polyp photo)."""
    import pytest

    from napari_medspike.analysis.maps import inspect_steps
    from napari_medspike.common import run_job

    model = load_model("spiking")
    maps, report = run_job(inspect_steps(model, read_image(SAMPLES / "kvasir.jpg"), 3))
    assert maps.stage_firing_rates == pytest.approx(report.stage_firing_rates, abs=1e-6)

