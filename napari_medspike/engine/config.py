"""What a training run is given and what it reports: the run configuration, progress events and results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ..models.registry import TRAINABLE_ARCHITECTURES

#: Adam learning rates for training from scratch, by architecture (MODEL.md; the classes' ``default_lr``).
DEFAULT_LR = {name: cls.default_lr for name, cls in TRAINABLE_ARCHITECTURES.items()}
#: The same for people: "medqkformer 0.001, medspikeformer 0.0001, ..." (help texts, tooltips).
DEFAULT_LR_TEXT = ", ".join(f"{name} {rate:g}" for name, rate in sorted(DEFAULT_LR.items()))
MAX_SAFE_LR = 1e-2


def option(default: Any = None, help: str = "", *, flag: str | None = None, cli: bool = True,
           factory: Any = None, required: bool = False) -> Any:
    """A :class:`TrainConfig` field with its command-line help (``medspike-train``'s options are
    generated from these fields: one declaration, one default). ``flag`` renames the option;
    ``cli=False`` keeps a field for Python callers only; ``required`` fields have no default."""
    metadata = {"help": help, "flag": flag, "cli": cli}
    if required:
        return field(metadata=metadata)
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything a run needs; saved as ``config.json`` in the run folder."""

    data: list[str] = option(help="folder(s) with images/ and masks/", required=True)
    out_dir: str = option(help="run folder (created)", flag="--out", required=True)
    arch: str = option("medspikeformer", "architecture")
    model_config: dict[str, Any] = option(help='model options as JSON, e.g. \'{"timesteps": 2}\'', flag="--config",
                                          factory=dict)
    init_from: str | None = option(None, "checkpoint whose weights start the run (e.g. the ANN twin)")
    teacher: str | None = option(None, "frozen ANN-twin checkpoint: adds the distribution-alignment loss")
    align_stages: list[int] = option(help="encoder stages to align, comma-separated", factory=lambda: [0, 1, 2, 3])
    align_weight: float = option(1.0, "weight of the alignment loss")
    deep_supervision: float = option(0.0, "models with side heads (medspikeformer, ann_twin; medqkformer with "
                                     "--config '{\"side_heads\": true}'): adds this weight times the side heads' segmentation "
                                     "loss against the masks at each stage's resolution (0: off)")
    distill: str | None = option(None, "frozen segmentation checkpoint (any architecture, trained at the run's "
                                 "size, never on its validation images) whose probabilities are mixed into the "
                                 "training targets (knowledge distillation)")
    distill_mix: float = option(0.5, "weight of the --distill checkpoint's probabilities in the targets "
                                "(0: the masks alone, 1: the checkpoint alone)")
    max_firing_rate: float = option(0.0, "spiking models: a spike budget; adds --firing-weight times the amount by "
                                    "which the neurons' mean firing rate exceeds this rate (0: off)")
    firing_weight: float = option(1.0, "weight of the --max-firing-rate penalty")
    size: int = option(256, "model input size")
    mode: str = option("resize", "resize whole images, or take random crops (histology)")
    epochs: int = option(50, "epochs to train")
    batch_size: int = option(8, "images per step")
    lr: float | None = option(None, f"Adam learning rate (default: the architecture's, {DEFAULT_LR_TEXT})")
    weight_decay: float = option(0.0, "Adam weight decay")
    plateau_patience: int = option(5, "epochs without a lower validation loss before the learning rate halves")
    schedule: str = option("plateau", "learning-rate schedule: plateau (halve it after --plateau-patience epochs "
                           "without a lower validation loss) or cosine (from --lr down to a hundredth of it, step by "
                           "step over the run; with --minutes, over the epochs or the time budget, whichever ends first, "
                           "except in a distributed run, where it follows the epochs)")
    val_fraction: float = option(0.1, "fraction of the images held out for validation (by image, seeded)")
    seed: int = option(0, "seed of the split, the weights' initialisation, the shuffling and the augmentation")
    split_seed: int | None = option(None, "seed of the split alone (default: --seed): keep it and change --seed to "
                                    "train another model, for an ensemble, on the same held-out images")
    augment: bool = option(True, "random flips, rotations and erased patches while training")
    photometric: bool = option(False, "augment colours too: jitter, gamma and blur")
    scale_augment: bool = option(False, "augment scale too: zoom by 0.75-1.25")
    soft_masks: bool = option(False, "resize masks area-weighted, so edge pixels hold the fraction of foreground "
                              "they cover (targets in [0, 1]), instead of by nearest neighbour")
    ema: float = option(0.0, "keep an exponential moving average of the weights with this decay per step "
                        "(e.g. 0.995) and validate and save it instead of the raw weights (0: off)")
    clip_grad: float = option(0.0, "clip the gradient's global norm to this value each step (0: off); spiking "
                              "models meet rare steps with a norm hundreds of times the usual one")
    workers: int = option(0, "DataLoader worker processes")
    checkpointing: bool = option(False, "activation checkpointing (medspikeformer, ann_twin): about half the "
                                 "memory, about a sixth more time per step")
    sltt: int = option(0, "medspikeformer: spatial learning through time, backpropagating through K random "
                       "timesteps with the membrane's path through time detached (K = 1 at T = 4: about half of BPTT's "
                       "memory; 0: full BPTT)")
    norm_calibration: int | None = option(None, "re-estimate batch-norm statistics on N training images before "
                                          "each validation (default: 64 for multi-step spiking models, 0 otherwise)")
    device: str = option("auto", "auto, cuda, mps or cpu")
    precision: str = option("auto", "CUDA arithmetic: bf16 (autocast), fp32, or auto: fp32 for multi-step spiking "
                            "models (their bf16 training step took twice the fp32 one on an H100), bf16 otherwise")
    max_minutes: float | None = option(None, "time budget: stop after the epoch that crosses it", flag="--minutes")
    replay: list[str] = option(help="extra training folders (fine-tune replay)", cli=False, factory=list)
    replay_samples: int = option(0, "how many replay pairs to mix in (0: none)", cli=False)
    keep_initial_as_best: bool = option(False, "fine-tune: the starting weights count as a candidate", cli=False)
    freeze_norm_stats: bool = option(False, "keep batch-norm running statistics as they start (the starting "
                                     "model's): the scale and shift still train")
    frozen: list[str] = option(help="parameter-name prefixes that do not train; the batch norms inside keep their "
                               "statistics too (e.g. a routed model's gate stage)", cli=False, factory=list)
    anchor_weight: float = option(0.0, "pull the weights toward the starting ones (L2-SP): adds this weight times "
                                  "the sum of squared changes to the loss (0: off)")
    resumable: bool = option(True, "write last.pt (weights, optimiser, history) every epoch so --resume can "
                             "continue, and the curves plot; fine-tuning runs are short and skip both", cli=False)
    validate_on_training: bool = option(False, "no held-out pair: validate on the training pairs (and say so)",
                                        cli=False)
    overwrite: bool = option(False, "let a new run replace the trained model and logs already in the run folder")
    description: str = option("", "text for the model card")

    @property
    def split_seed_or_seed(self) -> int:
        """The seed that draws the train/validation split: ``split_seed``, else ``seed``."""
        return self.seed if self.split_seed is None else self.split_seed


