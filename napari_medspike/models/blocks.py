"""Building blocks on ``[T, B, C, H, W]`` tensors.

Convolutions and norms fold T into the batch. A tensor may carry ``T = 1`` while the model runs
``T > 1`` timesteps: with direct encoding everything before the first spiking neuron is the same
at every timestep, so it is computed once and broadcast over T only when a neuron needs it
(:class:`Neuron`). Batch-norm statistics of T identical copies equal those of one copy, so this
is exact in training too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import fastpath
from .neurons import make_neuron


def seq_apply(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 4D module to ``[T, B, C, H, W]`` by folding T into the batch."""
    t, b = x.shape[:2]
    y = module(x.flatten(0, 1))
    return y.unflatten(0, (t, b))


def time_mean(x: torch.Tensor) -> torch.Tensor:
    """``x.mean(0)`` for ``[T, B, C, H, W]`` as a running sum of the timesteps.

    Equal up to rounding (exact for spikes, whose sums are small integers), and as fast whatever
    each timestep's memory layout: on channels-last timesteps, which convolutions often return
    on the CPU, PyTorch's reduction over the outer dimension is about 20 times slower (37 ms
    against 1.6 ms for the head's ``[4, 1, 32, 256, 256]`` spikes).
    """
    if x.shape[0] == 1:
        return x[0]
    total = torch.add(x[0], x[1])
    for t in range(2, x.shape[0]):
        total.add_(x[t])
    return total.div_(x.shape[0])


