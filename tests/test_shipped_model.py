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


MODALITY_SAMPLES = {"dermoscopy": "ph2", "breast-ultrasound": "busi"}


def test_shipped_models_stay_light_and_describe_themselves():
    models = list_models()
    assert sum(p.stat().st_size for p in models.values()) < 60e6
    for name, path in models.items():
        card = model_card_path(path).read_text()
        assert "Validation at the original image resolution" in card and "licence" in card.lower(), name
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


def test_the_spiking_models_weights_carry_over_to_its_rate_twin_not_its_gelu_twin():
    """The rate twin (LIF firing rates as activations) computes nearly what the SNN computes
    with the same weights; the GELU twin does not (training/README.md)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from napari_medspike import create_model
    from napari_medspike.models.registry import model_class

    snn = load_model("spiking").float().eval()
    size = snn.info.input_size
    image = torch.from_numpy(np.ascontiguousarray(read_image(SAMPLES / "kvasir.jpg"))).permute(2, 0, 1)[None]
    x = F.interpolate(image.float(), size=(size, size), mode="area")
    masks = {}
    for arch in ("rate_twin", "ann_twin"):
        twin = create_model(arch, **model_class(arch).config_from(snn)).eval()
        twin.load_state_dict(snn.state_dict())
        with torch.inference_mode():
            masks[arch] = (twin(x) > 0).numpy()
    with torch.inference_mode():
        spiking = (snn(x) > 0).numpy()
    agree = {arch: binary_metrics(mask, spiking)["dice"] for arch, mask in masks.items()}
    assert agree["rate_twin"] > 0.5 and agree["rate_twin"] > agree["ann_twin"] + 0.3, agree