@dataclass(frozen=True)
class FinetuneDefaults:
    """The defaults of fine-tuning on corrections, shared by :func:`~.finetune.finetune`,
    ``medspike-finetune`` and the plugin's fine-tune dock, chosen with
    ``benchmarks/adaptation.py`` (BENCHMARKS.md: the default model adapted to PH2 and BUSI).

    ``epochs = 0`` means *auto*: about :attr:`image_passes` training images in all (replayed ones
    included), so few corrections get more epochs (:meth:`epochs_for`); ``lr = 0`` means the architecture's own
    training rate (``default_lr``: 1e-3 for MedQKFormer); ``minutes`` stops the run after the
    epoch that crosses it (0: no limit).
    """

    epochs: int = 0
    lr: float = 0.0
    batch_size: int = 4
    val_fraction: float = 0.2
    image_passes: int = 500
    min_epochs: int = 5
    max_epochs: int = 60
    minutes: float = 3.0
    freeze_norm_stats: bool = False
    anchor_weight: float = 0.0
    #: Keep the starting model for images like its training data (a gate picks per image) when the
    #: corrections are a different kind of image (:mod:`~napari_medspike.engine.routing`).
    route: bool = True

    def epochs_for(self, n_train: int) -> int:
        """Auto epochs for ``n_train`` training images: ``image_passes / n_train``, bounded."""
        return max(self.min_epochs, min(self.max_epochs, round(self.image_passes / max(n_train, 1))))


