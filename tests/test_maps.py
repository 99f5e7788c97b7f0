"""The inspector's interaction maps as sum, shares and φ: the same information, nothing added."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medspike.analysis.maps import DECOMPOSED, decompose_interactions, display_limits


def rebuilt(parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    total, p, k, phi = (parts[name].astype(np.float64) for name in DECOMPOSED)
    r = phi * np.sqrt(p * (1 - p) * k * (1 - k))
    return {"AA": total * (p * k + r), "AI": total * (p * (1 - k) - r),
            "IA": total * ((1 - p) * k - r), "II": total * ((1 - p) * (1 - k) + r)}


def test_the_four_maps_follow_exactly_from_sum_shares_and_phi():
    rng = np.random.default_rng(0)
    maps = {name: rng.random((3, 8, 8)).astype(np.float32) * 10 for name in ("AA", "AI", "IA", "II")}
    parts = decompose_interactions(maps)
    for name, array in rebuilt(parts).items():
        np.testing.assert_allclose(array, maps[name], rtol=1e-4, atol=1e-4)
    assert np.all(np.abs(parts["Q–K φ"]) <= 1)


def test_phi_is_zero_for_independent_queries_and_keys_and_signed_otherwise():
    p, k, total = 0.2, 0.7, 5.0
    independent = {"AA": total * p * k, "AI": total * p * (1 - k), "IA": total * (1 - p) * k,
                   "II": total * (1 - p) * (1 - k)}
    parts = decompose_interactions({n: np.full((2, 2), v) for n, v in independent.items()})
    np.testing.assert_allclose(parts["Q–K φ"], 0, atol=1e-6)
    np.testing.assert_allclose(parts["Q-active share"], p, atol=1e-6)
    np.testing.assert_allclose(parts["K-active share"], k, atol=1e-6)
    together = dict(independent, AA=independent["AA"] + 1, II=independent["II"] + 1)  # active meet active
    apart = dict(independent, AI=independent["AI"] + 1, IA=independent["IA"] + 1)
    assert decompose_interactions({n: np.full(1, v) for n, v in together.items()})["Q–K φ"][0] > 0.1
    assert decompose_interactions({n: np.full(1, v) for n, v in apart.items()})["Q–K φ"][0] < -0.1


def test_shares_are_undefined_where_nothing_arrives():
    maps = {name: np.array([[0.0, 1.0]]) for name in ("AA", "AI", "IA", "II")}
    parts = decompose_interactions(maps)
    assert parts["sum"][0, 0] == 0 and np.isnan(parts["Q-active share"][0, 0]) and np.isnan(parts["Q–K φ"][0, 0])
    assert parts["Q-active share"][0, 1] == 0.5 and parts["Q–K φ"][0, 1] == 0


def test_map_contrast_ignores_outliers_centres_signed_maps_and_is_never_empty():
    rng = np.random.default_rng(0)
    counts = rng.uniform(10, 20, (64, 64))
    counts[0, 0] = 1e6  # one hot pixel must not wash the map out
    (lo, hi), signed = display_limits("AA", counts)
    assert not signed and 10 <= lo < hi <= 20
    phi = rng.uniform(0.1, 0.3, (64, 64))  # φ: centred on 0 even where all of it is positive
    (lo, hi), signed = display_limits(DECOMPOSED[3], phi)
    assert signed and lo == -hi and 0.29 <= hi <= 0.3
    (lo, hi), signed = display_limits("II", counts - 15)  # values on both sides of 0
    assert signed and lo == -hi
    share = np.full((8, 8), np.nan)
    share[0, :4] = 0.5  # a share defined in four pixels, all alike
    (lo, hi), signed = display_limits("Q-active share", share)
    assert lo == 0.5 < hi and not signed
    assert display_limits("AA", np.full((4, 4), np.nan))[0] == (0.0, 1.0)


def test_inspecting_leaves_a_model_in_training_mode_and_its_statistics_alone(calibrated):
    """A model mid-training (or fresh from ``create_model``) was inspected in train mode: the
    maps came from batch statistics and one inspection rewrote most running means."""
    import torch

    from napari_medspike.analysis.maps import inspect_stage

    image = (np.random.default_rng(0).random((80, 96, 3)) * 255).astype(np.uint8)
    model = calibrated("medspikeformer", timesteps=2)
    in_eval = inspect_stage(model, image, 1, size=64)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    in_train = inspect_stage(model, image, 1, size=64)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    np.testing.assert_array_equal(in_train.spikes, in_eval.spikes)


def test_the_inspected_pass_sees_the_input_that_segment_segments(calibrated):
    """A large image is box-averaged before its resize when Segment segments it: the inspector
    resized it directly, so the network it showed saw another input (2 % of the mask's pixels
    differed on a Kvasir-SEG photo)."""
    from napari_medspike.analysis.maps import model_input
    from napari_medspike.inference.predictor import predict

    model = calibrated("medspikeformer", timesteps=2)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    rng = np.random.default_rng(1)
    for shape in ((1100, 1210, 3), (90, 70, 3)):  # box-averaged twice first at 256; resized directly
        image = (rng.random(shape) * 255).astype(np.uint8)
        seen.clear()
        predict(model, image, flips=False, precision="fp32")
        assert len(seen) == 1
        np.testing.assert_allclose(model_input(image, model.input_size).numpy(), seen[0].numpy(), atol=1e-6)


def test_an_inspection_gives_its_recording_memory_back_in_a_process_tuned_for_inference(calibrated, monkeypatch):
    """The allocator tuned for inference kept an inspection's recording tensors: 0.8 GB more
    resident after one inspection of the shipped spiking model in napari, never given back."""
    from napari_medspike import runtime
    from napari_medspike.analysis.maps import inspect_steps
    from napari_medspike.common import run_job

    trims = []
    monkeypatch.setattr(runtime, "_malloc_trim", lambda: trims.append(1) or True)
    model = calibrated("medspikeformer", timesteps=2)
    image = (np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)
    runtime.tune_malloc()
    try:
        run_job(inspect_steps(model, image, 0))
    finally:
        runtime.reset_malloc()
    assert len(trims) == (0 if runtime._opted_out() else 1)


def test_a_large_images_maps_lie_over_the_part_its_input_stands_for(calibrated):
    """A large image is box-averaged before the resize, its last partial boxes dropped; the maps
    were stretched over the whole image, as Segment's mask was (its far edge drifted)."""
    from napari_medspike.analysis.maps import inspect_stage
    from napari_medspike.data.io import box_shrink

    model = calibrated("medspikeformer", timesteps=2)
    image = (np.random.default_rng(0).random((1031, 1540, 3)) * 255).astype(np.uint8)
    size = model.input_size
    assert box_shrink(1031, 1540, size) == 2  # boxes of 2: the last row (1031) is dropped, no column
    maps = inspect_stage(model, image, 0)
    padded = -(-size // 16) * 16
    map_h, map_w = maps.firing_rate.shape[-2:]
    assert maps.scale[0] == pytest.approx(padded / map_h * 1030 / size)
    assert maps.scale[1] == pytest.approx(padded / map_w * 1540 / size)


def test_channel_reductions_show_what_they_say():
    """Only the layer's name was checked: channel 3 shown as channel 0, or as the maximum,
    passed as well."""
    from napari_medspike.analysis.maps import reduce_channels

    spikes = (torch.rand(2, 1, 6, 5, 4) > 0.5).float()  # [T, B, C, h, w]
    np.testing.assert_array_equal(reduce_channels(spikes, "channel", 3), spikes[:, 0, 3].numpy())
    np.testing.assert_array_equal(reduce_channels(spikes, "max"), spikes[:, 0].amax(1).numpy())
    np.testing.assert_allclose(reduce_channels(spikes, "mean"), spikes[:, 0].mean(1).numpy())
    with pytest.raises(ValueError, match="out of range"):
        reduce_channels(spikes, "channel", 6)
