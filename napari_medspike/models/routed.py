"""A model and its fine-tuned copy behind a gate that picks one per image by the kind of image.

Fine-tuning on corrections of a new kind of image (dermoscopy for a polyp model) makes a network
forget the old kind: no single small network measured here kept both. So a fine-tuned model
keeps its starting model as a second expert and a gate sends each image to the expert trained on
images like it (Expert Gate, Aljundi et al., CVPR 2017, with Gaussian gates instead of
auto-encoders). The gate reads the *style* of an image: the spatial mean and standard deviation
of every channel of the starting model's first encoder stage (colour, texture and contrast
statistics, which tell endoscopy, dermoscopy, ultrasound and histology apart), and compares
their likelihood under one diagonal Gaussian per kind of image.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .base import Segmenter

#: What the gate reads, as model cards and checkpoint metadata name it.
STYLE_FEATURES = "spatial mean and standard deviation of each channel of the first encoder stage"


def style_feature_dim(model: Segmenter) -> int:
    """Length of :func:`style_features`' vectors for ``model`` (2 x its first stage width)."""
    return 2 * int(model.config["widths"][0])


class StyleFound(Exception):
    """Raised by :func:`style_features` with ``stop=True`` to end a forward pass after the first
    stage: the gate needs no more."""


@contextlib.contextmanager
def style_features(model: Segmenter, stop: bool = False) -> Iterator[list[torch.Tensor]]:
    """Inside, each forward pass of ``model`` appends the style vectors ``[B, 2 C]`` of its
    batch (first encoder stage output: per channel spatial mean, then standard deviation;
    averaged over timesteps for a multi-step output ``[T, B, C, h, w]``). With ``stop``, the pass
    ends there by raising :class:`StyleFound` (the caller catches it)."""
    found: list[torch.Tensor] = []
    owner = threading.get_ident()

    def hook(_module: nn.Module, _inputs: Any, out: Any) -> None:
        if threading.get_ident() != owner:  # another thread's pass (Segment while a fine-tune ends): not ours
            return
        y = (out[0] if isinstance(out, (tuple, list)) else out).detach().float()  # (output, side features)
        if y.ndim == 5:  # [T, B, C, h, w]: the style of the mean over timesteps
            y = y.mean(0)
        found.append(torch.cat([y.mean((-2, -1)), y.std((-2, -1))], 1))
        if stop:
            raise StyleFound("style vectors found: the rest of the pass is not needed")

    handle = model.stages[0].register_forward_hook(hook)
    try:
        yield found
    finally:
        handle.remove()


