"""What a training run is given and what it reports: the run configuration, progress events and results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models.registry import ARCHITECTURES

#: Adam learning rates for training from scratch, by architecture (MODEL.md; the classes' ``default_lr``).
DEFAULT_LR = {name: cls.default_lr for name, cls in ARCHITECTURES.items()}
MAX_SAFE_LR = 1e-2


@dataclass
class TrainConfig:
    """Everything a run needs; saved as ``config.json`` in the run folder."""

    data: list[str]
    out_dir: str
    arch: str = "medspikeformer"
    model_config: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # checkpoint whose weights start the run (e.g. the ANN twin)
    teacher: str | None = None  # frozen ANN twin for distribution alignment (MedSpikeFormer)
    align_stages: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    align_weight: float = 1.0
    size: int = 256
    mode: str = "resize"  # "resize" whole images, or "crop" random crops (histology)
    epochs: int = 50
    batch_size: int = 8
    lr: float | None = None  # default per architecture (DEFAULT_LR)
    weight_decay: float = 0.0
    plateau_patience: int = 5
    val_fraction: float = 0.1
    seed: int = 0
    augment: bool = True
    workers: int = 0
    checkpointing: bool = False  # activation checkpointing (MedSpikeFormer/twin): less memory, ~1/3 more compute
    sltt: int = 0  # MedSpikeFormer: backpropagate through this many random timesteps, spatially only (0: full BPTT)
    # training images on which batch-norm running statistics are estimated again before each
    # validation (None: 64 for models with multi-step spiking neurons, 0 otherwise)
    norm_calibration: int | None = None
    device: str = "auto"
    max_minutes: float | None = None  # stop after the epoch that crosses this budget
    replay: list[str] = field(default_factory=list)  # extra training folders (fine-tune replay)
    replay_samples: int = 0  # how many replay pairs to mix in (0: none)
    keep_initial_as_best: bool = False  # fine-tune: the starting weights count as a candidate
    validate_on_training: bool = False  # no held-out pair: validate on the training pairs (and say so)
    overwrite: bool = False  # a new run may replace the trained model (and logs) already in out_dir
    description: str = ""


class RunFolderError(ValueError):
    """A run folder that does not fit the request: ``resume`` without ``last.pt``, or a new run
    where a trained model already exists (without ``overwrite``). The message names the path."""


@dataclass
class TrainProgress:
    """A training step or epoch end. ``metrics`` is filled at epoch end."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""


@dataclass
class TrainResult:
    """Outcome of :func:`train`."""

    checkpoint: Path | None
    history: list[dict[str, float]]
    best: dict[str, float]
    cancelled: bool
    out_dir: Path
    initial: dict[str, float] | None = None  # validation of the starting weights, if measured


@dataclass
class FinetuneResult:
    """Outcome of :func:`finetune`. ``held_out`` is False when there were too few corrections
    to hold one out: the Dice figures are then on the corrections themselves."""

    checkpoint: Path
    history: list[dict[str, float]]
    dice_before: float
    dice_after: float
    cancelled: bool
    held_out: bool = True
    validation_images: int = 0

    def describe(self) -> str:
        """One line for people: the Dice before and after, and on what it was measured."""
        import math

        if not (math.isfinite(self.dice_before) and math.isfinite(self.dice_after)):
            return "Dice not measured (cancelled before the first epoch)"
        where = (f"held-out Dice on {self.validation_images} image{'s' * (self.validation_images != 1)}"
                 if self.held_out else "Dice on the corrected image itself (save 2 or more corrections to "
                 "hold one out)")
        return f"{where}: {self.dice_before:.3f} -> {self.dice_after:.3f}"