FINETUNE = FinetuneDefaults()


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite: the run stops at once (the weights of that step
    are lost; ``best.safetensors`` and ``last.pt`` from earlier epochs are kept)."""


class RunFolderError(ValueError):
    """A run folder that does not fit the request: ``resume`` without ``last.pt``, or a new run
    where a trained model already exists (without ``overwrite``). The message names the path."""


class TrainEvent(str, Enum):
    """What a :class:`TrainProgress` reports (its value is the event's words for people)."""

    STEP = "training"  #: a training step done
    START = "start measured"  #: the starting weights validated, before any step (a fine-tune's bar to beat)
    EPOCH = "epoch done"  #: an epoch trained and validated


@dataclass
class TrainProgress:
    """A training step, the starting weights measured, or an epoch's end (``kind``).
    ``metrics`` is filled for the last two; ``held_out`` says whether they were measured on
    held-out images (False: on the training images, where none could be held out, or on none)."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    kind: TrainEvent = TrainEvent.STEP
    held_out: bool = True


@dataclass
class TrainResult:
    """Outcome of :func:`train`."""

    checkpoint: Path | None
    history: list[dict[str, float]]
    best: dict[str, float]
    cancelled: bool
    out_dir: Path
    initial: dict[str, float] | None = None  # validation of the starting weights, if measured
    timed_out: bool = False  # the time budget stopped it before its last epoch
    problems: list[str] = field(default_factory=list)  # pairs left out (unreadable, unmatched), in words


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
    #: The checkpoint keeps the starting model for images like its training data (a gate picks).
    routed: bool = False
    #: What a routed result kept untouched, in words for people (see :meth:`describe`).
    kept: str = "the starting model is kept for images like its training data"
    #: Whether an epoch beat the starting weights (else the checkpoint holds them unchanged).
    improved: bool = True
    #: ``(epochs run, epochs planned)`` when the time limit stopped it before its last epoch.
    time_limited: tuple[int, int] | None = None
    #: Corrections left out (unreadable files, an image without its mask), in words.
    left_out: list[str] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        """Whether both Dice figures exist (a run cancelled before its first epoch has none)."""
        import math

        return math.isfinite(self.dice_before) and math.isfinite(self.dice_after)

    @property
    def _cancelled_early(self) -> bool:
        """Cancelled before an epoch ended: the starting weights were kept, not beaten."""
        return not self.improved and self.cancelled and not self.history

    @property
    def _change(self) -> str:
        """``0.612 -> 0.874``, with a fourth decimal where three would show no change."""
        digits = 3 if f"{self.dice_before:.3f}" != f"{self.dice_after:.3f}" else 4
        return f"{self.dice_before:.{digits}f} -> {self.dice_after:.{digits}f}"

    @property
    def _images(self) -> str:
        return f"{self.validation_images} image{'s' * (self.validation_images != 1)}"

    def describe(self) -> str:
        """One line for people: the Dice before and after, and on what it was measured."""
        if not self.measured:
            return "Dice not measured (cancelled before the first epoch)"
        where = (f"held-out Dice on {self._images}" if self.held_out
                 else "Dice on the corrected image itself (save corrections of 2 or more images to hold one out)")
        if self._cancelled_early:
            return (f"{where}: {self.dice_before:.3f}; cancelled before the first epoch ended, so the starting "
                    "model's weights are kept unchanged")
        limit = ""
        if self.time_limited and not self.cancelled:
            ran, planned = self.time_limited
            limit = (f"; the time limit stopped it after {ran} of {planned} epochs (raise the time limit: "
                     "'time limit' in the dock, --minutes on the command line; 0 for none)")
        if not self.improved:
            return (f"{where}: {self.dice_before:.3f}; no epoch beat the starting model, so its weights are kept "
                    f"unchanged (more corrections or epochs may help){limit}{self._left_out}")
        kept = f"; {self.kept}" if self.routed else ""
        return f"{where}: {self._change}{kept}{limit}{self._left_out}"

    @property
    def _left_out(self) -> str:
        if not self.left_out:
            return ""
        n = len(self.left_out)
        return (f"; {n} correction{'s' * (n != 1)} could not be used and {'were' if n != 1 else 'was'} left out: "
                f"{self.left_out[0]}" + (f" (and {n - 1} more, in the log)" if n > 1 else ""))

    def headline(self) -> str:
        """The figures first, short enough for a one-line notification: ``Dice 0.612 -> 0.874
        (held out: 2 images)``; :meth:`describe` says the rest."""
        if not self.measured:
            return "Dice not measured"
        where = f"held out: {self._images}" if self.held_out else "on the corrected image itself"
        if self._cancelled_early:
            return f"Dice {self.dice_before:.3f}, cancelled before an epoch ended: the starting model is kept ({where})"
        if not self.improved:
            return f"Dice {self.dice_before:.3f}, not improved: the starting model is kept ({where})"
        return f"Dice {self._change} ({where})"
