"""Recording what kind of images a model was trained on, and routing between a model and its
fine-tuned copy (:class:`~napari_medspike.models.routed.RoutedSegmenter`).

A checkpoint may carry a *domain record* (metadata ``"domain"``): the style vectors
(:func:`~napari_medspike.models.routed.style_features`) of up to :data:`DOMAIN_SAMPLES` of its
training images, computed by the model itself. Fine-tuning a model that carries one fits a gate
between those and the corrections' style vectors; when the gate tells the two kinds apart (checked
leaving one image out at a time), the fine-tuned model keeps the starting one for images like its
training data. Corrections of the same kind of image as the training data give a plain fine-tuned
model, as before.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.io import ImageReadError, read_pixels, to_rgb_float
from ..data.resize import resize_image
from ..models.base import Segmenter
from ..models.info import ModelInfo
from ..models.routed import (STYLE_FEATURES, GaussianGate, RoutedSegmenter, StyleFound, style_feature_dim,
                             style_features)

log = logging.getLogger(__name__)

#: Training images whose style vectors a checkpoint keeps (a seeded choice when there are more).
DOMAIN_SAMPLES = 128
#: The fine-tuned kind's variance is shrunk toward the starting kind's with weight n / (n + this).
VARIANCE_PRIOR = 10.0
#: Variances are floored at this fraction of the starting kind's mean variance.
VARIANCE_FLOOR = 1e-2
#: Route only when, leaving one image out at a time, at most this fraction of the starting kind's
#: recorded images would go to the fine-tuned expert ...
MAX_START_MISROUTED = 0.02
#: ... and at least this fraction of the corrections would.
MIN_NEW_ROUTED = 0.8


def image_styles(model: Segmenter, images: Sequence[str | Path | np.ndarray], batch_size: int = 8,
                 skip_unreadable: bool = False) -> torch.Tensor:
    """Style vectors ``[N, dim]`` of ``images`` (files or arrays) as ``model`` sees them: each
    resized to its input size, as whole-image prediction does. ``skip_unreadable`` leaves out
    files that cannot be read (logged) instead of raising, as training skips them."""
    model = model.eval()
    size = model.input_size

    def inputs():
        for image in images:
            try:
                pixels = read_pixels(image) if isinstance(image, (str, Path)) else image
            except ImageReadError as err:
                if not skip_unreadable:
                    raise
                log.warning("style of %s left out: %s", image, err)
                continue
            yield resize_image(torch.from_numpy(np.ascontiguousarray(to_rgb_float(pixels))).permute(2, 0, 1)[None], size)

    rows: list[torch.Tensor] = []
    resized = inputs()
    while batch := list(itertools.islice(resized, batch_size)):
        with torch.inference_mode(), style_features(model, stop=True) as found:
            try:
                model(torch.cat(batch).to(model.device))
            except StyleFound:  # the first stage is all it needs
                pass
        rows.append(found[-1].cpu())
    return torch.cat(rows) if rows else torch.zeros(0, style_feature_dim(model))


def domain_record(model: Segmenter, images: Sequence[str | Path], source: str, seed: int = 0) -> dict[str, Any]:
    """The metadata ``"domain"`` entry for ``model`` trained on ``images``: the style vectors of up
    to :data:`DOMAIN_SAMPLES` of them (a seeded choice; unreadable files left out), rounded to 4
    significant digits."""
    chosen = list(images)
    if len(chosen) > DOMAIN_SAMPLES:
        keep = np.sort(np.random.default_rng(seed).choice(len(chosen), DOMAIN_SAMPLES, replace=False))
        chosen = [chosen[i] for i in keep]
    styles = image_styles(model, chosen, skip_unreadable=True)
    return {"features": STYLE_FEATURES, "source": source, "images": len(styles),
            "styles": [[float(f"{v:.4g}") for v in row] for row in styles.tolist()]}


def recorded_styles(meta: dict[str, Any] | None, dim: int) -> torch.Tensor | None:
    """The style vectors of a checkpoint's domain record, or None if it has none that fits."""
    record = (meta or {}).get("domain")
    if not isinstance(record, dict) or not isinstance(record.get("styles"), list):
        return None
    try:
        styles = torch.tensor(record["styles"], dtype=torch.float32)
    except (TypeError, ValueError):
        return None
    if styles.ndim != 2 or styles.shape[1] != dim or len(styles) < 2 or not bool(torch.isfinite(styles).all()):
        return None
    return styles


