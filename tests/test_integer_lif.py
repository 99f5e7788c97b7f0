"""Integer spikes in MedSpikeFormer: the integer LIF, the model option, its accounting and paths."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from spikingjelly.activation_based import functional

from napari_medspike import create_model
from napari_medspike.analysis.energy import estimate_energy
from napari_medspike.models import fastpath
from napari_medspike.models.medspikeformer import ANNTwin, RateTwin
from napari_medspike.models.neurons import IntegerLIF, LIFNode
from napari_medspike.models.sltt import sltt_forward


def _reference_counts(x: torch.Tensor, tau: float, threshold: float, levels: int) -> torch.Tensor:
    """The integer LIF written out element by element: charge, fire round(h/θ) clipped, subtract."""
    out = torch.empty_like(x)
    for i in range(x.shape[1]):
        v = 0.0
        for t in range(x.shape[0]):
            h = v + (float(x[t, i]) - v) / tau
            k = min(max(round(h / threshold), 0), levels)
            v = h - k * threshold
            out[t, i] = k
    return out


def test_integer_lif_fires_counts_and_subtracts_them():
    node = IntegerLIF(4)
    node.v_threshold = 0.5
    x = torch.tensor([[0.45, 1.0, 3.0, 9.0, -2.0], [0.45, 1.0, 3.0, 9.0, 2.0], [0.2, 0.0, 0.0, 0.0, 0.0]])
    out = node(x)
    functional.reset_net(node)
    counts = _reference_counts(x, 2.0, 0.5, 4)
    torch.testing.assert_close(out * 4, counts)
    assert counts[:, 3].tolist() == [4, 4, 4]  # saturates at D spikes per step
    assert counts[:, 0].tolist() == [0, 1, 0]  # below half a threshold the charge is kept, then fires
    assert set((out * 4).unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}


def test_integer_lif_gradient_is_straight_through_inside_the_firing_range():
    node = IntegerLIF(4)
    x = torch.tensor([[0.3, 2.0, 20.0, -5.0]], requires_grad=True)
    node(x).sum().backward()
    # one step from rest: out = round(x / (tau θ)) / D, gradient 1 / (tau θ D) while 0 <~ x / tau θ <~ D
    torch.testing.assert_close(x.grad, torch.tensor([[0.125, 0.125, 0.0, 0.0]]))


def test_integer_lif_refuses_bad_levels_and_sltt():
    with pytest.raises(ValueError, match="2 or more"):
        IntegerLIF(1)
    with pytest.raises(ValueError, match="spike_levels"):
        create_model("medspikeformer", spike_levels=0)
    model = create_model("medspikeformer", timesteps=2, spike_levels=4).train()
    with pytest.raises(ValueError, match="SLTT"):
        sltt_forward(model, torch.rand(1, 3, 32, 32), steps=[0])


def test_spike_levels_option_swaps_every_lif_and_round_trips():
    model = create_model("medspikeformer", timesteps=4, threshold=0.5, spike_levels=4)
    lifs = [m for m in model.modules() if isinstance(m, LIFNode)]
    assert lifs and all(isinstance(m, IntegerLIF) and m.max_spikes == 4 and m.v_threshold == 0.5 for m in lifs)
    assert model.spike_levels == 4 and model.config["spike_levels"] == 4
    again = create_model("medspikeformer", **model.config)
    assert again.spike_levels == 4
    again.load_state_dict(model.state_dict())  # the neurons hold no parameters: same state dict
    binary = create_model("medspikeformer", timesteps=4)
    assert binary.spike_levels == 1 and "spike_levels" not in binary.config
    assert set(binary.state_dict()) == set(model.state_dict())
    twin = ANNTwin(**ANNTwin.config_from(model))
    assert twin.spike_levels == 0 and not twin.spiking
    rate_twin = RateTwin(**RateTwin.config_from(model))  # the twins share the state dict
    rate_twin.load_state_dict(model.state_dict())


def test_integer_spike_model_reads_spikes_after_the_encoding_layer_and_reports_rates(calibrated):
    model = calibrated("medspikeformer", timesteps=2, threshold=0.5, spike_levels=4)
    x = torch.rand(1, 3, 64, 64)
    report = estimate_energy(model, x)
    analog = {layer.name for layer in report.layers if layer.input_rate is None}
    assert analog == {"stages.0.embed.0"}
    assert report.analog_macs <= 0.05 * sum(layer.macs for layer in report.layers)
    # a spike count of k costs k accumulates: the rates are mean counts, up to D per step
    assert max(layer.input_rate for layer in report.layers if layer.input_rate is not None) > 0
    assert 0 < report.mean_firing_rate < 1
    out = model.forward_intermediates(x)
    rates = out["firing_rates"]
    assert rates and all(r.shape == (2,) for r in rates.values())  # per real timestep
    v = out["stages"][0]["spikes"]["v"]
    assert v.shape[0] == 2 and set((v * 4).round().unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}


def test_integer_spike_model_fast_paths_match(calibrated):
    model = calibrated("medspikeformer", timesteps=3, threshold=0.5, spike_levels=4)
    x = torch.rand(1, 3, 64, 48)
    with torch.inference_mode():
        with fastpath.disabled():
            plain = model(x)
        fast = model(x)
    assert ((fast > 0) == (plain > 0)).float().mean() > 0.995
    assert (fast - plain).abs().median() < 1e-3


@pytest.mark.parametrize("threshold", [0.5, 1.0, 0.3])  # tau θ = 1 (one add per charge), 2, 0.6
@pytest.mark.parametrize("grad", [False, True])
def test_integer_lif_fast_path_matches_the_reference_loop(grad, threshold):
    torch.manual_seed(0)
    x = (torch.randn(4, 2, 8, 16, 16) * 1.5).requires_grad_(grad)
    node = IntegerLIF(4)
    node.v_threshold = threshold
    with torch.set_grad_enabled(grad):
        fast = node(x)
        v_fast = node.v
        functional.reset_net(node)
        with fastpath.disabled():
            plain = node(x)
        v_plain = node.v
    # the fast path charges in units of the threshold: a count can differ where h/θ sits within
    # rounding of a half
    assert (fast != plain).float().mean() < 1e-4
    torch.testing.assert_close(v_fast, v_plain.detach(), atol=0.5 + 1e-5, rtol=0)
    assert (v_fast - v_plain.detach()).abs().median() < 1e-6
    if grad:
        g = torch.randn_like(fast)
        (g_fast,) = torch.autograd.grad(fast, x, g)
        (g_plain,) = torch.autograd.grad(plain, x, g)
        torch.testing.assert_close(g_fast, g_plain, rtol=1e-5, atol=1e-6)


def test_inspector_maps_show_each_timestep_of_integer_spikes(calibrated):
    from napari_medspike.analysis.maps import inspect_stage

    model = calibrated("medspikeformer", timesteps=4, threshold=0.5, spike_levels=4)
    image = (torch.rand(48, 64, 3) * 255).byte().numpy()
    maps = inspect_stage(model, image, 0, spike="v", size=64)
    assert not maps.virtual and maps.timesteps == 4
    assert maps.spikes.shape[0] == 4 and maps.firing_rate.ndim == 2


@pytest.mark.parametrize("threshold", [0.5, 1 / 3])
def test_a_firing_rate_penalty_reaches_fused_neurons_as_autograd_would_send_it(threshold):
    """The fused backward adds the penalty's per-element gradient itself (IntegerLIF.rate_gradient);
    the reference loop gets it through autograd. Both give the same input gradient, over budget
    and under it (where the penalty is zero and changes nothing)."""
    from napari_medspike.models.losses import FiringRatePenalty

    torch.manual_seed(0)
    x = (torch.randn(4, 2, 8, 16, 16) * 1.5).requires_grad_(True)
    g = torch.randn(4, 2, 8, 16, 16)
    net = torch.nn.Sequential(IntegerLIF(6), IntegerLIF(4))
    for node in net:
        node.v_threshold = threshold
    results = {}
    for max_rate in (0.0, 0.99):
        for fast in (True, False):
            functional.reset_net(net)
            with FiringRatePenalty(net, max_rate, weight=3.0) as budget, (nullcontext() if fast else fastpath.disabled()):
                out = net(x)
                penalty, rate = budget()
                assert all(node.fused_backward == fast for node in net)
                (grad,) = torch.autograd.grad((out * g).sum() + penalty, x)
            results[max_rate, fast] = (float(penalty), rate, grad)
    for max_rate in (0.0, 0.99):
        (p_fast, r_fast, g_fast), (p_plain, r_plain, g_plain) = results[max_rate, True], results[max_rate, False]
        assert r_fast == pytest.approx(r_plain, abs=1e-4)
        assert p_fast == pytest.approx(3.0 * max(r_fast - max_rate, 0.0))
        torch.testing.assert_close(g_fast, g_plain, rtol=1e-4, atol=1e-6)
    assert results[0.0, True][0] > 0 and results[0.99, True][0] == 0
    assert not torch.allclose(results[0.0, True][2], results[0.99, True][2])  # over budget: a push down
    assert all(node.rate_gradient == 0.0 for node in net)  # left as found


def test_a_firing_rate_penalty_checks_its_arguments():
    from napari_medspike.models.losses import FiringRatePenalty

    net = torch.nn.Sequential(IntegerLIF(4))
    with pytest.raises(ValueError, match="lies in"):
        FiringRatePenalty(net, 1.5)
    with pytest.raises(ValueError, match="positive"):
        FiringRatePenalty(net, 0.1, weight=0.0)
    with pytest.raises(ValueError, match="no spiking neurons"):
        FiringRatePenalty(torch.nn.Conv2d(1, 1, 1), 0.1)
    with FiringRatePenalty(net, 0.1) as budget, pytest.raises(RuntimeError, match="forward pass"):
        budget()


def test_virtual_timesteps_refuse_multi_step_spikes():
    """Given a multi-step [T, ...] tensor they kept the first timestep without a word."""
    import pytest
    import torch

    from napari_medspike.analysis.maps import virtual_timesteps

    assert virtual_timesteps(torch.tensor([[0.0, 0.5, 1.0]]), 2).tolist() == [[0, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="single-step"):
        virtual_timesteps(torch.rand(4, 3), 2)
