"""Segmentation and distribution-alignment losses."""

from __future__ import annotations

import pytest
import torch

from napari_medspike import alignment_loss, segmentation_loss


def maps(*values):
    return [torch.full((1, 1, 4, 4), v) for v in values]


def test_alignment_is_zero_for_identical_maps():
    sides = [torch.randn(2, 1, 16 >> i, 16 >> i) for i in range(4)]
    assert float(alignment_loss(sides, [s.clone() for s in sides])) == pytest.approx(0, abs=1e-6)


def test_alignment_is_positive_otherwise():
    logit = lambda p: torch.logit(torch.tensor(p)).item()  # noqa: E731
    # P_s = 0.5 vs P_a = 0.9 is where the foreground-only KL term of MODEL.md goes negative.
    snn, ann = maps(logit(0.5)) * 4, maps(logit(0.9)) * 4
    assert float(alignment_loss(snn, ann)) > 0
    for _ in range(20):
        a = [torch.randn(1, 1, 8, 8) for _ in range(4)]
        b = [torch.randn(1, 1, 8, 8) for _ in range(4)]
        assert float(alignment_loss(a, b)) > 0


def test_alignment_counts_each_listed_stage_once():
    a = [torch.randn(1, 1, 8, 8) for _ in range(4)]
    b = [torch.randn(1, 1, 8, 8) for _ in range(4)]
    one = alignment_loss(a, b, stages=[1])
    torch.testing.assert_close(alignment_loss(a, b, stages=[1, 1, 1]), one)
    total = sum(alignment_loss(a, b, stages=[s]) for s in range(4))
    torch.testing.assert_close(alignment_loss(a, b), total)
    torch.testing.assert_close(alignment_loss(a, b, weight=0.5), 0.5 * total)
    with pytest.raises(ValueError, match="out of range"):
        alignment_loss(a, b, stages=[4])


def test_alignment_pulls_the_snn_towards_the_twin():
    target = torch.logit(torch.tensor(0.9))
    s = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([s], lr=1.0)
    for _ in range(300):
        opt.zero_grad()
        alignment_loss([s.view(1, 1, 1, 1)], [target.view(1, 1, 1, 1)], stages=[0]).backward()
        opt.step()
    assert torch.sigmoid(s).item() == pytest.approx(0.9, abs=1e-2)


def test_segmentation_loss_is_low_for_a_confident_right_answer():
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    good = segmentation_loss((target * 2 - 1) * 20, target)
    bad = segmentation_loss((1 - target * 2) * 20, target)
    assert float(good) < 0.01 < 1.5 < float(bad)
    with pytest.raises(ValueError, match="differ"):
        segmentation_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4))


def test_alignment_is_finite_for_extreme_logits_and_matches_the_closed_form():
    """The float32 clamp of MODEL.md (1 - 1e-8 == 1.0) gave NaN from side logits of about 17 on."""
    z_s = torch.tensor([-40.0, -17.0, -3.0, 0.5, 17.0, 40.0]).view(1, 1, 2, 3).requires_grad_(True)
    z_a = torch.tensor([30.0, 2.0, -1.0, 0.0, -20.0, 40.0]).view(1, 1, 2, 3)
    loss = alignment_loss([z_s], [z_a], stages=[0])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z_s.grad).all()
    # against the closed form of the Bernoulli KL in logits, softplus(z_a) - softplus(z_s) +
    # p_s (z_s - z_a), plus the squared difference, in float64
    zs, za = z_s.detach().double(), z_a.double()
    p, q = torch.sigmoid(zs), torch.sigmoid(za)
    kl = torch.nn.functional.softplus(za) - torch.nn.functional.softplus(zs) + p * (zs - za)
    assert float(loss) == pytest.approx(float(kl.mean() + (p - q).pow(2).mean()), rel=1e-5)