def _gaussians(start: torch.Tensor, new: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Means and variances of both kinds: the fine-tuned kind's variance shrunk toward the
    starting kind's (few corrections), both floored."""
    mean0, var0 = start.mean(0), start.var(0)
    floor = VARIANCE_FLOOR * float(var0.mean()) + 1e-12
    mean1 = new.mean(0)
    weight = len(new) / (len(new) + VARIANCE_PRIOR)
    var1 = (weight * new.var(0) + (1 - weight) * var0) if len(new) > 1 else var0
    return mean0, var0 + floor, mean1, var1 + floor


def _scores(start: torch.Tensor, new: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The gate fitted on ``start`` and ``new`` applied to ``rows`` (``> 0``: the new kind)."""
    return GaussianGate(start.shape[1]).set(*_gaussians(start, new))(rows)


@dataclass(frozen=True)
class GateFit:
    """How well a gate tells the starting kind of image from the corrections' (each image scored
    by a gate fitted without it): ``start_misrouted`` is the fraction of the starting model's
    recorded images sent to the fine-tuned expert, ``new_routed`` the fraction of corrections
    that are. ``separates`` says whether both are good enough to route."""

    start_misrouted: float
    new_routed: float
    start_images: int
    new_images: int

    @property
    def separates(self) -> bool:
        """Whether the gate tells the two kinds of image apart well enough to route by it."""
        return self.start_misrouted <= MAX_START_MISROUTED and self.new_routed >= MIN_NEW_ROUTED

    def record(self) -> dict[str, Any]:
        """The fit's figures as the checkpoint's metadata records them."""
        return {"start_images": self.start_images, "corrections": self.new_images,
                "start_misrouted_leave_one_out": round(self.start_misrouted, 4),
                "corrections_routed_leave_one_out": round(self.new_routed, 4)}


def check_gate(start: torch.Tensor, new: torch.Tensor) -> GateFit:
    """Leave-one-out check of the gate between ``start`` and ``new`` style vectors."""
    if len(start) < 2 or len(new) < 2:
        return GateFit(1.0, 0.0, len(start), len(new))
    misrouted = sum(float(_scores(torch.cat([start[:i], start[i + 1:]]), new, start[i : i + 1])[0] > 0)
                    for i in range(len(start)))
    routed = sum(float(_scores(start, torch.cat([new[:i], new[i + 1:]]), new[i : i + 1])[0] > 0)
                 for i in range(len(new)))
    return GateFit(misrouted / len(start), routed / len(new), len(start), len(new))


def routed_model(start: Segmenter, tuned: Segmenter, start_styles: torch.Tensor, new_styles: torch.Tensor) -> RoutedSegmenter:
    """A :class:`RoutedSegmenter` of ``start`` (expert 0) and ``tuned`` (expert 1) with its gate
    fitted on the two kinds' style vectors (both as ``start`` computes them)."""
    if start.arch != tuned.arch or start.config != tuned.config:
        raise ValueError(f"experts must share an architecture: {start.arch} {start.config} vs {tuned.arch} {tuned.config}")
    model = RoutedSegmenter(start.arch, start.config)
    model.experts[0].load_state_dict(start.state_dict())
    model.experts[1].load_state_dict(tuned.state_dict())
    model.gate.set(*_gaussians(start_styles, new_styles))
    model.info = ModelInfo(arch=model.arch, config=model.config, input_size=start.input_size,
                           inference=dict(tuned.info.inference))
    return model.eval()
