"""Neurons: spikingjelly's multi-step LIF, the integer-spike NISF, and the ANN twin's activations.

Every tensor in the models is laid out ``[T, B, C, H, W]`` (``T = 1`` for the single-pass models),
so each neuron here takes and returns that layout.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

# spikingjelly probes for Triton on import; on CPU-only machines that warning is noise.
logging.getLogger("torch._library.triton").setLevel(logging.ERROR)

from spikingjelly.activation_based import neuron, surrogate  # noqa: E402

#: Largest integer spike count of the NISF neuron (MODEL.md: D = 4).
NISF_LEVELS = 4


class LIFNode(neuron.LIFNode):
    """spikingjelly's multi-step LIF with a lean CPU inference path.

    Training, autograd and GPUs use spikingjelly's own kernels (it picks CUDA/Triton itself).
    Without autograd on the CPU, spikingjelly's reference loop still copies the input to float
    and stacks the pre-reset potentials it would need for a backward pass; this path runs the
    same arithmetic (``h = v + (x - v) / tau``, spike ``h >= threshold``, hard reset) without
    them. Tests check that both give identical spikes and potentials.
    """

    #: Set False to always use spikingjelly's own kernels (for comparisons).
    fast_inference: bool = True

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):  # type: ignore[override]
        fast = (
            self.fast_inference
            and not torch.is_grad_enabled()
            and x_seq.device.type == "cpu"
            and x_seq.dtype == torch.float32
            and self.decay_input
            and self.v_reset is not None
            and not self.store_v_seq
            and not args
            and not kwargs
        )
        if not fast:
            return super().multi_step_forward(x_seq, *args, **kwargs)
        v = self.v
        v = torch.zeros_like(x_seq[0]) if not isinstance(v, torch.Tensor) else v.expand_as(x_seq[0]).clone()
        spikes = torch.empty_like(x_seq, memory_format=torch.preserve_format)
        for t in range(x_seq.shape[0]):
            h = v + (x_seq[t] - (v - self.v_reset)) / self.tau
            fired = h >= self.v_threshold
            spikes[t] = fired
            v = h.masked_fill_(fired, self.v_reset)
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
