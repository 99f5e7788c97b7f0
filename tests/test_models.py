"""The three architectures: shapes, spikes, determinism, gradients, input checks, sizes."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_medspike import InputError, create_model
from napari_medspike.models import INTERACTIONS, TRAINABLE_ARCHITECTURES

ARCHS = sorted(TRAINABLE_ARCHITECTURES)  # (a routed model: tests/test_routing.py)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [(64, 64), (48, 80), (50, 70)])
def test_logits_have_input_shape(arch: str, size: tuple[int, int]) -> None:
    model = create_model(arch).eval()
    x = torch.rand(2, 3, *size)
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (2, 1, *size)
    assert torch.isfinite(y).all()


def test_padding_does_not_crop_the_image(calibrated) -> None:
    # 50x70 is padded to 64x80 inside; the output covers every input pixel and equals the
    # corresponding crop of a forward on the explicitly padded image.
    model = calibrated("medqkformer")
    x = torch.rand(1, 3, 50, 70)
    padded = torch.nn.functional.pad(x, (0, 10, 0, 14), mode="replicate")
    with torch.inference_mode():
        y, y_pad = model(x), model(padded)
    assert y.shape[-2:] == (50, 70)
    torch.testing.assert_close(y, y_pad[..., :50, :70])


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_intermediates_layout(arch: str, calibrated) -> None:
    model = calibrated(arch)
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        out = model.forward_intermediates(x)
        plain = model(x)
    torch.testing.assert_close(out["logits"], plain)
    assert len(out["stages"]) == 4
    t = model.timesteps
    for i, stage in enumerate(out["stages"]):
        h, w = 64 >> i, 96 >> i
        assert set(stage["interactions"]) == set(INTERACTIONS)
        for tensor in (*stage["spikes"].values(), *stage["interactions"].values()):
            assert tensor.ndim == 5 and tensor.shape[0] == t and tensor.shape[1] == 1
            assert tensor.shape[-2:] == (h, w)
        for tensor in stage["spikes"].values():  # (the inspector's channel box offers these)
            assert tensor.shape[2] == model.recorded_channels(i)


def test_medspikeformer_spikes_are_binary_with_time_axis(calibrated) -> None:
    model = calibrated("medspikeformer", timesteps=3)
    with torch.inference_mode():
        out = model.forward_intermediates(torch.rand(1, 3, 64, 64))
    fired = 0.0
    for stage in out["stages"]:
        for name in ("q", "k", "v"):
            s = stage["spikes"][name]
            assert s.shape[0] == 3
            assert set(s.unique().tolist()) <= {0.0, 1.0}
            fired += float(s.sum())
    assert fired > 0, "a calibrated network should fire"
    # Spike trains differ across timesteps (the LIF integrates), they are not T copies.
    v = out["stages"][0]["spikes"]["v"]
    assert not torch.equal(v[0], v[-1])


def test_medqkformer_spikes_are_normalised_integers(calibrated) -> None:
    model = calibrated("medqkformer")
    with torch.inference_mode():
        out = model.forward_intermediates(torch.rand(1, 3, 64, 64))
    q = out["stages"][0]["spikes"]["q"]
    assert set((q * 4).unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    assert len(q.unique()) > 2


def test_plain_forward_records_nothing() -> None:
    model = create_model("medspikeformer", widths=(8, 16, 32, 64), timesteps=2).eval()
    with torch.inference_mode():
        model(torch.rand(1, 3, 32, 32))
    assert all(m.record is None for m in model.attention_modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_identical_forwards_are_identical(arch: str, calibrated) -> None:
    model = calibrated(arch)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        a, b = model(x), model(x)
    assert torch.equal(a, b)


def test_state_would_leak_without_reset(calibrated) -> None:
    # Guards the test above: LIF membranes persist between calls unless reset_net runs.
    from napari_medspike.models.medspikeformer import MedSpikeFormer

    model = calibrated("medspikeformer")
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        padded, _ = model._prepare(x)
        a = model._forward(padded)
        b = model._forward(padded)  # no reset in between
    assert isinstance(model, MedSpikeFormer)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_parameter_gets_a_finite_gradient(arch: str) -> None:
    from napari_medspike import segmentation_loss
    from napari_medspike.models.losses import deep_supervision_loss

    options = {"side_heads": True} if arch == "medqkformer" else {}
    model = create_model(arch, widths=(8, 16, 32, 64), **options).train()
    x = torch.rand(2, 3, 32, 32)
    target = (torch.rand(2, 1, 32, 32) > 0.5).float()
    logits, sides = model(x, side_outputs=True)
    loss = segmentation_loss(logits, target) + deep_supervision_loss(sides, target)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    # The surrogate carries signal into the first layer through all the spiking blocks.
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.grad.abs().sum() > 0


def test_medqkformer_size_matches_reference() -> None:
    model = create_model("medqkformer").eval()
    assert sum(p.numel() for p in model.parameters()) == 7_429_345
    with torch.inference_mode(False), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, 256, 256))
    conv_macs = counter.get_flop_counts()["Global"][torch.ops.aten.convolution] / 2
    assert conv_macs == pytest.approx(18.5e9, rel=0.02)


def test_ann_twin_shares_the_snn_parameters() -> None:
    snn = create_model("medspikeformer", widths=(8, 16, 32, 64), timesteps=2)
    twin = create_model("ann_twin", widths=(8, 16, 32, 64))
    snn.load_state_dict(twin.state_dict(), strict=True)
    assert twin.timesteps == 1 and not twin.spiking


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.rand(3, 64, 64), "4D tensor.*x\\[None\\]"),
        (torch.rand(1, 1, 64, 64), "3 channels.*grey"),
        (torch.rand(1, 4, 64, 64), "alpha"),
        (torch.rand(1, 64, 64, 3), "channels-last"),
        (torch.randint(0, 255, (1, 3, 64, 64)), "floating-point"),
        (torch.rand(1, 3, 8, 64), "too small"),
        (torch.full((1, 3, 64, 64), float("nan")), "NaN"),
        (torch.rand(1, 3, 64, 64).numpy(), "torch.Tensor"),
    ],
)
def test_bad_inputs_raise_helpful_errors(bad, match: str) -> None:
    model = create_model("medqkformer", widths=(8, 16, 32, 64))
    with pytest.raises(InputError, match=match):
        model(bad)


def test_create_model_errors() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        create_model("unet")
    with pytest.raises(TypeError, match="bad config for medqkformer"):
        create_model("medqkformer", timesteps=4)
    with pytest.raises(ValueError, match="divisible"):
        create_model("medspikeformer", widths=(6, 16, 32, 64))
    assert create_model("MedSpikeFormer", timesteps=2).config["timesteps"] == 2


@pytest.mark.parametrize("layout", ["spike_driven", "reference"])
def test_firing_rates_per_layer_and_timestep(layout, calibrated) -> None:
    model = calibrated("medspikeformer", timesteps=3, layout=layout)
    with torch.inference_mode():
        rates = model.forward_intermediates(torch.rand(1, 3, 64, 64))["firing_rates"]
    assert set(rates) == set(model.spiking_layers())
    assert all(r.shape == (3,) and bool(((r >= 0) & (r <= 1)).all()) for r in rates.values())
    assert any(float(r.max()) > 0 for r in rates.values())
    assert "stages.0.attention.qkv_neuron.node" in rates
    # the spike-driven layout fires before every conv: more spiking layers than the paper's
    assert ("stages.1.embed_neuron.node" in rates) == (layout == "spike_driven")


def test_ann_twin_reports_no_firing_rates(calibrated) -> None:
    with torch.inference_mode():
        out = calibrated("ann_twin").forward_intermediates(torch.rand(1, 3, 32, 32))
    assert out["firing_rates"] == {}


def test_layout_survives_a_checkpoint_and_old_checkpoints_mean_reference(tmp_path) -> None:
    from napari_medspike.engine.checkpoint import load_model, save_checkpoint

    for layout in ("spike_driven", "reference"):
        model = create_model("medspikeformer", widths=(8, 16, 32, 64), timesteps=2, layout=layout)
        path = save_checkpoint(model, tmp_path / f"{layout}.safetensors", input_size=64)
        assert load_model(path).layout == layout
    # a checkpoint written before layouts existed: its config has no "layout" key
    from safetensors.torch import load_file, save_file

    legacy = create_model("medspikeformer", widths=(8, 16, 32, 64), timesteps=2, layout="reference")
    meta = {"format": 1, "arch": "medspikeformer", "config": {"in_channels": 3, "widths": [8, 16, 32, 64],
            "timesteps": 2, "heads": 4}, "input_size": 64}
    import json

    save_file(legacy.state_dict(), str(tmp_path / "old.safetensors"), metadata={"medspike": json.dumps(meta)})
    assert load_model(tmp_path / "old.safetensors").layout == "reference"
    with pytest.raises(ValueError, match="unknown layout"):
        create_model("medspikeformer", layout="sideways")


def test_overlapping_jobs_on_one_model_do_not_corrupt_each_other(calibrated) -> None:
    """Segment and the inspector run in worker threads on the same model: LIF membranes and the
    recording hooks live on its modules, so overlapping passes must take turns; the fast-path
    switch that the energy estimate turns off is per thread."""
    import threading

    from napari_medspike.models import fastpath

    model = calibrated("medspikeformer", timesteps=3)
    xs = [torch.rand(1, 3, 64, 64) for _ in range(4)]
    with torch.inference_mode():
        alone = [model(x) for x in xs]
        alone_inter = model.forward_intermediates(xs[0])["stages"][0]["spikes"]["q"]
    results: dict[int, list] = {}
    seen_fast: list[bool] = []

    def segment(i: int) -> None:
        with torch.inference_mode():
            results[i] = [model(x) for x in xs for _ in range(2)][::2]
            seen_fast.append(fastpath.enabled())

    def inspect() -> None:
        with torch.inference_mode(), fastpath.disabled():
            results[-1] = [model.forward_intermediates(xs[0])["stages"][0]["spikes"]["q"] for _ in range(3)]

    threads = [threading.Thread(target=segment, args=(i,)) for i in range(2)] + [threading.Thread(target=inspect)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        for got, want in zip(results[i], alone):
            assert ((got > 0) == (want > 0)).float().mean() > 0.995 and (got - want).abs().median() < 1e-3
    for q in results[-1]:
        assert q.shape == alone_inter.shape and (q != alone_inter).float().mean() < 0.005
    assert seen_fast == [True, True]  # the inspector's switch did not leak into the other threads
    assert fastpath.enabled()


def test_threshold_is_a_config_option_that_reaches_every_lif() -> None:
    from napari_medspike.models.neurons import LIFNode

    model = create_model("medspikeformer", widths=(8, 16, 32, 64), timesteps=2, threshold=0.5)
    lifs = [m for m in model.modules() if isinstance(m, LIFNode)]
    assert lifs and all(m.v_threshold == 0.5 for m in lifs)
    assert model.config["threshold"] == 0.5 and "threshold" not in create_model("ann_twin").config
    assert create_model("medspikeformer", **model.config).threshold == 0.5
    with pytest.raises(ValueError, match="threshold must be positive"):
        create_model("medspikeformer", threshold=0)


def test_model_behaviour_is_declared_on_the_classes():
    """What the trainer and the energy estimate need from an architecture, asked of the model."""
    snn = create_model("medspikeformer", widths=(8, 16, 32, 64), timesteps=2)
    twin = snn.dense_reference()
    assert twin.arch == "ann_twin" and twin.config == {k: v for k, v in snn.config.items() if k not in ("timesteps", "threshold")}
    assert twin.dense_reference() is twin
    qk = create_model("medqkformer", widths=(8, 16, 32, 64))
    assert qk.dense_reference() is qk
    assert snn.supports_alignment and not twin.supports_alignment and not qk.supports_alignment
    assert snn.default_lr == 1e-4 and twin.default_lr == qk.default_lr == 1e-3  # MODEL.md
    from napari_medspike.models.registry import model_class

    assert model_class("medspikeformer").config_from(twin)["timesteps"] == 4  # an SNN from a trained twin
    assert "timesteps" not in model_class("ann_twin").config_from(snn)


def test_every_model_carries_typed_metadata_that_checkpoints_round_trip(tmp_path):
    import dataclasses

    from napari_medspike import load_model, save_checkpoint
    from napari_medspike.models.info import ModelInfo

    model = create_model("medspikeformer", widths=(8, 16, 32, 64), timesteps=2)
    assert model.info == ModelInfo(arch="medspikeformer", config=model.config, input_size=256)  # untrained
    path = save_checkpoint(model, tmp_path / "m.safetensors", input_size=64, inference={"flips": True},
                           training={"epochs_run": 3}, note="kept")
    loaded = load_model(path)
    info = loaded.info
    assert (info.arch, info.config, info.input_size, info.recommended_flips, info.training, info.path) == \
        ("medspikeformer", model.config, 64, True, {"epochs_run": 3}, str(path))
    assert info.extra == {"note": "kept"} and loaded.input_size == 64
    assert loaded.checkpoint_info["note"] == "kept" and loaded.checkpoint_info["path"] == str(path)  # the old dict view
    # a derived model: a replaced copy, saved again, keeps what it was not told to change
    loaded.info = dataclasses.replace(info, input_size=96)
    again = load_model(save_checkpoint(loaded, tmp_path / "d.safetensors", inference=info.inference))
    assert again.info.input_size == 96 and again.info.recommended_flips


def test_what_a_derived_checkpoint_keeps_is_one_rule():
    from napari_medspike.models.info import ModelInfo

    info = ModelInfo.from_metadata({"format": 1, "arch": "medqkformer", "config": {}, "input_size": 128,
                                    "storage_dtype": "float16", "inference": {"flips": True},
                                    "training": {"epochs_run": 2}, "metrics": {"val_dice": 0.5}, "note": "x"})
    # a copy of the same weights keeps its record, not what describes the file or architecture
    assert info.record() == {"input_size": 128, "inference": {"flips": True}, "training": {"epochs_run": 2},
                             "metrics": {"val_dice": 0.5}, "note": "x"}
    # a model trained from it keeps only the recommended inference settings
    assert info.inherited() == {"inference": {"flips": True}}


def test_lif_rate_is_a_fresh_lifs_firing_rate_under_constant_input() -> None:
    from napari_medspike.models import fastpath
    from napari_medspike.models.neurons import LIFRate, lif_rate_window, make_lif

    x = torch.rand(1, 20000, generator=torch.Generator().manual_seed(0)) * 3 - 1
    rate = LIFRate(timesteps=4, threshold=0.5)(x)
    lif = make_lif()
    lif.v_threshold = 0.5
    with fastpath.disabled(), torch.no_grad():  # spikingjelly's own multi-step LIF
        spikes = lif(x.expand(4, -1).contiguous())
    torch.testing.assert_close(rate[0], spikes.mean(0))
    low, high = lif_rate_window(4, 2.0, 0.5)
    assert (low, high) == pytest.approx((0.5 / (1 - 0.5**4), 1.0))
    assert rate[x < low].eq(0).all() and rate[x >= high].eq(1).all() and rate[(x > low) & (x < high)].gt(0).all()
    assert set(rate.unique().tolist()) <= {0.0, 0.25, 0.5, 0.75, 1.0}


def test_lif_rate_gradient_spans_the_rise_of_the_rate() -> None:
    from napari_medspike.models.neurons import LIFRate

    x = torch.tensor([-1.0, 0.0, 0.55, 0.75, 0.95, 1.5, 2.0], requires_grad=True)
    LIFRate(timesteps=4, threshold=0.5)(x).sum().backward()
    g = x.grad
    assert (g > 0).all()  # a smooth surrogate: no dead input
    assert g[3] == g.max() and g[2] > 10 * g[0] and g[4] > 10 * g[6]


def test_the_ramp_is_the_clipped_line_through_the_rate_corners_with_its_exact_gradient() -> None:
    from napari_medspike.models.neurons import LIFRate, lif_rate_window

    low, high = lif_rate_window(4, 2.0, 0.5)
    x = torch.tensor([-1.0, low, 0.5 * (low + high), high, 2.0], requires_grad=True)
    ramp = LIFRate(timesteps=4, threshold=0.5, relaxed=True)
    y = ramp(x)
    torch.testing.assert_close(y.detach(), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    y[2].backward()
    assert x.grad[2] == pytest.approx(1.0 / (high - low)) and x.grad[0] == 0 and x.grad[4] == 0
    rate = LIFRate(timesteps=4, threshold=0.5)(torch.linspace(-1, 2, 301))
    # the staircase never lies above the line through its corners by more than one step
    assert (rate - ramp(torch.linspace(-1, 2, 301))).max() <= 0.5


def test_a_ramp_rate_twin_round_trips_and_hands_its_weights_to_the_snn() -> None:
    from napari_medspike.models.neurons import LIFRate
    from napari_medspike.models.registry import model_class

    twin = create_model("rate_twin", widths=(8, 16, 32, 64), threshold=0.5, activation="ramp")
    assert all(m.relaxed for m in twin.modules() if isinstance(m, LIFRate))
    assert create_model("rate_twin", **twin.config).config == twin.config
    snn = create_model("medspikeformer", **model_class("medspikeformer").config_from(twin))
    snn.load_state_dict(twin.state_dict(), strict=True)
    assert snn.threshold == 0.5 and "activation" not in snn.config
    gelu = create_model("ann_twin", **model_class("ann_twin").config_from(twin))
    gelu.load_state_dict(twin.state_dict(), strict=True)
    with pytest.raises(ValueError, match="activation"):
        create_model("rate_twin", activation="relu")


def test_rate_twin_shares_the_snn_parameters_and_neuron_settings() -> None:
    from napari_medspike.models.neurons import LIFRate
    from napari_medspike.models.registry import model_class

    snn = create_model("medspikeformer", widths=(8, 16, 32, 64), timesteps=3, threshold=0.5)
    twin = create_model("rate_twin", **model_class("rate_twin").config_from(snn))
    twin.load_state_dict(snn.state_dict(), strict=True)
    assert twin.timesteps == 1 and not twin.spiking
    rates = [m for m in twin.modules() if isinstance(m, LIFRate)]
    assert rates and all(m.timesteps == 3 and m.threshold == 0.5 for m in rates)
    assert not any(isinstance(m, torch.nn.GELU) for m in twin.modules())
    back = create_model("medspikeformer", **model_class("medspikeformer").config_from(twin))
    assert back.config == snn.config


def test_medqkformer_side_heads_are_for_training_only() -> None:
    plain = create_model("medqkformer", widths=(8, 16, 32, 64)).eval()
    sided = create_model("medqkformer", widths=(8, 16, 32, 64), side_heads=True).eval()
    missing, unexpected = sided.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == [f"side_heads.{i}.{p}" for i in range(3) for p in ("bias", "weight")] and not unexpected
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        logits, sides = sided(x, side_outputs=True)
        assert torch.equal(logits, plain(x)) and torch.equal(sided(x), logits)  # same prediction
    assert [tuple(s.shape[-2:]) for s in sides] == [(6, 8), (12, 16), (24, 32)]
    with pytest.raises(ValueError, match="no side heads"):
        plain(x, side_outputs=True)
    with pytest.raises(ValueError, match="multiples of 16"):
        sided(torch.rand(1, 3, 40, 40), side_outputs=True)


@pytest.mark.parametrize("options, words", [
    ({"heads": 0}, "heads must be a whole number"),
    ({"timesteps": 2.5}, "timesteps must be a whole number"),
    ({"in_channels": 0}, "in_channels must be a whole number"),
    ({"widths": (8, 16, 32, 64), "heads": 3}, r"heads=3.*divisible"),
])
def test_options_no_model_can_have_are_refused_by_name(options, words):
    from napari_medspike.models.registry import ModelConfigError

    with pytest.raises(ModelConfigError, match=words):
        create_model("medspikeformer", **options)


def test_a_checkpoint_cannot_be_told_another_architecture_and_its_info_prints_short(tmp_path):
    from napari_medspike import load_model, save_checkpoint

    model = create_model("medqkformer", widths=(8, 16, 32, 64))
    with pytest.raises(ValueError, match="arch describe the model itself"):
        save_checkpoint(model, tmp_path / "m.safetensors", arch="medspikeformer")
    assert len(repr(load_model("default").info)) < 3000  # its style vectors are not printed
