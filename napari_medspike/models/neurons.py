"""Neurons: spikingjelly's multi-step LIF, the integer-spike NISF, and the ANN twin's activations.

Every tensor in the models is laid out ``[T, B, C, H, W]`` (``T = 1`` for the single-pass models),
so each neuron here takes and returns that layout.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

# spikingjelly probes for Triton on import; on CPU-only machines that warning is noise.
logging.getLogger("torch._library.triton").setLevel(logging.ERROR)

from spikingjelly.activation_based import neuron, surrogate  # noqa: E402

from . import fastpath  # noqa: E402

#: Largest integer spike count of the NISF neuron (MODEL.md: D = 4).
NISF_LEVELS = 4


class LIFNode(neuron.LIFNode):
    """spikingjelly's multi-step LIF with a lean CPU inference path.

    Training, autograd and GPUs use spikingjelly's own kernels (it picks CUDA/Triton itself).
    Without autograd on the CPU, spikingjelly's reference loop still copies the input to float
    and stacks the pre-reset potentials it would need for a backward pass; this path runs the
    same arithmetic (``h = v + (x - v) / tau``, spike ``h >= threshold``, hard reset to 0) in
    place in two preallocated buffers, 2.4x faster than the reference loop on a
    ``[4, 1, 128, 256, 256]`` input (BENCHMARKS.md). Tests check that both give identical
    spikes and potentials.
    """

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):  # type: ignore[override]
        fast = (
            fastpath.enabled()
            and not torch.is_grad_enabled()
            and x_seq.device.type == "cpu"
            and x_seq.dtype == torch.float32
            and self.decay_input
            and self.v_reset == 0.0
            and not self.store_v_seq
            and not args
            and not kwargs
        )
        if not fast:
            return super().multi_step_forward(x_seq, *args, **kwargs)
        # spikingjelly's charge is h = v + (x - v) / tau; computed in place into one buffer
        # (``v += (x - v) * (1 / tau)`` is bit-identical when 1/tau is a power of two).
        exact_scale = math.frexp(self.tau)[0] == 0.5
        v = self.v
        spikes = torch.empty_like(x_seq, memory_format=torch.preserve_format)
        diff = torch.empty_like(x_seq[0], memory_format=torch.preserve_format)
        if isinstance(v, torch.Tensor):
            v = v.expand_as(diff).clone(memory_format=torch.preserve_format)
        else:  # fresh state v = v_reset = 0: the first charge is x / tau
            v = torch.div(x_seq[0], self.tau)
        for t in range(x_seq.shape[0]):
            if t or isinstance(self.v, torch.Tensor):
                torch.sub(x_seq[t], v, out=diff)
                if exact_scale:
                    v.add_(diff, alpha=1.0 / self.tau)
                else:
                    v.add_(diff.div_(self.tau))
            fired = torch.ge(v, self.v_threshold, out=spikes[t])  # 0/1 floats
            v.addcmul_(v, fired, value=-1.0)  # hard reset to 0: v - v * s (exact)
        self.v = v
        return spikes


def make_lif() -> LIFNode:
    """Multi-step LIF of MODEL.md: tau 2, threshold 1, hard reset to 0, sigmoid surrogate (alpha 4).

    spikingjelly 2.0 chooses the kernel itself (a torch loop over T on CPU, CUDA/Triton on GPU).
    """
    return LIFNode(
        tau=2.0,
        decay_input=True,
        v_threshold=1.0,
        v_reset=0.0,
        surrogate_function=surrogate.Sigmoid(alpha=4.0),
        detach_reset=True,
        step_mode="m",
    )


class NISF(nn.Module):
    """Normalised Integer Spike-Fire neuron: ``round(clamp(x, 0, D)) / D`` (stateless).

    The integer spike count comes from spikingjelly's ``MultiLevelSpikeCount`` (straight-through
    gradient on ``[0, D]``); outputs lie in ``{0, 1/D, ..., 1}``.
    """

    def __init__(self, levels: int = NISF_LEVELS) -> None:
        super().__init__()
        self.levels = levels
        self.count = surrogate.MultiLevelSpikeCount(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.count(x) / self.levels

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


def make_neuron(kind: str, gate: bool = False) -> nn.Module:
    """The non-linearity for a model family.

    ``kind`` is ``"lif"`` (MedSpikeFormer), ``"ann"`` (its ANN twin: sigmoid for the Q/K/V
    gates, GELU elsewhere) or ``"nisf"`` (MedQKFormer). ``gate`` marks Q/K/V gates.
    """
    if kind == "lif":
        return make_lif()
    if kind == "ann":
        return nn.Sigmoid() if gate else nn.GELU()
    if kind == "nisf":
        return NISF()
    raise ValueError(f"unknown neuron kind {kind!r}; expected 'lif', 'ann' or 'nisf'")


SPIKING_NEURONS: tuple[type[nn.Module], ...] = (neuron.LIFNode, NISF)
"""Module types whose outputs are spikes (binary or normalised integer)."""
