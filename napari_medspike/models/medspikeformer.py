"""MedSpikeFormer (multi-step LIF, SDSA) and its ANN twin on the shared U-shaped skeleton."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from . import fastpath
from .attention import SDSA
from .base import Segmenter
from .neurons import IntegerLIF, LIFNode, LIFRate
from .blocks import (
    Neuron,
    ResidualSpikingConv,
    SegmentationHead,
    SeqConvBN,
    SideHead,
    fire,
    optional_neuron,
    seq_apply,
    time_mean,
    upsample2x,
)

#: Where the neurons sit. ``spike_driven`` (the default): every convolution and matrix product
#: after the encoding layer reads spikes, residuals add membrane potentials (Spike-driven
#: Transformer V2). ``reference``: the layout of the MedSpikeFormer paper's code, in which many
#: convolutions read analog values at every timestep (kept to reproduce the paper).
LAYOUTS: tuple[str, ...] = ("spike_driven", "reference")

#: The rate twin's activations: ``rate``, the LIF's constant-input firing rate (a staircase with a
#: surrogate gradient), or ``ramp``, the clipped line through its corners (exact gradient).
RATE_ACTIVATIONS: tuple[str, ...] = ("rate", "ramp")


class EncoderStage(nn.Module):
    """3x3 conv + BN patch embedding -> SDSA -> (side head) -> 2x2 stride-2 conv + BN.

    Spike-driven layout: the stage's input (except the image itself: the encoding layer) and
    the attention's output fire before their convolutions.
    """

    def __init__(
        self, in_channels: int, channels: int, kind: str, timesteps: int, heads: int,
        spike_driven: bool = False, encoding: bool = False,
    ) -> None:
        super().__init__()
        self.encoding = encoding
        self.embed_neuron = optional_neuron(spike_driven and not encoding, kind, timesteps)
        self.embed = SeqConvBN(in_channels, channels, 3)
        self.attention = SDSA(channels, kind, timesteps, heads, spike_driven=spike_driven)
        self.side_head = SideHead(channels)
        self.downsample_neuron = optional_neuron(spike_driven, kind, timesteps)
        self.downsample = SeqConvBN(channels, channels, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoding and torch.is_autocast_enabled(x.device.type):
            # the encoding layer reads the analog image: it stays fp32 under autocast
            with torch.autocast(x.device.type, enabled=False):
                embedded = self.embed(x.float())
        else:
            embedded = self.embed(fire(self.embed_neuron, x))
        features = self.attention(embedded)
        return self.downsample(fire(self.downsample_neuron, features)), features


class DecoderBlock(nn.Module):
    """Residual spiking conv block -> BN -> bilinear x2 -> 3x3 conv + BN.

    Spike-driven layout: residual units that fire first, then neuron -> 3x3 conv + BN ->
    bilinear x2: the convolution reads spikes, at a quarter of the pixels (the upsampling of its
    analog output is interpolation, not a synaptic operation).
    """

    def __init__(self, in_channels: int, out_channels: int, kind: str, timesteps: int, spike_driven: bool = False) -> None:
        super().__init__()
        self.residual = ResidualSpikingConv(in_channels, kind, timesteps, spike_driven=spike_driven)
        self.norm = nn.BatchNorm2d(in_channels)
        self.up_neuron = optional_neuron(spike_driven, kind, timesteps)
        self.up = SeqConvBN(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor, average: bool = False) -> torch.Tensor:
        """``average=True`` (eval mode, reference layout only) returns the mean over timesteps,
        taken right after the last neuron: everything behind it is affine, so the mean commutes
        with it and the upsampling and convolution run once instead of T times."""
        y = self.residual(x, average=average)
        if average:
            x = time_mean(x).unsqueeze(0)
        x = seq_apply(self.norm, y + x)
        if self.up_neuron is not None:
            return seq_apply(upsample2x, self.up(self.up_neuron(x)))
        return self.up(seq_apply(upsample2x, x))


class MedSpikeFormer(Segmenter):
    """MedSpikeFormer: spiking U-shaped transformer with SDSA (all four neuron interactions).

    Args:
        in_channels: image channels (3 for RGB; grey images are replicated).
        widths: channels of the four encoder stages (outputs at H/2 ... H/16).
        timesteps: T, the number of LIF timesteps (direct encoding repeats the image T times).
        heads: attention heads in SDSA (each width must be divisible by it).
        layout: ``"spike_driven"`` (default; only the encoding layer reads analog values) or
            ``"reference"`` (the paper's layout); see :data:`LAYOUTS`.
        threshold: the LIF firing threshold (MODEL.md: 1). A lower one keeps a deep spike-driven
            network active from the start of training (the shipped spiking model uses 0.5).
        spike_levels: spikes a neuron may fire per timestep: 1 (binary LIF, MODEL.md) or D > 1
            (:class:`~napari_medspike.models.neurons.IntegerLIF`: up to D spikes per timestep, as
            D binary virtual sub-steps; every layer still reads spikes).

    Tensors inside are ``[T, B, C, H, W]``; the heads average over T. The side heads feed the
    distribution-alignment loss (``forward(x, side_outputs=True)``) and cost nothing
    otherwise.
    """

    arch = "medspikeformer"
    neuron_kind = "lif"
    recorded_spikes = ("q", "k", "v")
    supports_checkpointing = True
    configurable_timesteps = True

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128, 256),
        timesteps: int = 4,
        heads: int = 4,
        layout: str = "spike_driven",
        threshold: float = 1.0,
        spike_levels: int = 1,
    ) -> None:
        super().__init__(in_channels)
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        if int(spike_levels) != spike_levels or spike_levels < 1:
            raise ValueError(f"spike_levels must be a whole number >= 1, got {spike_levels}")
        if len(widths) != 4:
            raise ValueError(f"widths must list 4 stage widths, got {list(widths)}")
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")
        self.widths, self.timesteps, self.heads = tuple(int(w) for w in widths), int(timesteps), heads
        self.layout = layout
        sd = layout == "spike_driven"
        kind = self.neuron_kind
        dims = (in_channels, *self.widths)
        self.stages = nn.ModuleList(
            EncoderStage(dims[i], dims[i + 1], kind, self.timesteps, heads, spike_driven=sd, encoding=i == 0)
            for i in range(4)
        )
        dec = (*self.widths[::-1], self.widths[0])  # 256 -> 128 -> 64 -> 32 -> 32
        self.decoders = nn.ModuleList(
            DecoderBlock(dec[i], dec[i + 1], kind, self.timesteps, spike_driven=sd) for i in range(4)
        )
        self.head = SegmentationHead(self.widths[0], kind, self.timesteps, spike_driven=sd)
        self.threshold = float(threshold)
        if spike_levels > 1:  # (the twins keep their class's spike_levels = 0)
            self.spike_levels = int(spike_levels)
            for module in self.modules():
                if isinstance(module, Neuron) and isinstance(module.node, LIFNode):
                    module.node = IntegerLIF(self.spike_levels)
        for module in self.modules():
            if isinstance(module, LIFNode):
                module.v_threshold = self.threshold

    @property
    def bf16_on_cpu_pays(self) -> bool:
        """Spike-driven with integer spikes: every convolution after the (fp32) encoding layer
        reads spike counts k/D, which bf16 holds exactly. At 256², batch 1, on 2 cores of an AMD
        EPYC with AVX512-BF16 bf16 cut the shipped model's forward pass by about a fifth, and its
        Kvasir-SEG validation Dice (mirror TTA) was 0.683 against 0.678 in fp32 (an earlier epoch:
        0.656 against 0.663; BENCHMARKS.md, "bf16 on the CPU"). Binary LIF models ran slower
        under bf16 (1255 against 784 ms)."""
        return self.layout == "spike_driven" and self.spike_levels > 1

    @classmethod
    def upgrade_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Checkpoints written before layouts existed hold the reference layout."""
        return {"layout": "reference", **config}

    @property
    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "widths": list(self.widths),
            "timesteps": self.timesteps,
            "heads": self.heads,
            "layout": self.layout,
            "threshold": self.threshold,
            # binary models (spike_levels 1) keep the configuration they were saved with
            **({"spike_levels": self.spike_levels} if self.spike_levels > 1 else {}),
        }

    default_lr = 1e-4
    supports_alignment = True
    has_side_heads = True

    @classmethod
    def config_from(cls, source: Segmenter) -> dict[str, Any]:
        cfg = {"timesteps": 4, **source.config}
        cfg.pop("activation", None)  # a rate twin's
        return cfg

    def dense_reference(self) -> Segmenter:
        return ANNTwin(**ANNTwin.config_from(self))

    def attention_modules(self) -> list[nn.Module]:
        return [stage.attention for stage in self.stages]

    def _encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        h = x.unsqueeze(0)  # [1, B, C, H, W]: broadcast over T at the first neuron
        skips, features = [], []
        for stage in self.stages:
            h, f = self._run_block(stage, h)
            skips.append(h)
            features.append(f)
        return skips, features

    def _decode(self, skips: list[torch.Tensor]) -> torch.Tensor:
        h = skips[-1]
        # The head averages over T; in eval mode the last block of the reference layout averages
        # early (exact, cheaper). The spike-driven head averages after its last neuron instead.
        average_early = not self.training and fastpath.enabled() and self.layout == "reference"
        for i, decoder in enumerate(self.decoders):
            h = self._run_block(decoder, h, average=average_early and i == len(self.decoders) - 1)
            if i < 3:
                h = h + skips[2 - i]
        return self.head(h)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, _ = self._encode(x)
        return self._decode(skips)

    def _forward_with_sides(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the four side-head maps (stage resolutions H, H/2, H/4, H/8), which feed
        the distribution-alignment loss and deep supervision."""
        skips, features = self._encode(x)
        sides = [stage.side_head(f) for stage, f in zip(self.stages, features)]
        return self._decode(skips), sides


class ANNTwin(MedSpikeFormer):
    """MedSpikeFormer's ANN twin: same skeleton and parameters, single pass (T = 1).

    Q, K, V are sigmoid gates instead of LIF spikes and GELU replaces every other LIF; the
    decomposed attention is the same softmax-free one. Its state dict is interchangeable with
    MedSpikeFormer's of the same widths (useful to initialise the SNN from a trained twin).
    """

    arch = "ann_twin"
    configurable_timesteps = False
    neuron_kind = "ann"
    spiking = False
    spike_levels = 0
    default_lr = 1e-3
    supports_alignment = False

    @classmethod
    def config_from(cls, source: Segmenter) -> dict[str, Any]:
        cfg = dict(source.config)
        for option in ("timesteps", "threshold", "activation", "spike_levels"):
            cfg.pop(option, None)
        return cfg

    def dense_reference(self) -> Segmenter:
        return self

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128, 256),
        heads: int = 4,
        layout: str = "spike_driven",
    ) -> None:
        super().__init__(in_channels, widths, timesteps=1, heads=heads, layout=layout)

    @property
    def config(self) -> dict[str, Any]:
        cfg = super().config
        del cfg["timesteps"], cfg["threshold"]
        return cfg


class RateTwin(ANNTwin):
    """MedSpikeFormer's rate twin: one pass, every LIF replaced by its constant-input firing rate.

    Same skeleton and parameters as MedSpikeFormer (state dicts interchangeable), with
    :class:`~napari_medspike.models.neurons.LIFRate` neurons of the SNN's ``timesteps`` and
    ``threshold``. It trains at the cost of the ANN twin, and its weights carry over to the SNN
    far better than the GELU twin's, though not exactly (on Kvasir-SEG validation: rate twin
    0.43 -> SNN 0.42 after one epoch, 0.49 -> 0.44 after five; GELU twin 0.82 -> SNN 0.11).
    """

    arch = "rate_twin"
    neuron_kind = "lif_rate"

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128, 256),
        heads: int = 4,
        layout: str = "spike_driven",
        timesteps: int = 4,
        threshold: float = 1.0,
        activation: str = "rate",
    ) -> None:
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        if activation not in RATE_ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {list(RATE_ACTIVATIONS)}")
        super().__init__(in_channels, widths, heads=heads, layout=layout)
        self.rate_timesteps, self.threshold, self.activation = int(timesteps), float(threshold), activation
        for module in self.modules():
            if isinstance(module, LIFRate):
                module.timesteps, module.threshold = self.rate_timesteps, self.threshold
                module.relaxed = activation == "ramp"

    @classmethod
    def config_from(cls, source: Segmenter) -> dict[str, Any]:
        cfg = {"timesteps": 4, **source.config}
        cfg.pop("spike_levels", None)  # the rate twin models binary LIF rates
        return cfg

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "timesteps": self.rate_timesteps, "threshold": self.threshold,
                "activation": self.activation}
