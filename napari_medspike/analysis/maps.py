"""Turn what ``forward_intermediates`` recorded into maps a person can look at.

Maps stay at their stage resolution; :func:`stage_placement` gives the napari ``scale`` and
``translate`` that lay them exactly over the image they came from (no resampling, no blur).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..common import Progress
from ..data.io import image_hw, resize_extent, rgb_for_resize
from ..data.resize import resize_image
from ..models.attention import INTERACTIONS
from ..models import fastpath
from ..models.base import Segmenter, evaluation_mode
from ..runtime import release_free_memory
from .energy import estimate_energy, weighted_rate

REDUCTIONS = ("mean", "max", "channel")
#: The four interaction maps as recorded, or the same information as their sum, the two
#: activity shares and the Q-K association (:func:`decompose_interactions`).
INTERACTION_VIEWS = ("AA, AI, IA, II", "sum, shares, φ")
#: Names of the decomposed maps, in the order they are shown.
DECOMPOSED = ("sum", "Q-active share", "K-active share", "Q–K φ")


def reduce_channels(tensor: torch.Tensor, how: str = "mean", channel: int = 0) -> np.ndarray:
    """``[T, B, C, h, w]`` -> ``[T, h, w]`` float32 for the first batch item.

    ``how`` is ``"mean"`` (for spikes: the fraction of channels firing), ``"max"`` or
    ``"channel"`` (the single channel ``channel``).
    """
    x = tensor[:, 0].float()
    if how == "mean":
        out = x.mean(1)
    elif how == "max":
        out = x.amax(1)
    elif how == "channel":
        if not 0 <= channel < x.shape[1]:
            raise ValueError(f"channel {channel} out of range: this stage has {x.shape[1]} channels")
        out = x[:, channel]
    else:
        raise ValueError(f"unknown reduction {how!r}; use one of {REDUCTIONS}")
    return out.cpu().numpy().astype(np.float32)


def decompose_interactions(maps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The four interaction maps (``AA, AI, IA, II``, never negative, any equal shapes) as what
    sets them apart: at each pixel they form a 2 x 2 table, active or inactive Q against active or
    inactive K. Returns, per pixel (float32, NaN where undefined):

    - ``sum``: ``AA + AI + IA + II``, how much reaches the pixel at all. In SDSA it is the values'
      spike count times ``N d / sqrt(C)`` (the four Q-K matrices add up to N), so the four maps all
      follow V's spikes and look alike; the rest says how they share it;
    - ``Q-active share``: ``(AA + AI) / sum``, the part carried by active queries (in SDSA
      constant within a head: each channel's query firing rate);
    - ``K-active share``: ``(AA + IA) / sum``, the part carried by active keys;
    - ``Q–K φ``: the correlation of the table, ``AA·II - AI·IA`` over the square root of the
      product of its row and column sums,
      in [-1, 1]: above 0 where active queries meet active keys more often than the two shares
      alone predict, 0 where they are independent.

    With ``p, κ, φ`` the shares and ``r = φ sqrt(p(1-p)κ(1-κ))``, ``AA = sum (pκ + r)``,
    ``AI = sum (p(1-κ) - r)``, ``IA = sum ((1-p)κ - r)``, ``II = sum ((1-p)(1-κ) + r)``: the same
    information, nothing added.
    """
    aa, ai, ia, ii = (np.asarray(maps[name], dtype=np.float64) for name in INTERACTIONS)
    total = aa + ai + ia + ii
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = [x / total for x in (aa, ai, ia, ii)]
        p = shares[0] + shares[1]
        kappa = shares[0] + shares[2]
        phi = (shares[0] * shares[3] - shares[1] * shares[2]) / np.sqrt(p * (1 - p) * kappa * (1 - kappa))
    empty = ~(total > 0)
    p[empty], kappa[empty] = np.nan, np.nan
    phi[~np.isfinite(phi)] = np.nan
    phi = np.clip(phi, -1.0, 1.0)  # (rounding)
    out = dict(zip(DECOMPOSED, (total, p, kappa, phi)))
    return {name: array.astype(np.float32) for name, array in out.items()}


