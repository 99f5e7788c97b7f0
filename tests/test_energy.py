"""Energy accounting: synaptic ops, firing rates and the pJ estimate."""

from __future__ import annotations

import pytest
import torch

from napari_medspike.analysis.energy import (
    E_AC_PJ,
    E_MAC_PJ,
    estimate_energy,
    record_synaptic_ops,
)


def test_spike_input_costs_accumulates_at_its_rate():
    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    macs = 8 * 16 * 9 * 32 * 32
    with torch.no_grad(), record_synaptic_ops(levels=1) as layers:
        conv((torch.rand(1, 8, 32, 32) < 0.1).float())
        conv((torch.rand(1, 8, 32, 32) < 0.5).float())
        conv(torch.rand(1, 8, 32, 32))  # analog
    sparse, dense, analog = layers
    assert sparse.macs == dense.macs == analog.macs == macs
    assert sparse.input_rate == pytest.approx(0.1, abs=0.02)
    assert sparse.energy_pj == pytest.approx(sparse.input_rate * macs * E_AC_PJ)
    assert sparse.energy_pj < dense.energy_pj < analog.energy_pj
    assert analog.input_rate is None and analog.energy_pj == pytest.approx(macs * E_MAC_PJ)


def test_integer_spikes_cost_their_mean_count():
    conv = torch.nn.Conv2d(4, 4, 1)
    x = torch.randint(0, 5, (1, 4, 8, 8)).float() / 4
    with torch.no_grad(), record_synaptic_ops(levels=4) as layers:
        conv(x)
    assert layers[0].input_rate == pytest.approx(float((x * 4).mean()))


def test_sparser_activity_costs_less_energy(calibrated):
    model = calibrated("medspikeformer", timesteps=2)
    x = torch.rand(1, 3, 64, 64)
    busy = estimate_energy(model, x)
    for m in model.modules():
        if hasattr(m, "v_threshold"):
            m.v_threshold = 2.0  # fewer spikes everywhere
    quiet = estimate_energy(model, x)
    assert quiet.mean_firing_rate < busy.mean_firing_rate
    assert quiet.sops < busy.sops
    assert quiet.energy_pj < busy.energy_pj


def test_report_for_each_architecture(calibrated):
    for arch in ("medspikeformer", "medqkformer", "ann_twin"):
        model = calibrated(arch)
        report = estimate_energy(model, torch.rand(1, 3, 64, 64))
        assert report.layers and report.ann_macs > 0
        names = {layer.name for layer in report.layers}
        assert any(n.startswith("stages.0.") for n in names)
        if arch == "ann_twin":
            assert report.sops == 0 and report.energy_pj == pytest.approx(report.ann_energy_pj)
        else:
            assert report.sops > 0 and len(report.stage_firing_rates) == 4
            assert 0 < report.mean_firing_rate < 1
        assert "energy" in report.summary() and report.to_dict()["energy_pj"] == report.energy_pj


def test_spike_driven_layout_reads_analog_values_only_in_the_encoding_layer(calibrated):
    """After the first conv + BN on the image, every convolution and matrix product of the
    spike-driven MedSpikeFormer reads spikes; the paper's layout feeds many of them analog
    values at every timestep."""
    x = torch.rand(1, 3, 64, 64)
    spike_driven = estimate_energy(calibrated("medspikeformer", timesteps=2), x)
    analog = {layer.name for layer in spike_driven.layers if layer.input_rate is None}
    assert analog == {"stages.0.embed.0"}
    total = sum(layer.macs for layer in spike_driven.layers)
    assert spike_driven.analog_macs <= 0.05 * total
    reference = estimate_energy(calibrated("medspikeformer", timesteps=2, layout="reference"), x)
    assert reference.analog_macs > 0.3 * sum(layer.macs for layer in reference.layers)


def test_attention_heads_count_only_the_work_inside_each_head():
    """SDSA computes its heads as one block-diagonal C x C product; the energy accounting counts
    the d x d blocks (MODEL.md: O(N d²) per head), not the structural zeros between heads."""
    import torch

    from napari_medspike.analysis.energy import record_synaptic_ops
    from napari_medspike.models.attention import decomposed_channel_attention

    q, k, v = (torch.rand(2, 1, 16, 8, 8).round() for _ in range(3))
    work = {}
    for heads in (1, 4):
        with torch.no_grad(), record_synaptic_ops(1) as layers:
            decomposed_channel_attention(q, k, v, heads)
        work[heads] = sum(layer.macs for layer in layers if layer.op == "matmul")
    assert work[1] > 0 and work[4] * 4 == work[1], work


