"""The CPU neuron loops give the same spikes, states and gradients band by band as in one piece."""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import functional

from napari_medspike.models import neurons
from napari_medspike.models.neurons import IntegerLIF, make_lif, row_bands


def test_row_bands_cover_every_row_once():
    x = torch.zeros(4, 2, 3, 10, 7)
    bands = row_bands(x, band_bytes=2 * 3 * 7 * 4 * 3)  # three rows of one timestep
    assert [b[1] for b in bands] == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 12)]
    assert row_bands(x, band_bytes=1 << 30) == [(Ellipsis,)]  # small: one piece
    assert row_bands(torch.zeros(4, 100)) == [(Ellipsis,)]  # no rows to split
    # off the CPU bands would only add kernel launches: one piece, whatever the size
    assert row_bands(torch.zeros(4, 2, 3, 10, 7, device="meta"), band_bytes=2 * 3 * 7 * 4 * 3) == [(Ellipsis,)]


def _run(node: torch.nn.Module, x: torch.Tensor, carried: torch.Tensor | None = None):
    """Outputs, final state and input gradient of a fresh neuron (or one with a carried state)."""
    functional.reset_net(node)
    if carried is not None:
        node.v = carried.clone()
    x = x.clone().requires_grad_(True)
    out = node(x)
    out.mul(torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    state = node.v.detach().clone()
    functional.reset_net(node)
    return out.detach(), state, x.grad


@pytest.mark.parametrize("kind", ["integer", "binary"])
@pytest.mark.parametrize("grad", [True, False])
def test_neurons_band_by_band_equal_one_piece(monkeypatch, kind, grad):
    torch.manual_seed(0)
    node = IntegerLIF(4) if kind == "integer" else make_lif()
    node.v_threshold = 0.5
    x = torch.randn(4, 2, 3, 11, 9) * 1.5
    x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (4, 2))  # as convs leave it
    results = []
    for band_bytes in (1 << 30, 2 * 3 * 9 * 4 * 2):  # one piece, then bands of two rows
        monkeypatch.setattr(neurons, "BAND_BYTES", band_bytes)
        assert len(row_bands(x)) == (1 if band_bytes > 1 << 20 else 6)
        if grad:
            results.append(_run(node, x))
        else:
            with torch.inference_mode():
                functional.reset_net(node)
                results.append((node(x), node.v.clone(), None))
                functional.reset_net(node)
    (out1, v1, g1), (out2, v2, g2) = results
    assert torch.equal(out1, out2) and torch.equal(v1, v2)
    assert out1.sum() > 0 and (out1 == 0).any()  # some fired, some did not
    if grad:  # the sigmoid surrogate's vectorised and scalar tails round alike only to an ulp
        torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-7)
        assert g1.abs().sum() > 0


def test_binary_lif_with_a_carried_state_bands_alike(monkeypatch):
    torch.manual_seed(1)
    node = make_lif()
    x, carried = torch.randn(3, 1, 2, 12, 5), torch.rand(1, 2, 12, 5)
    outs = []
    for band_bytes in (1 << 30, 2 * 5 * 4):
        monkeypatch.setattr(neurons, "BAND_BYTES", band_bytes)
        with torch.inference_mode():
            functional.reset_net(node)
            node.v = carried.clone()
            outs.append((node(x), node.v.clone()))
        functional.reset_net(node)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
