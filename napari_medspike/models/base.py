"""What every segmenter shares: input checks, padding to the network's stride, recording."""

from __future__ import annotations

import abc
import contextlib
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn

from ..common import InputError  # noqa: F401 (defined with the shared helpers; models raise it)
from .info import ModelInfo

#: Four 2x downsamplings: spatial sizes must be multiples of this (we pad to it).
STRIDE = 16


def check_input(x: Any, in_channels: int) -> None:
    """Validate a batch for a segmenter and raise :class:`InputError` with advice if it is wrong."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"expected a torch.Tensor of shape [B, C, H, W], got {type(x).__name__}")
    if x.ndim != 4:
        hint = " (add a batch axis: x[None])" if x.ndim == 3 else ""
        raise InputError(f"expected a 4D tensor [B, C, H, W], got shape {tuple(x.shape)}{hint}")
    if x.shape[1] != in_channels:
        hint = ""
        if x.shape[1] == 1 and in_channels == 3:
            hint = " (replicate a grey image: x.expand(-1, 3, -1, -1))"
        elif x.shape[1] == 4 and in_channels == 3:
            hint = " (drop the alpha channel: x[:, :3])"
        elif x.shape[-1] == in_channels:
            hint = " (channels-last array? permute to [B, C, H, W])"
        raise InputError(
            f"expected {in_channels} channels, got {x.shape[1]} in shape {tuple(x.shape)}{hint}"
        )
    if not x.is_floating_point():
        raise InputError(f"expected a floating-point tensor scaled to [0, 1], got {x.dtype}")
    if min(x.shape[-2:]) < STRIDE:
        raise InputError(f"image {tuple(x.shape[-2:])} is too small: both sides must be >= {STRIDE}")
    if not bool(torch.isfinite(x).all()):
        raise InputError("input contains NaN or infinite values")


def pad_to_stride(x: torch.Tensor, stride: int = STRIDE) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad the bottom/right of ``x`` to multiples of ``stride``; return it and (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


@contextlib.contextmanager
def frozen_norm_statistics(module: nn.Module) -> Iterator[None]:
    """Inside, batch norms in training mode normalise with batch statistics as usual but leave
    their running statistics untouched (for the recomputation of a checkpointed block)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