class GaussianGate(nn.Module):
    """Log-likelihood ratio of a style vector under two diagonal Gaussians: ``> 0`` means the
    second kind of image (the fine-tuned expert's). Its statistics are buffers (saved with the
    weights); :func:`napari_medspike.engine.routing.fit_gate` fits them."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        for name in ("mean0", "mean1"):
            self.register_buffer(name, torch.zeros(dim))
        for name in ("var0", "var1"):
            self.register_buffer(name, torch.ones(dim))

    def set(self, mean0: torch.Tensor, var0: torch.Tensor, mean1: torch.Tensor, var1: torch.Tensor) -> GaussianGate:
        """Set both Gaussians (variances must be positive); returns ``self``."""
        if bool((var0 <= 0).any() or (var1 <= 0).any()):
            raise ValueError("gate variances must be positive")
        for name, value in zip(("mean0", "var0", "mean1", "var1"), (mean0, var0, mean1, var1)):
            getattr(self, name).copy_(value.reshape(-1).float())
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``log p1(f) - log p0(f)`` per row of ``features`` ``[N, dim]`` (on any device)."""
        f = features.float().to(self.mean0.device)

        def log_likelihood(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
            return -0.5 * (((f - mean) ** 2) / var + torch.log(var)).sum(1)

        return log_likelihood(self.mean1, self.var1) - log_likelihood(self.mean0, self.var0)


class RoutedSegmenter(Segmenter):
    """Two experts of one architecture and a gate: ``experts[0]`` is the model fine-tuning
    started from, ``experts[1]`` the fine-tuned one.

    Every image first goes through expert 0's first encoder stage, which gives the gate its style
    vector; then through the whole expert the gate picks. So images like the starting model's
    training data get exactly the starting model's output, and images like the corrections the
    fine-tuned model's, each for one pass plus one first stage.

    Args:
        expert_arch: architecture of both experts (any other than ``"routed"``).
        expert_config: their config (see :func:`~.registry.create_model`).
    """

    arch = "routed"
    supports_alignment = False
    supports_checkpointing = False

    def __init__(self, expert_arch: str = "medqkformer", expert_config: dict[str, Any] | None = None) -> None:
        from .registry import create_model, model_class

        if model_class(expert_arch) is RoutedSegmenter:
            raise ValueError("the experts of a routed model cannot be routed models themselves")
        config = model_class(expert_arch).upgrade_config(dict(expert_config or {}))
        experts = [create_model(expert_arch, **config) for _ in range(2)]
        if not hasattr(experts[0], "stages"):
            raise ValueError(f"{expert_arch} has no encoder stages for the gate to read")
        super().__init__(experts[0].in_channels)
        self.experts = nn.ModuleList(experts)
        self.gate = GaussianGate(style_feature_dim(experts[0]))
        self.expert_arch = experts[0].arch
        # what the inspector and the energy accounting read: the experts'
        for name in ("spiking", "timesteps", "spike_levels", "recorded_spikes", "default_lr", "default_input_size"):
            setattr(self, name, getattr(experts[0], name))

    @property
    def config(self) -> dict[str, Any]:
        return {"expert_arch": self.expert_arch, "expert_config": self.experts[0].config}

    @property
    def stages(self) -> nn.ModuleList:
        """The starting expert's encoder stages (the first one feeds the gate)."""
        return self.experts[0].stages

    def attention_modules(self) -> list[nn.Module]:
        return self.experts[0].attention_modules()

    def dense_reference(self) -> Segmenter:
        return self.experts[0].dense_reference()

    def routes(self, features: torch.Tensor) -> torch.Tensor:
        """Which images (rows of style vectors) go to the fine-tuned expert: a bool ``[N]``."""
        return self.gate(features) > 0

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        chosen = self.route(x)
        if bool(chosen.all()) or not bool(chosen.any()):
            return self.experts[int(chosen[0])](x)
        parts = [(rows, self.experts[e](x[rows])) for e, rows in enumerate(((~chosen).nonzero().flatten(),
                                                                              chosen.nonzero().flatten()))]
        logits = parts[0][1].new_empty((len(x), *parts[0][1].shape[1:]))
        for rows, out in parts:
            logits[rows] = out.to(logits.dtype)
        return logits

    def route(self, x: torch.Tensor) -> torch.Tensor:
        """Which images of ``x`` ``[B, C, H, W]`` go to the fine-tuned expert (bool ``[B]``);
        runs expert 0's first encoder stage on them."""
        with self._forward_lock, torch.no_grad(), style_features(self.experts[0], stop=True) as found:
            try:
                self.experts[0](x)
            except StyleFound:
                pass
        if not found:
            raise RuntimeError(f"{self.expert_arch}'s first encoder stage did not run: no style for the gate")
        return self.routes(found[-1])

    def expert_for(self, image: torch.Tensor) -> Segmenter:
        """The expert the gate picks for one whole image ``[1, C, H, W]`` (at the model's input
        size, as the domain records were made). Tiled prediction sends every tile of the image to
        it: a tile's own style (a crop of background, a patch of hair) can look like another kind
        of image, and tiles answered by different experts would meet at visible seams."""
        if image.ndim != 4 or len(image) != 1:
            raise ValueError(f"expert_for takes one image [1, C, H, W], got shape {tuple(image.shape)}")
        return self.experts[int(self.route(image)[0])]

    def forward_intermediates(self, x: torch.Tensor) -> dict[str, Any]:
        """The chosen expert's :meth:`~.base.Segmenter.forward_intermediates`, plus ``"routes"``
        (bool ``[B]``: True where the fine-tuned expert answered). A batch that mixes both
        kinds is split and its records joined again in batch order (firing rates: the mean over
        images)."""
        with self._forward_lock:
            chosen = self.route(x)
            parts = []
            for index, expert in enumerate(self.experts):
                rows = (chosen if index else ~chosen).nonzero().flatten()
                if len(rows):
                    parts.append((rows, expert.forward_intermediates(x if len(rows) == len(x) else x[rows])))
        if len(parts) == 1:
            return {**parts[0][1], "routes": chosen}
        order = torch.argsort(torch.cat([rows for rows, _ in parts]))
        first, second = parts[0][1], parts[1][1]
        stages = []
        for a, b in zip(first["stages"], second["stages"]):
            stages.append({group: {k: torch.cat([a[group][k], b[group][k]], 1)[:, order] for k in a[group]}
                           for group in a})
        weights = [len(rows) / len(x) for rows, _ in parts]
        rates = {k: first["firing_rates"][k] * weights[0] + second["firing_rates"][k] * weights[1]
                 for k in first["firing_rates"]}
        logits = torch.cat([first["logits"], second["logits"]])[order]
        neurons = {k: first["neurons"][k] + second["neurons"][k] for k in first["neurons"]}
        return {"logits": logits, "stages": stages, "firing_rates": rates, "neurons": neurons, "routes": chosen}
