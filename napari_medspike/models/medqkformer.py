"""MedQKFormer: integer-spike (NISF) U-shaped transformer with Q-K decomposed attention.

Single pass (no timesteps): NISF neurons emit normalised integer spike counts in
``{0, 1/4, ..., 1}``. Layer for layer this reproduces the public reference, whose size we test
(7,429,345 parameters at the default widths).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .attention import SDQK, MaskSpikeConv
from .base import Segmenter
from .neurons import NISF_LEVELS
from .blocks import ConvBN, upsample2x


class QKEncoderStage(nn.Module):
    """3x3 conv + BN patch embedding with a NISF conv block -> SDQK-A -> 2x2 stride-2 conv + BN."""

    def __init__(self, in_channels: int, channels: int, heads: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(ConvBN(in_channels, channels, 3), MaskSpikeConv(channels))
        self.attention = SDQK(channels, heads)
        self.downsample = ConvBN(channels, channels, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.attention(self.embed(x)))


class QKDecoderBlock(nn.Module):
    """NISF conv block with residual -> bilinear x2 -> 3x3 conv + BN."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.residual = MaskSpikeConv(in_channels)
        self.up = ConvBN(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(upsample2x(self.residual(x) + x))


class MedQKFormer(Segmenter):
    """MedQKFormer segmenter.

    Args:
        in_channels: image channels (3 for RGB).
        widths: channels of the four encoder stages.
        heads: heads of the SDQK-A token weights (each width / 2 must be divisible by it).
        side_heads: adds a 1x1 logit head on the outputs of the first three decoder blocks
            (resolutions H/8, H/4, H/2) for deep supervision in training; prediction never
            runs them. Off by default (the reference layout has none).

    :meth:`forward_intermediates` reports T = 1: spikes ``q, k`` and the four terms ``AA, AI,
    IA, II`` of SDQK-A (``same = AA + II``, ``cross = AI + IA``), each ``[1, B, C/2, h, w]``.
    """

    arch = "medqkformer"
    spike_levels = NISF_LEVELS

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128, 256),
        heads: int = 4,
        side_heads: bool = False,
    ) -> None:
        super().__init__(in_channels)
        if len(widths) != 4:
            raise ValueError(f"widths must list 4 stage widths, got {list(widths)}")
        self.widths, self.heads = tuple(int(w) for w in widths), heads
        dims = (in_channels, *self.widths)
        self.stages = nn.ModuleList(QKEncoderStage(dims[i], dims[i + 1], heads) for i in range(4))
        dec = (*self.widths[::-1], self.widths[0])
        self.decoders = nn.ModuleList(QKDecoderBlock(dec[i], dec[i + 1]) for i in range(4))
        self.head = nn.Conv2d(self.widths[0], 1, 1)
        self.has_side_heads = bool(side_heads)
        self.side_heads = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in dec[1:4]) if side_heads else None

    @property
    def config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "widths": list(self.widths), "heads": self.heads,
                **({"side_heads": True} if self.has_side_heads else {})}

    def attention_modules(self) -> list[nn.Module]:
        return [stage.attention for stage in self.stages]

    def _logits_and_sides(self, x: torch.Tensor, with_sides: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        h, sides = skips[-1], []
        for i, decoder in enumerate(self.decoders):
            h = decoder(h)
            if i < 3:
                h = h + skips[2 - i]
                if with_sides:
                    sides.append(self.side_heads[i](h))
        return self.head(h), sides

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits_and_sides(x, with_sides=False)[0]

    def _forward_with_sides(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the side heads' maps at H/8, H/4 and H/2 (deep supervision)."""
        return self._logits_and_sides(x, with_sides=True)
