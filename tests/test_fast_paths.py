"""Fast inference paths give the same results as the plain ones."""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import functional

from napari_medspike.models.neurons import LIFNode, make_lif


@pytest.mark.parametrize("expanded", [False, True])
def test_fast_lif_matches_spikingjelly(expanded):
    node = make_lif()
    x = torch.randn(1 if expanded else 4, 2, 8, 16, 16) * 1.5
    if expanded:  # direct encoding: the same input at every timestep
        x = x.expand(4, *x.shape[1:])
    with torch.no_grad():
        fast = node(x)
        v_fast = node.v.clone()
    functional.reset_net(node)
    with torch.enable_grad():  # autograd on: spikingjelly's own kernel
        reference = node(x.clone().requires_grad_()).detach()
        v_ref = node.v.detach()
    assert torch.equal(fast, reference) and torch.equal(v_fast, v_ref)
    assert 0 < float(fast.mean()) < 1


def test_medspikeformer_fast_paths_match(calibrated):
    model = calibrated("medspikeformer", timesteps=3)
    x = torch.rand(1, 3, 64, 48)
    with torch.inference_mode():
        LIFNode.fast_inference = False
        try:
            plain = model(x)
        finally:
            LIFNode.fast_inference = True
        fast = model(x)
        channels_last = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(fast, plain, rtol=0, atol=0)
    torch.testing.assert_close(channels_last, plain, rtol=1e-4, atol=1e-4)