class Neuron(nn.Module):
    """A neuron on ``[T, B, ...]`` that first broadcasts a ``T = 1`` input to the model's T."""

    def __init__(self, kind: str, timesteps: int, gate: bool = False) -> None:
        super().__init__()
        self.timesteps = timesteps
        self.node = make_neuron(kind, gate=gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.timesteps:
            x = x.expand(self.timesteps, *x.shape[1:])
        return self.node(x)


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``bn(x) == x * scale + shift`` per channel (eval mode)."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode."""
    scale, shift = bn_affine(bn)
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return weight, bias


class ConvBN(nn.Sequential):
    """``Conv2d`` (with bias) followed by ``BatchNorm2d``; applied to 4D tensors.

    In eval mode the norm is folded into the convolution's weights on the fly (one pass over
    the activations instead of two; folding the few weights costs microseconds per call).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        padding = kernel_size // 2 if stride == 1 else 0
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        conv, bn = self[0], self[1]
        if bn.training or not fastpath.enabled():
            return bn(conv(x))
        weight, bias = fold_batchnorm(conv, bn)
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class SeqConvBN(ConvBN):
    """:class:`ConvBN` on ``[T, B, C, H, W]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return seq_apply(super().forward, x)


def optional_neuron(wanted: bool, kind: str, timesteps: int) -> Neuron | None:
    """A :class:`Neuron` where the spike-driven layout puts one, else ``None``."""
    return Neuron(kind, timesteps) if wanted else None


def fire(neuron: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """``neuron(x)``, or ``x`` unchanged where the layout has no neuron."""
    return x if neuron is None else neuron(x)


class DepthwiseSeparable(nn.Module):
    """(neuron ->) depth-wise 3x3 conv + BN -> neuron -> point-wise 1x1 conv.

    ``branches > 1`` runs that many independent blocks of ``channels // branches`` channels side
    by side in one call (grouped point-wise conv): SDSA's four interaction blocks.
    ``input_neuron=True`` (spike-driven layout) fires the input first, so the depth-wise conv
    reads spikes instead of analog values.
    """

    def __init__(self, channels: int, kind: str, timesteps: int, branches: int = 1, input_neuron: bool = False) -> None:
        super().__init__()
        self.input_neuron = optional_neuron(input_neuron, kind, timesteps)
        self.depthwise = ConvBN(channels, channels, 3, groups=channels)
        self.neuron = Neuron(kind, timesteps)
        self.pointwise = nn.Conv2d(channels, channels, 1, groups=branches)

    def forward(self, x: torch.Tensor, average: bool = False) -> torch.Tensor:
        """``average=True`` returns the mean over timesteps (T = 1), computed as the point-wise
        conv of the mean spike map: T times cheaper, equal by linearity."""
        x = self.neuron(seq_apply(self.depthwise, fire(self.input_neuron, x)))
        if average:
            x = time_mean(x).unsqueeze(0)
        return seq_apply(self.pointwise, x)


class MLP(nn.Module):
    """Point-wise conv + BN -> depth-wise 3x3 conv + BN -> neuron -> point-wise conv.

    Spike-driven layout (``spike_driven=True``): a neuron before each of the first two convs as
    well, so every conv reads spikes.
    """

    def __init__(self, in_channels: int, out_channels: int, kind: str, timesteps: int, spike_driven: bool = False) -> None:
        super().__init__()
        self.input_neuron = optional_neuron(spike_driven, kind, timesteps)
        self.expand = nn.Sequential(
            ConvBN(in_channels, out_channels, 1),
            ConvBN(out_channels, out_channels, 3, groups=out_channels),
        )
        self.middle_neuron = optional_neuron(spike_driven, kind, timesteps)
        self.neuron = Neuron(kind, timesteps)
        self.project = nn.Conv2d(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = seq_apply(self.expand[0], fire(self.input_neuron, x))
        x = seq_apply(self.expand[1], fire(self.middle_neuron, x))
        return seq_apply(self.project, self.neuron(x))


class ResidualSpikingConv(nn.Module):
    """Two residual depth-wise separable spiking units, each followed by BN (decoder block core).

    In the spike-driven layout each unit fires its input first: the residuals add analog
    values (membrane shortcuts) and only spikes reach a convolution.
    """

    def __init__(self, channels: int, kind: str, timesteps: int, spike_driven: bool = False) -> None:
        super().__init__()
        self.unit1 = DepthwiseSeparable(channels, kind, timesteps, input_neuron=spike_driven)
        self.norm1 = nn.BatchNorm2d(channels)
        self.unit2 = DepthwiseSeparable(channels, kind, timesteps, input_neuron=spike_driven)
        self.norm2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor, average: bool = False) -> torch.Tensor:
        """``average=True`` (eval mode only: BN must be affine) returns the mean over timesteps."""
        x = seq_apply(self.norm1, self.unit1(x) + x)
        y = self.unit2(x, average=average)
        if average:
            x = time_mean(x).unsqueeze(0)
        return seq_apply(self.norm2, y + x)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling of a 4D tensor."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class SideHead(nn.Module):
    """Time-averaged features -> depth-wise separable conv + BN -> 1-channel logit map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.merge = nn.Sequential(
            ConvBN(channels, channels, 3, groups=channels),
            ConvBN(channels, channels, 1),
        )
        self.out = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.merge(time_mean(x)))


class SegmentationHead(nn.Module):
    """Time-averaged features -> 3x3 conv + BN -> 1x1 conv to one logit channel.

    Spike-driven layout (``spike_driven=True``): neuron -> 3x3 conv + BN -> neuron -> 1x1 conv,
    per timestep, then the mean over time. The 1x1 conv is linear, so the fast path applies it
    once to the mean spike map instead of T times (equal up to rounding; the energy accounting
    runs the plain path, where it reads binary spikes).

    MODEL.md's head is the 1x1 conv alone (as MedQKFormer's is); MedSpikeFormer's has the 3x3
    conv + BN before it, one more layer of spatial context for the spikes it reads, and its
    shipped weights carry it.
    """

    def __init__(self, channels: int, kind: str = "lif", timesteps: int = 1, spike_driven: bool = False) -> None:
        super().__init__()
        self.input_neuron = optional_neuron(spike_driven, kind, timesteps)
        self.merge = ConvBN(channels, channels, 3)
        self.out_neuron = optional_neuron(spike_driven, kind, timesteps)
        self.out = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_neuron is None:
            return self.out(self.merge(time_mean(x)))
        spikes = self.out_neuron(seq_apply(self.merge, self.input_neuron(x)))
        if fastpath.enabled():
            return self.out(time_mean(spikes))
        return seq_apply(self.out, spikes).mean(0)