@contextlib.contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """Inside, ``module`` runs in eval mode (batch norms use their running statistics and leave
    them alone); afterwards it is back in the mode it came in (a model mid-training stays in train
    mode)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def checkpointed(block: nn.Module, *inputs: torch.Tensor, **kwargs: Any) -> Any:
    """``block(*inputs)`` that keeps only its inputs for the backward pass and runs it again
    there (activation checkpointing). Neurons are reset at the start of each run, so the
    recomputation sees fresh state like the first run, and batch-norm running statistics are
    updated once, not twice."""
    from torch.utils.checkpoint import checkpoint

    runs = 0

    def run(*args: torch.Tensor) -> Any:
        nonlocal runs
        runs += 1
        functional.reset_net(block)
        if runs == 1:
            return block(*args, **kwargs)
        with frozen_norm_statistics(block):
            return block(*args, **kwargs)

    return checkpoint(run, *inputs, use_reentrant=False)


class Segmenter(nn.Module, abc.ABC):
    """Base of all segmenters: ``forward(x) -> logits [B, 1, H, W]`` at the input's resolution.

    Subclasses implement :meth:`_forward` on padded input and list their attention modules in
    :attr:`attention_modules` (one per encoder stage) for :meth:`forward_intermediates`.
    """

    arch: str = ""
    spiking: bool = True
    timesteps: int = 1
    #: Spike count of a full spike: 1 for binary (LIF) spikes, D for integer spikes ``k/D``
    #: (NISF, read as k binary spikes over D virtual timesteps), 0 for an ANN.
    spike_levels: int = 1
    #: The spike tensors :meth:`forward_intermediates` records per stage.
    recorded_spikes: tuple[str, ...] = ("q", "k")
    #: Module path of the encoding layer: the convolution that reads the image itself, analog by
    #: definition whatever its pixel values (a black frame is no spike train).
    encoding_layer: str = "stages.0.embed.0"

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        # Neuron membranes and recording hooks live on the modules, so two forward passes of
        # one model must not overlap (napari runs jobs in worker threads): they take turns.
        self._forward_lock = threading.RLock()
        #: Set False to skip the input checks (e.g. in a tight training loop on trusted data).
        self.check_inputs = True
        #: Training only: keep just each block's input and recompute the block in the backward
        #: pass (less memory, about a third more compute). Models that support it say so in
        #: :attr:`supports_checkpointing`.
        self.gradient_checkpointing = False

    supports_checkpointing: bool = False
    #: The square input size of an untrained model; a loaded one uses its checkpoint's.
    default_input_size: int = 256
    #: Adam learning rate for training from scratch (MODEL.md).
    default_lr: float = 1e-3
    #: Learns from an ANN teacher through distribution alignment of its side heads.
    supports_alignment: bool = False
    #: Has side heads that only the alignment loss uses (unused parameters otherwise, e.g. for DDP).
    has_side_heads: bool = False
    #: Its number of timesteps is a config option (``timesteps=T``); fixed otherwise.
    configurable_timesteps: bool = False

    @property
    def bf16_on_cpu_pays(self) -> bool:
        """Whether prediction on a CPU with native bf16 runs this model under bf16 autocast by
        default (:func:`~napari_medspike.runtime.bf16_inference`): only where it was measured
        to be faster at a validation Dice within 0.01 of fp32's."""
        return False

    @classmethod
    def config_from(cls, source: Segmenter) -> dict[str, Any]:
        """A config of this architecture on ``source``'s skeleton (to initialise one from the
        other's weights, e.g. the SNN from its trained ANN twin)."""
        return dict(source.config)

    def dense_reference(self) -> Segmenter:
        """The ANN this model's energy is compared with: its ANN twin, or itself."""
        return self

    @property
    def info(self) -> ModelInfo:
        """What this model is and where it comes from (:class:`~.info.ModelInfo`): its
        checkpoint's, or for an untrained model its architecture, config and
        :attr:`default_input_size`."""
        info = self.__dict__.get("_info")
        if info is None or info.arch != self.arch:
            return ModelInfo(arch=self.arch, config=self.config, input_size=self.default_input_size)
        return info

    @info.setter
    def info(self, value: ModelInfo) -> None:
        self.__dict__["_info"] = value

    @property
    def input_size(self) -> int:
        """The square input size the model was trained at (:attr:`info`)."""
        return int(self.info.input_size)

    @property
    def device(self) -> torch.device:
        """Where the weights are now (prediction may have moved a shared model to a GPU): the
        device every input of this model must be on."""
        first = next(itertools.chain(self.parameters(), self.buffers()), None)
        return first.device if first is not None else torch.device("cpu")

    @property
    def checkpoint_info(self) -> dict[str, Any]:
        """:attr:`info` as the plain metadata dict of its checkpoint, plus ``path`` (read-only;
        kept for code written before :class:`~.info.ModelInfo`)."""
        return {**self.info.to_metadata(), "path": self.info.path}

    def __getstate__(self) -> dict[str, Any]:  # copy.deepcopy / pickle: a lock does not copy
        state = self.__dict__.copy()
        state.pop("_forward_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._forward_lock = threading.RLock()

    def _run_block(self, block: nn.Module, *inputs: torch.Tensor, **kwargs: Any) -> Any:
        """``block(*inputs)``, checkpointed when training with :attr:`gradient_checkpointing`."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpointed(block, *inputs, **kwargs)
        return block(*inputs, **kwargs)

    @classmethod
    def upgrade_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A config read from an older checkpoint, completed with the values it implied."""
        return dict(config)

    @property
    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model with :func:`create_model`."""

    @abc.abstractmethod
    def attention_modules(self) -> list[nn.Module]:
        """The attention module of each encoder stage, in order."""

    def recorded_channels(self, stage: int) -> int:
        """Channels of each spike tensor :meth:`forward_intermediates` records at ``stage``."""
        return int(self.attention_modules()[stage].recorded_channels)

    @abc.abstractmethod
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for input already checked and padded to a multiple of :data:`STRIDE`."""

    def _prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.check_inputs:
            check_input(x, self.in_channels)
            self._check_matches_weights(x)
        functional.reset_net(self)
        return pad_to_stride(x)

    def _check_matches_weights(self, x: torch.Tensor) -> None:
        """The device and (outside autocast) the dtype of ``x`` must be the weights': torch's own
        message ("Input type (double) and bias type (float) should be the same") names neither
        the model nor the fix."""
        weight = next(self.parameters(), None)
        if weight is None:
            return
        if x.device != weight.device:
            raise InputError(f"the input is on {x.device}, the model on {weight.device}: "
                             f"move one to the other (x.to(model.device))")
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise InputError(f"the input is {x.dtype}, the model's weights {weight.dtype}: "
                             f"convert the input (x.to({weight.dtype})) or run under torch.autocast")

    def _forward_with_sides(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and side-head logit maps for checked input whose sides are multiples of
        :data:`STRIDE`. :meth:`forward` calls it only on models with :attr:`has_side_heads`,
        which override it."""
        raise NotImplementedError(f"{self.arch} has no side heads")

    def forward(self, x: torch.Tensor, side_outputs: bool = False):
        """Foreground logits ``[B, 1, H, W]`` for images ``x`` ``[B, C, H, W]`` in ``[0, 1]``.

        Sizes that are not multiples of 16 are replicate-padded and the logits cropped back.
        Neuron state is reset before and after every call, so identical inputs give identical
        outputs and no membrane stays in memory between calls.
        With ``side_outputs=True`` (models with side heads, for training losses) it returns
        ``(logits, side_maps)``, the side maps at lower resolutions; the sides must then be
        multiples of 16.
        """
        if side_outputs and not self.has_side_heads:
            raise ValueError(f"{self.arch} has no side heads to output")
        with self._forward_lock:
            x, (h, w) = self._prepare(x)
            try:
                if not side_outputs:
                    return self._forward(x)[..., :h, :w]
                if (h, w) != tuple(x.shape[-2:]):
                    raise ValueError(f"side outputs need sides that are multiples of {STRIDE}, got {(h, w)}")
                return self._forward_with_sides(x)
            finally:
                # and after: the neurons' membranes are as large as the activations (308 MiB for
                # the spiking model at 256²) and would stay allocated, on a GPU too, until the next call
                functional.reset_net(self)

    @contextlib.contextmanager
    def _recording(self) -> Iterator[list[dict[str, torch.Tensor]]]:
        records: list[dict[str, torch.Tensor]] = [{} for _ in self.attention_modules()]
        for module, record in zip(self.attention_modules(), records):
            module.record = record
        try:
            yield records
        finally:
            for module in self.attention_modules():
                module.record = None

    def spiking_layers(self) -> dict[str, nn.Module]:
        """Every spiking neuron layer by module path (empty for an ANN)."""
        if not self.spiking:
            return {}
        from .neurons import SPIKING_NEURONS

        return {name: m for name, m in self.named_modules() if isinstance(m, SPIKING_NEURONS)}

    @contextlib.contextmanager
    def _rate_recording(self) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, int]]]:
        """Record each spiking layer's firing rate per timestep: ``[T]`` for LIF layers (on
        ``[T, B, ...]`` outputs), ``[D]`` per virtual timestep for integer-spike layers (an output
        ``k/D`` is k spikes over D virtual steps: step j fires where ``k > j``); and its size
        (output elements), by which a part's rate weighs its layers."""
        rates: dict[str, torch.Tensor] = {}
        sizes: dict[str, int] = {}

        def hook(name: str):
            def record(module: nn.Module, _inputs: Any, out: torch.Tensor) -> None:
                y = out.detach().float()
                levels = getattr(module, "levels", None)
                if levels:  # integer spikes: the fraction of outputs with more than j spikes
                    counts = torch.round(y * levels)
                    y = torch.stack([(counts > j).float().mean() for j in range(levels)])
                else:
                    y = y.flatten(1).mean(1) if y.ndim >= 2 and getattr(module, "step_mode", "s") == "m" else y.mean().reshape(1)
                rates[name] = y.cpu()
                sizes[name] = out.numel()

            return record

        handles = [m.register_forward_hook(hook(name)) for name, m in self.spiking_layers().items()]
        try:
            yield rates, sizes
        finally:
            for handle in handles:
                handle.remove()

    def forward_intermediates(self, x: torch.Tensor) -> dict[str, Any]:
        """Logits plus what the spiking network did, per encoder stage (timm-style).

        Returns ``{"logits": [B, 1, H, W], "stages": [stage, ...], "firing_rates": {...}}``
        where each stage is ``{"spikes": {"q", "k", ...}, "interactions": {"AA", "AI", "IA",
        "II"}}`` of tensors ``[T, B, C, h, w]`` at that stage's (padded) resolution ``h, w``,
        and ``firing_rates`` maps every spiking layer's module path to its mean firing rate per
        timestep (a ``[T]`` tensor; ``[D]`` virtual timesteps for integer spikes; empty for an
        ANN), ``neurons`` to its number of outputs (the weight of its rate in a part's rate:
        :func:`~napari_medspike.analysis.energy.weighted_rate`). Only this method records; a
        plain ``model(x)`` stores nothing.
        """
        with self._forward_lock, self._recording() as records, self._rate_recording() as (rates, sizes):
            logits = self(x)
        stages = []
        for record in records:
            record = {k: v if v.ndim == 5 else v.unsqueeze(0) for k, v in record.items()}
            interactions = {k: record.pop(k) for k in ("AA", "AI", "IA", "II")}
            stages.append({"spikes": record, "interactions": interactions})
        return {"logits": logits, "stages": stages, "firing_rates": dict(rates), "neurons": dict(sizes)}
