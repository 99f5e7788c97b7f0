"""Spatial learning through time (SLTT, Meng et al., ICCV 2023) for the multi-step LIF models.

Full backpropagation through time (BPTT) keeps every timestep's activations and sends gradients
back along the membrane's path through time. SLTT drops that temporal path, so each timestep's
gradient is independent, and SLTT-K backpropagates through only K random timesteps of the T.

Here that runs in two passes over a batch:

1. **Recording pass**, without autograd: the full T-step forward in training mode. Its outputs
   are the values the loss sees. Every LIF keeps the potential each chosen timestep starts
   from; every batch norm keeps the batch statistics it normalised with (and updates its
   running statistics, once).
2. **Replay pass**, with autograd: only the K chosen timesteps, each an independent LIF step
   from its recorded potential (:class:`~.neurons._SpatialLIFStep`), with the recorded batch
   statistics as constants. Activations and backward work shrink to K/T of BPTT's.

:func:`sltt_forward` joins them straight-through: the value of the recording pass, the gradient
of the replay pass. The heads average over the K replayed steps, so the gradient is an unbiased
estimate of SLTT's over all T (tested).
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .blocks import Neuron
from .neurons import LIFNode


def choose_timesteps(timesteps: int, k: int, generator: torch.Generator | None = None) -> list[int]:
    """``k`` distinct timesteps out of ``range(timesteps)``, uniformly at random, sorted."""
    if not 1 <= k <= timesteps:
        raise ValueError(f"SLTT needs 1 <= K <= T, got K={k} for T={timesteps}")
    return sorted(torch.randperm(timesteps, generator=generator)[:k].tolist())


def _norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _recording_norm_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm (running statistics updated as usual) that also keeps the batch
    mean and inverse standard deviation it normalised with, for the replay."""
    momentum = self.momentum
    if self.track_running_stats and self.num_batches_tracked is not None:
        self.num_batches_tracked += 1
        if momentum is None:  # cumulative moving average
            momentum = 1.0 / float(self.num_batches_tracked)
    out, mean, invstd = torch.native_batch_norm(
        x, self.weight, self.bias, self.running_mean, self.running_var, True, momentum or 0.0, self.eps
    )
    self._sltt_stats.append((mean, invstd))
    return out


def _replaying_norm_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm with the recording pass's statistics as constants: ``(x - mean) * invstd``
    times the weight plus the bias, differentiable in ``x`` and the affine parameters only."""
    if not self._sltt_stats:
        raise RuntimeError("SLTT replay: a batch norm ran more often than in the recording pass")
    mean, invstd = self._sltt_stats.pop(0)
    scale, shift = invstd, -mean * invstd
    if self.weight is not None:
        scale, shift = scale * self.weight, shift * self.weight + self.bias
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return torch.addcmul(shift.reshape(shape), x, scale.reshape(shape))


@contextlib.contextmanager
def _pass(model: nn.Module, mode: str, steps: Sequence[int]) -> Iterator[None]:
    lifs = [m for m in model.modules() if isinstance(m, LIFNode)]
    neurons = [m for m in model.modules() if isinstance(m, Neuron)]
    norms = [m for m in _norms(model) if m.training]
    saved_timesteps = [n.timesteps for n in neurons]
    for lif in lifs:
        lif.sltt_mode = list(steps) if mode == "record" else "replay"
    if mode == "replay":
        for n in neurons:
            n.timesteps = len(steps)  # a broadcast (T = 1) input becomes K steps
    forward = _recording_norm_forward if mode == "record" else _replaying_norm_forward
    for norm in norms:
        if mode == "record":
            norm._sltt_stats = []
        norm.forward = types.MethodType(forward, norm)
    try:
        yield
    finally:
        for lif in lifs:
            lif.sltt_mode = None
        for n, t in zip(neurons, saved_timesteps):
            n.timesteps = t
        for norm in norms:
            del norm.forward
        if mode == "replay":
            for lif in lifs:
                lif.sltt_starts = None
            for norm in norms:
                norm.__dict__.pop("_sltt_stats", None)


def _straight_through(value: Any, gradient: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return gradient + (value - gradient).detach()
    return type(value)(_straight_through(v, g) for v, g in zip(value, gradient))


def sltt_forward(
    model: nn.Module,
    x: torch.Tensor,
    k: int = 1,
    generator: torch.Generator | None = None,
    steps: Sequence[int] | None = None,
    **kwargs: Any,
) -> Any:
    """``model(x, **kwargs)`` for a training step with SLTT-K.

    The result has the values of the full T-step forward and gradients from ``k`` random
    timesteps (or the given ``steps``) through the spatial path only. ``model`` must be in
    training mode and have ``timesteps`` (MedSpikeFormer); batch norms update their running
    statistics once.
    """
    if not model.training:
        raise ValueError("SLTT is a training method: put the model in training mode")
    if getattr(model, "spike_levels", 1) > 1:
        raise ValueError("SLTT needs binary spikes; train a model with integer spikes (spike_levels > 1) with "
                         "full backpropagation through time (sltt 0)")
    if steps is None:
        steps = choose_timesteps(int(model.timesteps), k, generator)
    elif sorted(set(steps)) != sorted(steps) or not all(0 <= t < model.timesteps for t in steps):
        raise ValueError(f"steps must be distinct timesteps in 0..{model.timesteps - 1}, got {list(steps)}")
    checkpointing = getattr(model, "gradient_checkpointing", False)
    with torch.no_grad(), _pass(model, "record", steps):
        value = model(x, **kwargs)
    model.gradient_checkpointing = False  # the replay keeps only K steps of activations anyway
    try:
        with _pass(model, "replay", steps):
            gradient = model(x, **kwargs)
    finally:
        model.gradient_checkpointing = checkpointing
    return _straight_through(value, gradient)
