"""Fast inference paths give the same results as the plain ones (the benchmark reports speed)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from spikingjelly.activation_based import functional

from napari_medspike.models import fastpath
from napari_medspike.models.attention import SDSA
from napari_medspike.models.blocks import ConvBN, ResidualSpikingConv, SegmentationHead
from napari_medspike.models.neurons import make_lif


def _randomise_bn(module: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial eval-mode BN statistics and affine parameters."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return module.eval()


@pytest.mark.parametrize("expanded", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_lif_matches_spikingjelly(expanded, channels_last):
    node = make_lif()
    x = torch.randn(1 if expanded else 4, 2, 8, 16, 16) * 1.5
    if channels_last:
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, x.shape[:2])
    if expanded:  # direct encoding: the same input at every timestep
        x = x.expand(4, *x.shape[1:])
    with torch.no_grad():
        fast = node(x)
        v_fast = node.v.clone()
        fast_again = node(x)  # carried state (no reset in between)
    functional.reset_net(node)
    with torch.enable_grad():  # autograd on: spikingjelly's own kernel
        reference = node(x.clone().requires_grad_()).detach()
        v_ref = node.v.detach()
        reference_again = node(x.clone().requires_grad_()).detach()
    # the fused charge rounds differently in the last bit: spikes agree, potentials to 1e-6
    assert torch.equal(fast, reference) and torch.equal(fast_again, reference_again)
    torch.testing.assert_close(v_fast, v_ref, rtol=0, atol=1e-6)
    assert 0 < float(fast.mean()) < 1


def test_folded_batchnorm_matches_conv_then_bn():
    block = _randomise_bn(ConvBN(8, 16, 3, groups=8))
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        fast = block(x)
        with fastpath.disabled():
            plain = block(x)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spike_driven", [False, True])
@pytest.mark.parametrize("kind", ["lif", "ann"])
def test_merged_sdsa_tail_matches_the_plain_modules(kind, spike_driven):
    # The same arithmetic regrouped: equal to rounding (no spike sits that close to threshold
    # in this seeded example). Spike-driven: the norm on O folded into the attention product,
    # point-wise convs and sums as one dense conv, the output norm folded into the projection.
    torch.manual_seed(1)
    sdsa = _randomise_bn(SDSA(16, kind, timesteps=3 if kind == "lif" else 1, heads=4, spike_driven=spike_driven))
    x = torch.randn(3 if kind == "lif" else 1, 2, 16, 10, 12)
    with torch.no_grad():
        functional.reset_net(sdsa)
        fast = sdsa(x)
        functional.reset_net(sdsa)
        with fastpath.disabled():
            plain = sdsa(x)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)


def test_sdsa_with_one_norm_frozen_and_the_others_training_takes_the_plain_path():
    """The spike-driven tail chose its folded path by its output norm alone: frozen on its own (a
    fine-tune's frozen parts), the other two norms were folded with their running statistics in
    training mode, and stopped learning them (logits 0.69 off in a whole model)."""
    torch.manual_seed(2)
    sdsa = _randomise_bn(SDSA(16, "lif", timesteps=3, heads=4, spike_driven=True)).double().train()
    sdsa.norm.eval()
    before = sdsa.interaction_norm.running_mean.clone()
    x = torch.randn(3, 2, 16, 10, 12, dtype=torch.float64)
    with torch.no_grad():
        functional.reset_net(sdsa)
        fast = sdsa(x)
        assert not torch.equal(sdsa.interaction_norm.running_mean, before)  # a training norm learns
        sdsa.interaction_norm.running_mean.copy_(before)
        sdsa.interaction_norm.num_batches_tracked.zero_()
        functional.reset_net(sdsa)
        with fastpath.disabled():
            plain = sdsa(x)
    torch.testing.assert_close(fast, plain)


def test_time_averaged_decoder_matches_averaging_at_the_end():
    block = _randomise_bn(ResidualSpikingConv(8, "lif", timesteps=4))
    x = torch.randn(4, 2, 8, 10, 10)
    with torch.no_grad():
        functional.reset_net(block)
        early = block(x, average=True)
        functional.reset_net(block)
        late = block(x).mean(0, keepdim=True)
    assert early.shape == (1, 2, 8, 10, 10)
    torch.testing.assert_close(early, late, rtol=1e-5, atol=1e-5)


def test_spike_driven_head_averages_before_its_last_conv():
    head = _randomise_bn(SegmentationHead(8, "lif", timesteps=4, spike_driven=True))
    x = torch.randn(4, 2, 8, 10, 10)
    with torch.no_grad():
        functional.reset_net(head)
        fast = head(x)
        functional.reset_net(head)
        with fastpath.disabled():  # the 1x1 conv on every timestep's binary spikes
            plain = head(x)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["spike_driven", "reference"])
@pytest.mark.parametrize("arch", ["medspikeformer", "ann_twin", "medqkformer"])
def test_whole_model_fast_paths_match(arch, layout, calibrated):
    if arch == "medqkformer" and layout == "reference":
        pytest.skip("MedQKFormer has one layout")
    config = {"timesteps": 3} if arch == "medspikeformer" else {}
    if arch != "medqkformer":
        config["layout"] = layout
    model = calibrated(arch, **config)
    x = torch.rand(1, 3, 64, 48)

    def plain_fast_and_channels_last(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        m, inputs = model.to(dtype), x.to(dtype)
        with torch.inference_mode():
            with fastpath.disabled():
                plain = m(inputs)
            fast = m(inputs)
            channels_last = m.to(memory_format=torch.channels_last)(inputs.contiguous(memory_format=torch.channels_last))
        m.to(memory_format=torch.contiguous_format)
        return plain, fast, channels_last

    # In float64 the fast paths are the same arithmetic regrouped: equal to rounding (measured:
    # the spiking models to 1e-15, the ANN twin to 1e-6).
    plain, *outs = plain_fast_and_channels_last(torch.float64)
    for out in outs:
        torch.testing.assert_close(out, plain, rtol=0, atol=1e-5)
    # In float32 a spike can flip where a membrane potential sits within rounding of the
    # threshold, and an early flip moves a whole region (this seeded example does so for the
    # reference layout on one thread); the masks must still agree almost everywhere.
    plain, *outs = plain_fast_and_channels_last(torch.float32)
    for out in outs:
        assert ((out > 0) == (plain > 0)).float().mean() > 0.98
        assert (out - plain).abs().median() < 0.05


@pytest.mark.parametrize("expanded", [False, True])
def test_lean_lif_training_path_matches_spikingjelly_gradients(expanded):
    node = make_lif()
    base = torch.randn(1 if expanded else 4, 2, 6, 8, 8) * 1.5
    grad_out = torch.randn(4, 2, 6, 8, 8)
    results = []
    for lean in (True, False):
        x = base.clone().requires_grad_()
        functional.reset_net(node)
        with contextlib.nullcontext() if lean else fastpath.disabled():
            spikes = node(x.expand(4, *x.shape[1:]) if expanded else x)
        (spikes * grad_out).sum().backward()
        results.append((spikes.detach(), node.v.detach(), x.grad))
    (s1, v1, g1), (s2, v2, g2) = results
    assert torch.equal(s1, s2)
    torch.testing.assert_close(v1, v2, rtol=0, atol=1e-6)  # the fused charge's last-bit rounding
    assert 0 < float(s1.mean()) < 1
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)
    assert float(g1.abs().sum()) > 0


@pytest.mark.parametrize("kind, spike_driven", [("ann", False), ("lif", True)])
def test_merged_sdsa_tail_trains_like_the_plain_modules(kind, spike_driven):
    # spike-driven: the grouped point-wise convs and the two sums run as one dense conv in
    # training too (no spike of this seeded example sits within rounding of the threshold)
    torch.manual_seed(2)
    timesteps = 2 if kind == "lif" else 1
    sdsa = SDSA(8, kind, timesteps=timesteps, heads=2, spike_driven=spike_driven).train()
    x = torch.randn(timesteps, 2, 8, 6, 6)
    grads = []
    for context in (contextlib.nullcontext, fastpath.disabled):
        sdsa.zero_grad()
        functional.reset_net(sdsa)
        with context():
            out = sdsa(x)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in sdsa.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    # float32 rounding is relative to the largest gradients: biases in front of a train-mode norm
    # have an exact gradient of 0 and come out as noise of about 1e-5 whose size depends on the CPU
    scale = max(float(g.abs().max()) for g in grads[1].values())
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=2e-6 * scale, msg=name)


def test_gradient_checkpointing_gives_the_same_step():
    torch.manual_seed(3)
    from napari_medspike import create_model
    from napari_medspike.models import segmentation_loss

    x = torch.rand(2, 3, 32, 32)
    y = (torch.rand(2, 1, 32, 32) > 0.5).float()
    runs = []
    for checkpointing in (False, True):
        torch.manual_seed(4)
        model = create_model("medspikeformer", timesteps=2, widths=(8, 16, 16, 32), heads=2).train()
        model.gradient_checkpointing = checkpointing
        segmentation_loss(model(x), y).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        stats = {n: b.clone() for n, b in model.named_buffers()}
        runs.append((grads, stats))
    (g_plain, s_plain), (g_ckpt, s_ckpt) = runs
    assert g_plain.keys() == g_ckpt.keys() and len(g_plain) > 50
    for name in g_plain:
        torch.testing.assert_close(g_ckpt[name], g_plain[name], rtol=1e-4, atol=1e-6, msg=name)
    for name in s_plain:  # running statistics updated once, as without checkpointing
        torch.testing.assert_close(s_ckpt[name], s_plain[name], msg=name)


@pytest.mark.parametrize("timesteps", [1, 2, 4])
def test_time_mean_equals_the_mean_over_timesteps_in_any_layout(timesteps):
    from napari_medspike.models.blocks import time_mean

    # channels-last timesteps, as convolutions return them on the CPU
    x = torch.rand(timesteps, 2, 5, 6, 7).permute(0, 1, 4, 2, 3).contiguous().permute(0, 1, 3, 4, 2)
    x.requires_grad_(True)
    out = time_mean(x)
    torch.testing.assert_close(out, x.mean(0))
    spikes = (x.detach() > 0.5).float()
    assert torch.equal(time_mean(spikes), spikes.mean(0))  # exact for spikes
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / timesteps))


def test_interactions_stack_in_any_order_with_their_norm():
    from napari_medspike.models.attention import PAIRED_ORDER, decomposed_channel_attention, paired_channels

    g = torch.Generator().manual_seed(3)
    q, k, v = ((torch.rand(2, 1, 8, 6, 5, generator=g) < 0.3).float() for _ in range(3))
    scale, shift = torch.rand(32, generator=g) + 0.5, torch.randn(32, generator=g)
    plain = decomposed_channel_attention(q, k, v, heads=2, affine=(scale, shift))
    channels = paired_channels(8)
    assert channels.tolist() == [i * 8 + j for i in PAIRED_ORDER for j in range(8)]
    paired = decomposed_channel_attention(q, k, v, heads=2, affine=(scale[channels], shift[channels]), order=PAIRED_ORDER)
    torch.testing.assert_close(paired, plain[:, :, channels])
    assert not torch.allclose(paired, plain)  # the order really changed


@pytest.mark.parametrize("spike_driven", [False, True])
def test_split_qkv_gives_the_grouped_convs_spikes(spike_driven):
    torch.manual_seed(2)
    sdsa = _randomise_bn(SDSA(16, "lif", timesteps=4, heads=4, spike_driven=spike_driven))
    x = torch.randn(4, 2, 16, 10, 12)
    with torch.no_grad():
        functional.reset_net(sdsa)
        q, k, v = sdsa._split_qkv(x)
        functional.reset_net(sdsa)
        with fastpath.disabled():
            grouped = sdsa.qkv_neuron(torch.stack([sdsa.qkv(x[t]) for t in range(4)]))
    want = grouped.unflatten(2, (16, 3)).unbind(3)
    for got, ref in zip((q, k, v), want):
        assert torch.equal(got, ref)
    assert 0 < float(q.mean()) < 1