def test_the_first_estimate_imports_no_compiler():
    """torch wraps a dispatch mode to keep torch.compile out of it, and that wrapper imports
    torch._dynamo (about 1.5 s with the GIL held: napari froze at the first inspection). The
    recorder opts out; a fresh process shows whether it still does."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from napari_medspike import create_model\n"
        "from napari_medspike.analysis.energy import estimate_energy\n"
        "assert 'torch._dynamo' not in sys.modules, 'imported before the estimate'\n"
        "report = estimate_energy(create_model('medspikeformer', widths=(8, 16, 32, 64), timesteps=2).eval(),\n"
        "                         torch.rand(1, 3, 32, 32))\n"
        "assert report.sops > 0 or report.analog_macs > 0\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("arch", ["medspikeformer", "medqkformer"])
def test_the_encoding_layer_reads_analog_values_whatever_the_pixels(calibrated, arch):
    """The first convolution reads the image: analog by definition. A black frame or a binary
    picture holds only values a spike could take, and was costed as accumulates at their count
    (a black frame: no energy at all, and no analog MACs in the report)."""
    model = calibrated(arch)
    for image in (torch.zeros(1, 3, 64, 64), (torch.rand(1, 3, 64, 64) > 0.5).float(), torch.rand(1, 3, 64, 64)):
        report = estimate_energy(model, image)
        encoding = [layer for layer in report.layers if layer.name.startswith(model.encoding_layer)]
        assert encoding, [layer.name for layer in report.layers][:5]
        for layer in encoding:
            assert layer.input_rate is None and layer.energy_pj == pytest.approx(layer.macs * E_MAC_PJ)
        assert report.analog_macs >= sum(layer.macs for layer in encoding) > 0


def test_the_energy_estimate_leaves_a_model_in_training_mode_and_its_statistics_alone(calibrated):
    model = calibrated("medspikeformer", timesteps=2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    estimate_energy(model, torch.rand(1, 3, 64, 64))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_firing_rates_are_spikes_over_neurons_and_the_same_in_the_inspector(calibrated):
    """A stage's rate was the plain mean of its layers' rates: a small layer firing often
    counted as much as a large one (the default's stages read 0.18 for 0.11 of their neurons)."""
    from napari_medspike.analysis.energy import in_stage
    from napari_medspike.analysis.maps import inspect_stage, model_input
    from napari_medspike.models import fastpath

    model = calibrated("medqkformer")
    x = torch.rand(1, 3, 64, 64)
    report = estimate_energy(model, x)
    spikes = {}  # an independent count: every neuron output's spikes, from forward hooks
    hooks = [m.register_forward_hook(lambda m, i, out, n=name: spikes.__setitem__(n, out.detach().float()))
             for name, m in model.spiking_layers().items()]
    with torch.no_grad(), fastpath.disabled():  # (the network as specified, as the estimate runs it)
        model(x)
    for hook in hooks:
        hook.remove()
    total = sum(float(s.sum()) for s in spikes.values())
    assert report.mean_firing_rate == pytest.approx(total / sum(s.numel() for s in spikes.values()), rel=1e-4)
    stage0 = [n for n in spikes if in_stage(n, 0)]
    expected = sum(float(spikes[n].sum()) for n in stage0) / sum(spikes[n].numel() for n in stage0)
    assert report.stage_firing_rates[0] == pytest.approx(expected, rel=1e-4)
    assert abs(report.layer_mean_firing_rate - report.mean_firing_rate) > 1e-3  # the layers differ in size
    assert report.spikes_per_neuron_step == pytest.approx(report.mean_firing_rate * 4)
    # the inspector's figures follow the same rule (on the input it makes: the image resized)
    image = x[0].permute(1, 2, 0).numpy()
    with fastpath.disabled():  # (as the inspector runs it)
        maps = inspect_stage(model, image, 0, spike="q")
    seen = estimate_energy(model, model_input(image, model.input_size))
    assert maps.stage_firing_rates == pytest.approx(seen.stage_firing_rates, rel=1e-3)


def test_the_energy_estimate_counts_spikes_as_spikes_under_bf16_autocast(calibrated):
    """Under a caller's bf16 autocast a spike k/5 was no longer k/5 exactly: every product that
    reads it was counted as an analog MAC."""
    model = calibrated("medspikeformer", timesteps=2, spike_levels=5, threshold=0.4)  # as `spiking`
    x = torch.rand(1, 3, 64, 64)
    fp32 = estimate_energy(model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = estimate_energy(model, x)
    assert bf16.analog_macs == fp32.analog_macs and bf16.energy_pj == pytest.approx(fp32.energy_pj, rel=1e-3)