def stage_placement(image_shape: tuple[int, int], map_shape: tuple[int, int], padded_shape: tuple[int, int],
                    input_shape: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """napari ``scale`` and ``translate`` (image pixels) of a stage map.

    The model saw the image resized to ``input_shape`` and padded to ``padded_shape``; a stage
    map of ``map_shape`` covers the padded input, so one map pixel spans
    ``padded / map * image / input`` image pixels. The translate puts map pixel centres at the
    centres of the image regions they summarise.
    """
    scale = tuple(
        (padded_shape[i] / map_shape[i]) * (image_shape[i] / input_shape[i]) for i in range(2)
    )
    translate = tuple(s / 2 - 0.5 for s in scale)
    return scale, translate  # type: ignore[return-value]


@dataclass
class StageMaps:
    """Maps of one encoder stage, ready for napari layers.

    ``virtual`` is True for single-step integer-spike models (MedQKFormer): their ``k/D`` outputs are shown
    as D binary virtual timesteps (step j fires where ``k > j``), so ``timesteps`` is D.
    """

    stage: int
    spikes: np.ndarray  # [T, h, w]
    firing_rate: np.ndarray  # [h, w]
    interactions: dict[str, np.ndarray]  # name -> [T, h, w] (T = 1 for MedQKFormer: no time)
    scale: tuple[float, float]
    translate: tuple[float, float]
    spike_name: str
    timesteps: int
    stage_firing_rates: list[float] = field(default_factory=list)
    virtual: bool = False
    #: every spiking layer's firing rate per (virtual) timestep, in network order
    layer_rates: dict[str, np.ndarray] = field(default_factory=dict)
    #: a routed model's choice for this image ("the fine-tuned copy" or "the starting model"); else None
    expert: str | None = None
    #: the interactions as sum, shares and φ (:func:`decompose_interactions`; from the channel mean
    #: when ``how`` is ``"max"``, whose maxima do not add up). SDSA (MedSpikeFormer) only: in
    #: MedQKFormer's SDQK-A each term is a token weight times a key spike, so per channel the
    #: table has no Q-K association (φ = 0) and its sum is the token weights'; empty there
    decomposed: dict[str, np.ndarray] = field(default_factory=dict)
    #: the lowest Pearson correlation between two of the four interaction maps: near 1, they
    #: show one picture
    interaction_correlation: float = float("nan")
    #: spikes per neuron and timestep of a full output (D of integer spikes; 1 binary): a firing
    #: rate here is the mean of k/D
    spike_levels: int = 1


def virtual_timesteps(values: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer spikes ``k/D`` (``[1, ...]``) as D binary virtual timesteps ``[D, ...]``: k spikes
    over D steps, firing in the first k (step j fires where ``k > j``). Any linear layer after
    it gives the same result either way: the mean over the D steps is ``k/D`` again.

    Single-step spikes only (MedQKFormer); a multi-step model's ``[T, ...]`` raises ``ValueError``
    (only its first timestep would be shown)."""
    if values.shape[0] != 1:
        raise ValueError(f"virtual timesteps are for single-step spikes [1, ...]; got {values.shape[0]} "
                         "timesteps: show a multi-step model's spikes per timestep")
    counts = torch.round(values[0].float() * levels)
    return torch.stack([(counts > j).to(values.dtype) for j in range(levels)])


def display_limits(name: str, array: np.ndarray) -> tuple[tuple[float, float], bool]:
    """Contrast limits that show an interaction map well whatever its outliers: the 1st and
    99th percentiles of its finite values (a share is undefined where nothing arrives), made
    symmetric about 0 for a signed map (φ, or any map with values on both sides of 0), and
    never empty; and whether the map is signed (for a diverging colormap)."""
    finite = array[np.isfinite(array)]
    lo, hi = (float(v) for v in np.percentile(finite, (1, 99))) if finite.size else (0.0, 1.0)
    signed = name == DECOMPOSED[3] or lo < 0 < hi
    if signed:
        lo, hi = -max(abs(lo), abs(hi)), max(abs(lo), abs(hi))
    return (lo, hi if hi > lo else lo + 1e-6), signed


def stage_of(layer_name: str) -> str:
    """The part of the network a layer belongs to: ``stage 0``..``stage 3``, ``decoder``, ``head``."""
    parts = layer_name.split(".")
    if parts[0] == "stages" and len(parts) > 1:
        return f"stage {parts[1]}"
    return {"decoders": "decoder", "head": "head"}.get(parts[0], parts[0])


def model_input(image: np.ndarray, size: int, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """The tensor the model sees for an image in resize mode: ``[1, 3, size, size]``, made as
    Segment makes it (:func:`~napari_medspike.data.io.rgb_for_resize`, then the resize)."""
    rgb = torch.from_numpy(np.ascontiguousarray(rgb_for_resize(image, size, value_range))).permute(2, 0, 1)[None]
    return resize_image(rgb, size)


@torch.inference_mode()
def inspect_stage(model: Segmenter, image: np.ndarray, stage: int, spike: str = "v", how: str = "mean",
                  channel: int = 0, size: int | None = None, x: torch.Tensor | None = None) -> StageMaps:
    """Run the model on an image and reduce one stage's spikes and interactions to maps.

    ``spike`` names a recorded spike tensor (:attr:`~napari_medspike.models.Segmenter.recorded_spikes`:
    ``q, k, v`` for MedSpikeFormer, ``q, k`` for MedQKFormer). Single-step integer spikes
    (MedQKFormer) are shown as virtual binary timesteps (:func:`virtual_timesteps`); multi-step
    ones (MedSpikeFormer with ``spike_levels > 1``) per timestep, as ``k/D``. The model runs in
    eval mode (its batch-norm statistics untouched) and is left in the mode it came in.
    """
    if not 0 <= stage < len(model.attention_modules()):
        raise ValueError(f"stage must be 0..{len(model.attention_modules()) - 1}, got {stage}")
    if spike not in model.recorded_spikes:
        raise ValueError(f"{model.arch} records spikes {list(model.recorded_spikes)}, not {spike!r}")
    size = size or model.input_size
    if x is None:  # (given: the model's input made from ``image`` already, at ``size``)
        x = model_input(image, size).to(model.device)  # where Segment left the model (a GPU, maybe)
    with evaluation_mode(model):
        out = model.forward_intermediates(x)
    record = out["stages"][stage]
    spikes = record["spikes"][spike]
    virtual = model.spike_levels > 1 and model.timesteps == 1  # (multi-step integer spikes: shown per timestep, k/D)
    if virtual:
        spikes = virtual_timesteps(spikes, model.spike_levels)
    maps = {name: reduce_channels(record["interactions"][name], how, channel) for name in INTERACTIONS}
    added = maps if how != "max" else {name: reduce_channels(record["interactions"][name]) for name in INTERACTIONS}
    flat = [maps[name].ravel().astype(np.float64) for name in INTERACTIONS]
    with np.errstate(invalid="ignore", divide="ignore"):  # (a constant map has no correlation)
        similarity = float(np.nanmin(np.corrcoef(flat))) if all(f.std() > 0 for f in flat) else float("nan")
    rate = spikes[:, 0].float().mean(dim=(0, 1)).cpu().numpy()
    h_pad = -(-size // 16) * 16
    # (over the part of a large image that its box-averaged input stands for, as Segment's mask)
    extent = resize_extent(*image_hw(image), size)
    scale, translate = stage_placement(extent, tuple(spikes.shape[-2:]), (h_pad, h_pad), (size, size))
    layer_rates = {name: r.numpy().astype(np.float32) for name, r in out["firing_rates"].items()}
    means = {name: float(r.mean()) for name, r in layer_rates.items()}
    stage_rates = [weighted_rate(means, out["neurons"], [n for n in means if stage_of(n) == f"stage {i}"])
                   for i in range(len(out["stages"]))]
    expert = None
    if "routes" in out:
        expert = "the fine-tuned copy" if bool(out["routes"][0]) else "the starting model"
    return StageMaps(stage, reduce_channels(spikes, how, channel), rate.astype(np.float32), maps, scale, translate,
                     spike, spikes.shape[0], stage_rates, virtual, layer_rates, expert,
                     decompose_interactions(added) if "v" in record["spikes"] else {}, similarity,
                     max(int(model.spike_levels), 1))


def inspect_steps(model: Segmenter, image: np.ndarray, stage: int, spike: str = "v", how: str = "mean",
                  channel: int = 0, value_range: tuple[float, float] | None = None
                  ) -> Generator[Progress, None, tuple[StageMaps, Any]]:
    """The spike inspector's job: :func:`inspect_stage`'s maps of one stage, then the energy
    estimate of the whole forward pass (:func:`~.energy.estimate_energy`); yields progress and
    returns ``(maps, energy report)``.

    Both run the network as specified (MODEL.md), not the merged inference fast paths, which
    round a few spikes differently (a few per cent of the deepest stage's): the maps, firing rates and energy
    shown together come from passes that agree spike for spike. ``value_range``: as for
    :func:`~napari_medspike.inference.predictor.predict_steps`.
    """
    yield Progress(0, 2, "forward with recording")
    x = model_input(image, model.input_size, value_range).to(model.device)  # made once: a large image is shrunk once
    with fastpath.disabled():
        maps = inspect_stage(model, image, stage, spike=spike, how=how, channel=channel, x=x)
    yield Progress(1, 2, "energy")
    report = estimate_energy(model, x)
    del x
    # the recording passes' large tensors are not repeated by the next Segment: their memory goes
    # back to the system (the inference allocator keeps it: 0.8 GB after one inspection on a polyp)
    release_free_memory(even_if_tuned=True)
    yield Progress(2, 2, "done")
    return maps, report
