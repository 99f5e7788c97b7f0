"""Spatial learning through time (SLTT-K): values of the full forward, spatial-only gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from napari_medspike import create_model
from napari_medspike.models import alignment_loss, segmentation_loss
from napari_medspike.models import neurons
from napari_medspike.models.sltt import choose_timesteps, sltt_forward

TINY = dict(widths=(8, 16, 16, 32), heads=2)


def _model(layout: str = "spike_driven", timesteps: int = 3) -> torch.nn.Module:
    model = create_model("medspikeformer", timesteps=timesteps, layout=layout, **TINY).train()
    with torch.no_grad():  # fitted norms, so that the tiny untrained model fires
        model(torch.rand(4, 3, 32, 32))
    return model


def _frozen_norms(model: torch.nn.Module) -> torch.nn.Module:
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    return model


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _spatial_only_backward(ctx, grad_spikes, _grad_v):
    """The lean LIF's BPTT with the temporal term dropped: a reference for SLTT-T."""
    (charge,) = ctx.saved_tensors
    tau, threshold, alpha = ctx.constants
    sig = torch.sigmoid((charge - threshold) * alpha)
    return sig * (1 - sig) * alpha * grad_spikes / tau, None, None, None


@pytest.mark.parametrize("layout", ["spike_driven", "reference"])
def test_values_are_those_of_the_full_forward(layout):
    model = _model(layout)
    twin = copy.deepcopy(model)
    x = torch.rand(2, 3, 32, 32)
    logits, sides = sltt_forward(model, x, k=1, side_outputs=True)
    with torch.no_grad():
        ref_logits, ref_sides = twin(x, side_outputs=True)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5)
    for a, b in zip(sides, ref_sides):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # running statistics were updated once, as by one plain training forward
    for (name, a), (_, b) in zip(model.named_buffers(), twin.named_buffers()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_all_timesteps_give_spatial_only_bptt(monkeypatch):
    """SLTT with K = T equals BPTT with the membrane's temporal path cut (norms frozen: SLTT
    treats batch statistics as constants, so compare with fixed ones)."""
    x, y = torch.rand(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    model = _frozen_norms(_model(timesteps=3))
    reference = copy.deepcopy(model)
    segmentation_loss(sltt_forward(model, x, steps=[0, 1, 2]), y).backward()
    monkeypatch.setattr(neurons._LIFSigmoidSurrogate, "backward", staticmethod(_spatial_only_backward))
    segmentation_loss(reference(x), y).backward()
    got, want = _grads(model), _grads(reference)
    assert got.keys() == want.keys()
    scale = max(g.abs().max() for g in want.values())
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-4 * scale, msg=name)


def test_one_timestep_is_an_unbiased_estimate():
    """The mean of the K = 1 gradients over the T timesteps is the K = T gradient (the loss is
    linear in the logits here, so the estimate is exact in expectation)."""
    x = torch.rand(2, 3, 32, 32)
    base = _frozen_norms(_model(timesteps=3))
    full = copy.deepcopy(base)
    sltt_forward(full, x, steps=[0, 1, 2]).sum().backward()
    singles = []
    for t in range(3):
        model = copy.deepcopy(base)
        sltt_forward(model, x, steps=[t]).sum().backward()
        singles.append(_grads(model))
    want = _grads(full)
    for name, g in want.items():
        mean = sum(s[name] for s in singles) / 3
        torch.testing.assert_close(mean, g, rtol=0, atol=1e-4 * float(g.abs().max() + 1e-3), msg=name)


def test_training_step_with_alignment_runs_and_learns():
    torch.manual_seed(1)
    model = _model(timesteps=2)
    teacher = create_model("ann_twin", **TINY).eval()
    x, y = torch.rand(4, 3, 32, 32), (torch.rand(4, 1, 32, 32) > 0.5).float()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        logits, sides = sltt_forward(model, x, k=1, side_outputs=True)
        with torch.no_grad():
            _, teacher_sides = teacher(x, side_outputs=True)
        loss = segmentation_loss(logits, y) + alignment_loss(sides, teacher_sides)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    # the replay left no state behind: a plain forward afterwards works and is deterministic
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


def test_choice_of_timesteps_and_bad_arguments():
    g = torch.Generator().manual_seed(0)
    picks = {tuple(choose_timesteps(4, 1, g)) for _ in range(50)}
    assert picks == {(0,), (1,), (2,), (3,)}
    assert choose_timesteps(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="1 <= K <= T"):
        choose_timesteps(4, 5)
    model = _model(timesteps=2)
    with pytest.raises(ValueError, match="distinct timesteps"):
        sltt_forward(model, torch.rand(1, 3, 32, 32), steps=[0, 0])
    with pytest.raises(ValueError, match="training mode"):
        sltt_forward(model.eval(), torch.rand(1, 3, 32, 32))
