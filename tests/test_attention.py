"""SDSA's decomposed attention: layout (no pixel/channel mixing) and the four interactions."""

from __future__ import annotations

import torch

from napari_medspike.models.attention import INTERACTIONS, decomposed_channel_attention


def naive_interactions(q, k, v, heads):
    """Direct definition: for each (x, y), O = (q_x k_yᵀ) C^-1/2 v per head, no algebra."""
    t, b, c, h, w = v.shape
    d = c // heads
    parts = {"A": (q, k), "I": (1 - q, 1 - k)}
    out = {}
    for name in INTERACTIONS:
        qx = parts[name[0]][0].reshape(t, b, heads, d, h * w)
        ky = parts[name[1]][1].reshape(t, b, heads, d, h * w)
        vv = v.reshape(t, b, heads, d, h * w)
        m = qx @ ky.transpose(-2, -1) * c**-0.5
        out[name] = (m @ vv).reshape(t, b, c, h, w)
    return out


def spikes(*shape):
    return (torch.rand(*shape) < 0.3).float()


def test_matches_the_direct_definition():
    q, k, v = spikes(2, 1, 16, 6, 5), spikes(2, 1, 16, 6, 5), spikes(2, 1, 16, 6, 5)
    fast = decomposed_channel_attention(q, k, v, heads=4).chunk(4, dim=2)
    slow = naive_interactions(q, k, v, heads=4)
    for name, o in zip(INTERACTIONS, fast):
        torch.testing.assert_close(o, slow[name], rtol=0, atol=1e-4)


def test_matches_for_analog_gates_too():
    q, k, v = torch.rand(1, 2, 8, 4, 4), torch.rand(1, 2, 8, 4, 4), torch.randn(1, 2, 8, 4, 4)
    fast = decomposed_channel_attention(q, k, v, heads=2).chunk(4, dim=2)
    slow = naive_interactions(q, k, v, heads=2)
    for name, o in zip(INTERACTIONS, fast):
        torch.testing.assert_close(o, slow[name], rtol=1e-4, atol=1e-4)


def test_one_pixel_of_v_changes_the_output_only_at_that_pixel():
    # The reference permutes (.., N, d) and views as (C, H, W): a change at one pixel of V then
    # shows up at other pixels. Channel attention must keep every pixel in place.
    q, k, v = spikes(2, 1, 16, 8, 12), spikes(2, 1, 16, 8, 12), spikes(2, 1, 16, 8, 12)
    before = decomposed_channel_attention(q, k, v, heads=4)
    v2 = v.clone()
    v2[:, :, :, 3, 7] = 1 - v2[:, :, :, 3, 7]
    after = decomposed_channel_attention(q, k, v2, heads=4)
    changed = (after - before).abs().amax(dim=(0, 1, 2))  # [H, W]
    assert changed[3, 7] > 0
    changed[3, 7] = 0
    assert changed.max() == 0
