"""The training loop: train and validate the segmenters (fine-tuning: :mod:`.finetune`;
configuration and events: :mod:`.config`; logs, curves and model cards: :mod:`.reports`).

One loop serves the command line (``training/``), the plugin's fine-tune widget and
``torchrun`` (DistributedDataParallel: gloo on CPU, nccl on GPU). It is a generator of
progress events (:func:`train_steps`, run by the plugin in a napari worker) and
:func:`train` runs it with an optional ``progress`` callback; a ``cancel`` event stops it
after the current step, keeping the best checkpoint so far.

Run folder contents: ``best.safetensors`` (+ ``best.md`` model card), ``last.pt`` (resume state,
tensors only, loaded with ``weights_only=True``), ``split.json``, ``history.csv``,
``history.json``, ``curves.png``, ``config.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import kornia.augmentation as K  # at import, not in the first training step (a freeze in napari)
import torch
import torch.distributed as dist
from spikingjelly.activation_based import monitor

from ..data.dataset import CachedPairs, find_pairs, split_pairs, write_split
from ..models import alignment_loss, create_model, segmentation_loss
from ..models.losses import FiringRatePenalty, deep_supervision_loss, distilled_targets
from ..models.base import Segmenter
from ..models.info import ModelInfo
from ..models.registry import TRAINABLE_ARCHITECTURES, model_class
from ..models.neurons import SPIKING_NEURONS
from ..models.sltt import sltt_forward
from ..common import atomic_write, remove_stale_temp_files, run_job
from ..runtime import PRECISIONS, bf16_autocast_pays, pick_device, release_free_memory
from .checkpoint import MAX_INPUT_SIZE, load_model, read_metadata, resolve_checkpoint, save_checkpoint
from .config import MAX_SAFE_LR, RunFolderError, TrainConfig, TrainEvent, TrainingDiverged, TrainProgress, TrainResult
from .metrics import per_image_metrics
from .schedule import SCHEDULES, CosineSchedule
from .reports import dataset_name, plot_curves, refresh_metadata, refresh_training_record, write_logs, write_model_card

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- helpers


def _is_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def seed_everything(seed: int) -> None:
    """Seed Python and torch (all data order and augmentation use torch's RNG)."""
    random.seed(seed)
    torch.manual_seed(seed)


def build_augment(photometric: bool = False, scale: bool = False, soft_masks: bool = False) -> torch.nn.Module:
    """MODEL.md's augmentation with kornia on batches: flips, rotation ±35°, coarse dropout.

    ``photometric`` adds colour jitter, gamma and blur (another camera or stain); ``scale`` adds
    zoom by 0.75-1.25 (another distance to the tissue). Masks come out 0/1, or with
    ``soft_masks`` (fractions of foreground) moved bilinearly with the image and kept soft."""
    steps = [K.RandomHorizontalFlip(), K.RandomVerticalFlip(), K.RandomRotation(35.0, p=0.7)]
    if scale:
        steps.append(K.RandomAffine(degrees=0.0, scale=(0.75, 1.25), p=0.5))
    # soft masks travel as a fourth image channel (bilinear); 0/1 masks as masks (nearest)
    geometric = K.AugmentationSequential(*steps, data_keys=["input"] if soft_masks else ["input", "mask"])
    colour = K.AugmentationSequential(
        K.ColorJitter(0.2, 0.2, 0.2, 0.03, p=0.8),
        K.RandomGamma((0.7, 1.5), p=0.3),
        K.RandomGaussianBlur((5, 5), (0.1, 1.5), p=0.2),
    ) if photometric else None
    dropout = K.RandomErasing(scale=(0.01, 0.06), ratio=(0.5, 2.0), p=0.3)

    class Augment(torch.nn.Module):
        def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if soft_masks:
                both = geometric(torch.cat([x, m.to(x.dtype)], dim=1))
                x, m = both[:, :-1], both[:, -1:].clamp(0.0, 1.0)
            else:
                x, m = geometric(x, m)
                m = (m > 0.5).to(x.dtype)
            if colour is not None:
                x = colour(x).clamp(0.0, 1.0)
            return dropout(x), m

    return Augment()


def _firing_rate(model: Segmenter, x: torch.Tensor) -> float:
    if not model.spiking:
        return float("nan")
    with monitor.OutputMonitor(model, SPIKING_NEURONS, lambda y: float(y.float().mean())) as mon:
        model(x)
    return sum(mon.records) / max(len(mon.records), 1)


#: Training images that re-estimate batch-norm statistics of multi-step spiking models.
NORM_CALIBRATION_IMAGES = 64


def norm_calibration_images(cfg: TrainConfig, model: Segmenter) -> int:
    """How many training images re-estimate the batch-norm statistics before each validation.

    A multi-step LIF network's running statistics (an average over past batches of weights that
    have moved since) drift from what its current weights produce, and threshold neurons turn
    a small drift into silent layers: the spike-driven MedSpikeFormer scored validation Dice 0.0
    with its running statistics after one epoch and 0.38 with statistics re-estimated on 64
    training images. ``cfg.norm_calibration`` overrides the default."""
    if cfg.norm_calibration is not None:
        return max(0, int(cfg.norm_calibration))
    return NORM_CALIBRATION_IMAGES if int(getattr(model, "timesteps", 1)) > 1 and model.spiking else 0


def freeze_norm_statistics(model: torch.nn.Module) -> None:
    """Put every batch norm in eval mode: it normalises with its running statistics and stops
    updating them (its scale and shift still train). Call after ``model.train()``."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def uses_bf16(precision: str, model: Segmenter) -> bool:
    """Whether a CUDA run trains ``model`` under bf16 autocast; ``"auto"``: where it pays
    (:func:`~napari_medspike.runtime.bf16_autocast_pays`: not for multi-step spiking models)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
    if precision == "auto":
        return bf16_autocast_pays(model)
    return precision == "bf16"


def ema_update(decay: float, warmup: bool = False) -> Callable[[list, list, torch.Tensor], None]:
    """The weight average's update for ``AveragedModel(multi_avg_fn=...)``: an exponential moving
    average with ``decay`` per step, or, with ``warmup`` (a run from random weights),
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates. Without it the random start fades
    slowly: at 0.999 it is still 12 % of the average after 2000 steps (a MedQKFormer trained from
    scratch on Kvasir-SEG with --ema 0.999 validated at Dice 0 after 44 epochs, its raw loss
    falling). A run from trained weights starts its average from them, without warm-up."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"the moving average's decay must lie in [0, 1], got {decay}")
    if not warmup:
        return torch.optim.swa_utils.get_ema_multi_avg_fn(decay)

    def update(averaged: list, current: list, num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        torch.optim.swa_utils.get_ema_multi_avg_fn(min(decay, (1.0 + n) / (10.0 + n)))(averaged, current, num_averaged)

    return update


def check_teacher_size(cfg: TrainConfig) -> None:
    """Refuse an alignment teacher trained at another input size than the run's: its side maps
    there mislead the student. (The GELU twin trained at 128² on Kvasir-SEG has a segmentation
    loss of 0.44 at 128² and 18 at 256², and the alignment loss grows from 0.03 to 4.8.)"""
    if cfg.teacher:
        _check_trained_size(read_metadata(resolve_checkpoint(cfg.teacher)), cfg.size, f"the teacher {cfg.teacher}",
                            f"an ANN twin is a teacher only at its own size. Train the twin at {cfg.size}x{cfg.size} "
                            f"first (--arch ann_twin --size {cfg.size}), or ")


#: The smallest input size a model trains at: the deepest stage sees a sixteenth of it, and at 16
#: (one pixel) a batch norm fails on a batch of one image.
MIN_TRAINING_SIZE = 32


def _check_trained_size(meta: dict[str, Any], size: int, what: str, advice: str = "") -> None:
    """Raise if the checkpoint described by ``meta`` was trained at another input size than ``size``."""
    trained = meta.get("input_size")
    if trained is not None and int(trained) != size:
        raise ValueError(f"{what} was trained at {trained}x{trained} but this run is at {size}x{size}: "
                         f"{advice}run at --size {trained}")


def check_distiller(cfg: TrainConfig, val_keys: list[str]) -> None:
    """Refuse a distillation checkpoint that was trained at another size than the run's, or on any
    of the run's validation images (its soft targets would carry them into training)."""
    if not 0.0 <= cfg.distill_mix <= 1.0:
        raise ValueError(f"--distill-mix must lie in [0, 1], got {cfg.distill_mix}")
    meta = read_metadata(resolve_checkpoint(cfg.distill))
    _check_trained_size(meta, cfg.size, f"the distillation checkpoint {cfg.distill}")
    record = meta.get("training") or {}
    if "val_keys" not in record or "data" not in record:
        raise ValueError(f"the distillation checkpoint {cfg.distill} does not record which images it was trained "
                         "on, so it could have seen this run's validation images: use a checkpoint trained with "
                         "medspike-train")
    its_folders = {dataset_name(d) for d in record["data"]}
    its_val = set(record["val_keys"])
    seen = [k for k in val_keys if k.split("/")[0] in its_folders and k not in its_val]
    if seen:
        raise ValueError(f"the distillation checkpoint {cfg.distill} was trained on {len(seen)} of this run's "
                         f"{len(val_keys)} validation images (e.g. {seen[0]}): use the same split seed and "
                         "--val-fraction as its run, or another checkpoint")


def _under(name: str, prefixes: list[str]) -> bool:
    """Whether a module, parameter or buffer path lies under one of the module paths ``prefixes``."""
    return any(name == p.rstrip(".") or name.startswith(p.rstrip(".") + ".") for p in prefixes)


def freeze_parts(model: torch.nn.Module, prefixes: list[str]) -> None:
    """Stop the parameters under ``prefixes`` (module paths) from training and put the batch
    norms there in eval mode (their statistics stay). Call after ``model.train()``."""
    if not prefixes:
        return
    found = False
    for name, module in model.named_modules():
        if _under(name, prefixes):
            found = True
            module.requires_grad_(False)
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
    if not found:
        raise ValueError(f"no module of {type(model).__name__} under {prefixes}")


def anchor_penalty(model: torch.nn.Module, anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of squared differences between the model's weights and ``anchor`` (L2-SP, Li et al. 2018)."""
    return sum(((p - anchor[name]) ** 2).sum() for name, p in model.named_parameters() if name in anchor)


@torch.no_grad()
def recalibrate_norms(model: Segmenter, dataset: torch.utils.data.Dataset, count: int, batch_size: int,
                      device: torch.device) -> None:
    """Re-estimate batch-norm running statistics on the first ``count`` items of ``dataset``
    (no augmentation, equal weight per batch), as ``torch.optim.swa_utils.update_bn`` does."""
    from torch.optim.swa_utils import update_bn

    subset = torch.utils.data.Subset(dataset, range(min(count, len(dataset))))
    if len(subset):
        update_bn(torch.utils.data.DataLoader(subset, batch_size=batch_size), model, device)


@torch.no_grad()
def validate(model: Segmenter, loader: torch.utils.data.DataLoader, device: torch.device,
             cancel: threading.Event | None = None) -> dict[str, float] | None:
    """Mean loss, Dice and IoU (per image, threshold 0.5) and firing rate on a loader; ``None``
    when ``cancel`` is set before it ends (checked before each batch)."""
    model.eval()
    losses, dice, iou, rate = [], [], [], float("nan")
    for i, (x, y) in enumerate(loader):
        if cancel is not None and cancel.is_set():
            return None
        x, y = x.to(device), y.to(device)
        logits = model(x)
        losses.append(float(segmentation_loss(logits, y)) * len(x))
        m = per_image_metrics(logits > 0, y > 0.5)
        dice.extend(m["dice"].tolist())
        iou.extend(m["iou"].tolist())
        if i == 0:
            rate = _firing_rate(model, x)
    n = max(len(dice), 1)
    return {
        "val_loss": sum(losses) / n,
        "val_dice": sum(dice) / n,
        "val_iou": sum(iou) / n,
        "firing_rate": rate,
    }


# --------------------------------------------------------------------------- the loop


def _held_out_by(checkpoint: str | None) -> set[str]:
    """The keys of the images ``checkpoint`` records as its validation images (none: empty)."""
    if not checkpoint:
        return set()
    record = read_metadata(resolve_checkpoint(checkpoint)).get("training") or {}
    return set(record.get("val_keys") or [])


def _datasets(cfg: TrainConfig, out: Path, resume: bool = False
              ) -> tuple[CachedPairs, CachedPairs, list[str], set[str]]:
    """The training and validation sets (nothing written: see :func:`_write_split`), the problems
    met and the keys of the replayed pairs; a resumed run is checked to hold out the images it
    held out before (:func:`check_resumed_split`)."""
    pairs, problems = find_pairs(cfg.data)
    if not pairs:
        raise ValueError(f"no image/mask pairs found in {', '.join(map(str, cfg.data))} (each folder must hold "
                         "images/ and masks/ with matching names; subfolders are not searched)"
                         + (f": {problems[0]}" if problems else ""))
    train_pairs, val_pairs = split_pairs(pairs, cfg.val_fraction, cfg.split_seed_or_seed)
    if not val_pairs and cfg.validate_on_training:  # e.g. one correction: measure on it, flagged
        val_pairs = list(train_pairs)
    if resume:
        check_resumed_split(out / "split.json", val_pairs)
    replayed: list = []
    if cfg.replay and cfg.replay_samples > 0:
        replay, replay_problems = find_pairs(cfg.replay)
        problems += replay_problems
        # never an image this run holds out or already trains on, nor one the starting model was
        # validated on (its figures, and a later evaluation of this run on them, would be trained on)
        taken = {p.key for p in train_pairs} | {p.key for p in val_pairs} | _held_out_by(cfg.init_from)
        replay = [p for p in replay if p.key not in taken]
        rng = random.Random(cfg.seed)
        replayed = rng.sample(replay, min(cfg.replay_samples, len(replay)))
        train_pairs = train_pairs + replayed
    train_set = CachedPairs(train_pairs, cfg.size, cfg.mode, random_crops=True, soft_masks=cfg.soft_masks)
    val_set = CachedPairs(val_pairs, cfg.size, cfg.mode, random_crops=False, soft_masks=cfg.soft_masks)
    problems += train_set.problems + val_set.problems
    if len(train_set) == 0:
        raise ValueError("no readable training pairs" + (f": {problems[0]}" if problems else ""))
    return train_set, val_set, problems, {p.key for p in replayed}


def _write_split(cfg: TrainConfig, out: Path, train_set: CachedPairs, val_set: CachedPairs) -> None:
    """``split.json``: the pairs actually used; unreadable ones apart, under "skipped"."""
    train_keys = {p.key for p in train_set.pairs}
    skipped = train_set.skipped + [s for s in val_set.skipped if s[0].key not in train_keys]
    write_split(out / "split.json", train_set.pairs, val_set.pairs, cfg.split_seed_or_seed, skipped=skipped)


def check_resumed_split(split_file: Path, val_pairs: Sequence[Any]) -> None:
    """Refuse (:class:`RunFolderError`) to resume a run whose data now give other validation
    images than it held out (images added to or removed from its folders, or another folder of
    the same name): the split is drawn again from the data, so images validated on would be
    trained on and the best epoch compared across two sets. Unreadable images, skipped then or
    now, are left out of the comparison; a run without ``split.json`` is not checked."""
    try:
        recorded = json.loads(split_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    skipped = {row["key"] for row in recorded.get("skipped", [])}
    then = {row["key"] for row in recorded.get("val", [])} - skipped
    now = {p.key for p in val_pairs} - skipped
    if then != now:
        gone, new = sorted(then - now), sorted(now - then)
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        said = "; ".join(part for part in (f"no longer held out: {some(gone)}" if gone else "",
                                           f"newly held out: {some(new)}" if new else "") if part)
        raise RunFolderError(
            f"cannot resume {split_file.parent}: its data now give other validation images than the run held out "
            f"({said}), as when images are added to, or removed from, its folders. Resume with the data it was "
            "started with, or start a new run (--init-from its best.safetensors to start from its weights)")


#: The files of a run in its folder (:func:`train`), cleared when a new run replaces it.
RUN_FILES = ("last.pt", "best.safetensors", "best.md", "history.json", "history.csv", "curves.png", "split.json",
             "config.json")


def clear_earlier_run(out: Path) -> list[Path]:
    """Delete the files of the run that a new one replaces in ``out`` (``--overwrite``), so that
    none of them (its ``last.pt`` above all) can be taken for the new run's; return them."""
    removed = [out / name for name in RUN_FILES if (out / name).is_file()]
    for path in removed:
        path.unlink()
    return removed


def _build_model(cfg: TrainConfig) -> Segmenter:
    if model_class(cfg.arch) not in TRAINABLE_ARCHITECTURES.values():
        raise ValueError(f"{cfg.arch!r} is not trained directly: fine-tuning makes routed models "
                         f"(train one of {', '.join(sorted(TRAINABLE_ARCHITECTURES))})")
    if cfg.init_from:
        source = load_model(cfg.init_from)
        model = create_model(cfg.arch, **{**model_class(cfg.arch).config_from(source), **cfg.model_config})
        misfit = f"{cfg.init_from} does not fit {cfg.arch} with config {model.config}"
        try:
            missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
        except RuntimeError as error:  # tensors of other shapes
            raise ValueError(f"{misfit}: {error}") from None
        # side heads are for training only: those the source lacks start fresh (deep supervision
        # added to a model trained without it), those it has and the run drops are left out;
        # any other mismatch means another skeleton
        missing = [k for k in missing if not k.startswith("side_heads.")]
        unexpected = [k for k in unexpected if not k.startswith("side_heads.")]
        if missing or unexpected:
            raise ValueError(f"{misfit}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return model
    return create_model(cfg.arch, **cfg.model_config)


def check_run_folder(out: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse to start a run that would silently lose work in ``out`` (see :func:`train`)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out} is a file, not a folder: --out names the run folder that will hold "
                             "the checkpoints, curves and split")
    if resume:
        if not (out / "last.pt").is_file():
            again = ("start a new run there with --overwrite instead of --resume (it replaces the best.safetensors "
                     "there)" if (out / "best.safetensors").is_file() else "start a new run without --resume")
            raise RunFolderError(
                f"cannot resume: no last.pt in the run folder {out} (nothing to continue; check --out, or {again})")
        return
    if overwrite:
        return
    for name in ("best.safetensors", "last.pt"):
        if (out / name).is_file():
            raise RunFolderError(
                f"{out / name} already exists: a new run would replace it. Pass --overwrite "
                "(overwrite=True) to replace it, --resume to continue that run, or choose another --out")


#: options that define what a run learns from and at what size: a resumed run must keep them
RUN_DEFINING = ("arch", "model_config", "size", "mode", "val_fraction")
#: options whose state a resumed run restores from its last.pt: another value would not be used
RESTORED_ON_RESUME = ("lr", "weight_decay", "schedule", "plateau_patience")


def check_resumed_options(cfg: TrainConfig, out: Path) -> None:
    """Refuse (:class:`RunFolderError`) to resume the run in ``out`` with other data, split,
    input size, mode, architecture or model options than it was started with (recorded in its
    ``config.json``; runs that predate that record are not checked): the validation images and
    the checkpoint's recorded size would no longer match what it is trained and scored on."""
    recorded_path = out / "config.json"
    if not recorded_path.is_file():
        return
    try:
        recorded = json.loads(recorded_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    now = json.loads(json.dumps(asdict(cfg)))  # as recorded: tuples as lists
    changed = [f"--{name.replace('_', '-') if name != 'model_config' else 'config'} "
               f"{json.dumps(recorded[name])} -> {json.dumps(now[name])}"
               for name in RUN_DEFINING if name in recorded and recorded[name] != now[name]]
    split_then = recorded.get("split_seed") if recorded.get("split_seed") is not None else recorded.get("seed")
    if split_then is not None and split_then != cfg.split_seed_or_seed:
        changed.append(f"split seed {split_then} -> {cfg.split_seed_or_seed}")
    data_then = sorted(dataset_name(d) for d in recorded.get("data", []))
    if data_then and data_then != sorted(dataset_name(d) for d in cfg.data):
        changed.append(f"--data {' '.join(data_then)} -> {' '.join(sorted(dataset_name(d) for d in cfg.data))}")
    # restored from last.pt (the optimiser's and scheduler's state): a new value would be recorded
    # in the checkpoint and config.json, and not used
    def effective(config: dict[str, Any], name: str) -> Any:
        value = config.get(name)
        if name == "lr" and value is None:
            return model_class(config.get("arch", cfg.arch)).default_lr
        return value

    for name in RESTORED_ON_RESUME:
        if name in recorded and effective(recorded, name) != effective(now, name):
            changed.append(f"--{name.replace('_', '-')} {json.dumps(effective(recorded, name))} -> "
                           f"{json.dumps(effective(now, name))} (resuming restores it from last.pt)")
    if not changed and now.get("schedule") == "cosine" and recorded.get("epochs") not in (None, now.get("epochs")):
        log.warning("the cosine schedule is stretched from %s to %s epochs: its learning rate rises again to where "
                    "the longer schedule would be now", recorded.get("epochs"), now.get("epochs"))
    if changed:
        raise RunFolderError(f"cannot resume {out / 'last.pt'} with other options than its run was started with: "
                             + "; ".join(changed) + ". Resume with its own options, or start a new run "
                             "(--init-from its best.safetensors to start from its weights)")


def check_options(cfg: TrainConfig) -> float:
    """Refuse, with a message that says why, a size, number of epochs, schedule or learning
    rate no run can use; return the learning rate (``cfg.lr``, else the architecture's own)."""
    if not MIN_TRAINING_SIZE <= cfg.size <= MAX_INPUT_SIZE:
        raise ValueError(f"--size must lie in [{MIN_TRAINING_SIZE}, {MAX_INPUT_SIZE}] for training, got {cfg.size}"
                         + (" (the deepest stage would see one pixel, which a batch norm cannot train on "
                            "in a batch of one image)" if cfg.size < MIN_TRAINING_SIZE else ""))
    if cfg.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {cfg.epochs}")
    lr = cfg.lr if cfg.lr is not None else model_class(cfg.arch).default_lr
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {cfg.schedule!r}; use one of {SCHEDULES}")
    if not 0 < lr <= MAX_SAFE_LR:
        raise ValueError(f"learning rate {lr} is unsafe: use a value in (0, {MAX_SAFE_LR}]")
    return lr


def loss_helpers(cfg: TrainConfig, model: Segmenter, device: torch.device, val_keys: list[str],
                 ) -> tuple[Segmenter | None, Segmenter | None, FiringRatePenalty | None]:
    """What the run's loss needs besides ``model``: the alignment teacher (``--teacher``), the
    distillation model (``--distill``) and the spike budget (``--max-firing-rate``), each None
    when not asked for. Raises ``ValueError`` where ``model`` cannot take one (alignment or deep
    supervision without side heads, a spike budget for a model that does not spike or with
    ``--checkpointing``) or the distillation model saw a validation image (``val_keys``)."""
    teacher = distiller = spike_budget = None
    if cfg.teacher:
        if not model.supports_alignment:
            raise ValueError(f"distribution alignment (teacher) applies to spiking models with side heads "
                             f"(medspikeformer), not {cfg.arch}")
        teacher = load_model(cfg.teacher, device=device)
        teacher.requires_grad_(False)
    if cfg.deep_supervision and not model.has_side_heads:
        raise ValueError(f"deep supervision needs side heads (medspikeformer, ann_twin, or medqkformer "
                         f"with the config option side_heads), not {cfg.arch} with {model.config}")
    if cfg.max_firing_rate:
        if not model.spiking:
            raise ValueError(f"--max-firing-rate applies to spiking models, not {cfg.arch}")
        if cfg.checkpointing:
            raise ValueError("--max-firing-rate does not combine with --checkpointing (its recomputed forward "
                             "passes would count the spikes twice)")
        spike_budget = FiringRatePenalty(model, cfg.max_firing_rate, cfg.firing_weight)
    if cfg.distill:
        check_distiller(cfg, val_keys)
        distiller = load_model(cfg.distill, device=device).eval()
        distiller.requires_grad_(False)
    return teacher, distiller, spike_budget


class StepLoss:
    """The loss of one training batch: the segmentation loss (against the masks, or against the
    masks mixed with a distillation model's probabilities), plus whichever the run asks for of
    alignment to a teacher's side heads, deep supervision through the model's own, a spike
    budget and a pull towards the starting weights (``anchor``).

    ``net`` is what runs the model (the model itself, or its DistributedDataParallel wrapper);
    with ``cfg.sltt`` the model runs with spatial-only gradients instead. Call it with gradients
    enabled; a spike budget must be entered (its hooks) around the training loop.
    """

    def __init__(self, cfg: TrainConfig, model: Segmenter, net: torch.nn.Module, teacher: Segmenter | None = None,
                 distiller: Segmenter | None = None, spike_budget: FiringRatePenalty | None = None,
                 anchor: dict[str, torch.Tensor] | None = None, autocast: bool = False) -> None:
        self.cfg, self.model, self.net = cfg, model, net
        self.teacher, self.distiller, self.spike_budget = teacher, distiller, spike_budget
        self.anchor, self.autocast = anchor or {}, autocast
        self.with_sides = teacher is not None or cfg.deep_supervision > 0

    def forward(self, x: torch.Tensor, **kwargs: Any) -> Any:
        """Run the model on ``x`` as the run trains it (SLTT or the plain forward pass)."""
        if self.cfg.sltt:
            return sltt_forward(self.model, x, k=self.cfg.sltt, **kwargs)
        return self.net(x, **kwargs)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of images ``x`` and masks ``y`` (on the training device)."""
        cfg = self.cfg
        if self.distiller is not None:  # soft targets: the masks mixed with the checkpoint's probabilities
            with torch.no_grad():
                y = distilled_targets(y, self.distiller(x), cfg.distill_mix)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            if self.with_sides:
                logits, sides = self.forward(x, side_outputs=True)
                loss = segmentation_loss(logits.float(), y)
                if self.teacher is not None:
                    with torch.no_grad():
                        _, teacher_sides = self.teacher(x, side_outputs=True)
                    loss = loss + alignment_loss(sides, teacher_sides, cfg.align_stages, cfg.align_weight)
                if cfg.deep_supervision:
                    loss = loss + cfg.deep_supervision * deep_supervision_loss(sides, y)
            else:
                loss = segmentation_loss(self.forward(x).float(), y)
        if self.spike_budget is not None:
            loss = loss + self.spike_budget()[0]
        if self.anchor:
            loss = loss + cfg.anchor_weight * anchor_penalty(self.model, self.anchor)
        return loss


def train(
    cfg: TrainConfig,
    progress: Callable[[TrainProgress], None] | None = None,
    cancel: threading.Event | None = None,
    resume: bool = False,
) -> TrainResult:
    """Run :func:`train_steps` to its end, passing each event to ``progress``."""
    return run_job(train_steps(cfg, cancel=cancel, resume=resume), progress)


def record_training_domain(checkpoint: Path, images: list[Path], source: str = "training images") -> None:
    """Add the domain record of ``checkpoint``'s model on its training ``images`` to its metadata
    (:func:`~.routing.domain_record`), so fine-tuning it on another kind of image can keep it."""
    from .routing import domain_record

    if images:
        refresh_metadata(checkpoint, domain=domain_record(load_model(checkpoint), images, source=source))


def train_steps(
    cfg: TrainConfig,
    cancel: threading.Event | None = None,
    resume: bool = False,
) -> Generator[TrainProgress, None, TrainResult]:
    """Train ``cfg.arch`` on ``cfg.data``; write the run folder; return the best checkpoint.

    A generator: yields a :class:`TrainProgress` after every step and at every epoch's end, and
    returns a :class:`TrainResult`. Setting ``cancel`` stops it after the current step (the best
    checkpoint so far is kept); closing it stops it at the current event.

    Works unchanged under ``torchrun --nproc_per_node=N`` (DDP; rank 0 writes files).

    ``resume=True`` continues from ``out_dir/last.pt`` and raises :class:`RunFolderError` if
    there is none. A new run refuses (:class:`RunFolderError`) a folder that already holds a
    trained model (``best.safetensors`` or ``last.pt``) unless ``cfg.overwrite`` is set.

    Training seeds Python's and torch's random generators with ``cfg.seed``; the caller's states
    come back when it ends (napari and the user's own code share them with a fine-tune).
    """
    caller = random.getstate()
    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=gpus):  # the CPU's and these GPUs' generators come back
            return (yield from _train_steps(cfg, cancel, resume))
    finally:
        random.setstate(caller)


def _join_processes(out: Path) -> tuple[bool, int, int]:
    """Whether this run is one of several ``torchrun`` processes (joining their group if it has
    not been joined), its rank and the number of processes. Rank 0 makes the run folder and
    removes temporary files an interrupted write left in it."""
    distributed = _is_distributed()
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = _rank()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temp_files(out):  # left by a run killed mid-write (e.g. a huge last.pt)
            log.info("removed %s, left by an interrupted write", stale)
    return distributed, rank, dist.get_world_size() if distributed else 1


def _training_device(cfg: TrainConfig, distributed: bool) -> torch.device:
    """The device to train on: ``cfg.device`` (auto: a GPU where there is one), or this process's
    GPU under ``torchrun``."""
    if not distributed:
        device, note = pick_device(cfg.device)
        log.info(note)
        return device
    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    torch.cuda.set_device(device)
    return device


def _prepare_model(cfg: TrainConfig, device: torch.device, distributed: bool) -> tuple[Segmenter, bool]:
    """The model to train on ``device`` and whether it trains under bf16 autocast; raises
    ``ValueError`` for options the model cannot take (activation checkpointing, SLTT)."""
    model = _build_model(cfg).to(device)
    use_amp = device.type == "cuda" and uses_bf16(cfg.precision, model)
    model.check_inputs = False  # data come from our own loader
    if cfg.checkpointing:
        if not model.supports_checkpointing:
            raise ValueError(f"{cfg.arch} does not support activation checkpointing")
        model.gradient_checkpointing = True
    if use_amp:
        model = model.to(memory_format=torch.channels_last)
    if cfg.sltt:
        if not (model.spiking and model.timesteps > 1 and getattr(model, "neuron_kind", "") == "lif"):
            raise ValueError(f"--sltt applies to LIF models with several timesteps, not {cfg.arch}")
        if not 1 <= cfg.sltt <= model.timesteps:
            raise ValueError(f"--sltt K needs 1 <= K <= T = {model.timesteps}, got {cfg.sltt}")
        if distributed:
            raise ValueError("--sltt is not supported with torchrun (several processes) yet")
    return model, use_amp


def _training_loader(cfg: TrainConfig, train_set: CachedPairs, device: torch.device, distributed: bool,
                     rank: int, world: int) -> tuple[torch.utils.data.DataLoader, Any, torch.Generator]:
    """The shuffled training loader, its distributed sampler (None in one process) and the seeded
    generator that draws its order (saved with a resumable run's state)."""
    sampler = torch.utils.data.distributed.DistributedSampler(
        train_set, num_replicas=world, rank=rank, seed=cfg.seed) if distributed else None
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator if sampler is None else None,
        num_workers=cfg.workers,
        drop_last=len(train_set) > cfg.batch_size,
        pin_memory=device.type == "cuda",
        # workers start anew each epoch, seeded from ``generator`` as the shuffle is: a resumed
        # run (its generator restored) then crops and augments as an uninterrupted one would;
        # persistent workers drew their seed once per process (final weights 0.38 apart)
        persistent_workers=False,
    )
    return loader, sampler, generator


class Optimisation:
    """What one training step does after its loss: Adam (with the cosine schedule's step where
    the run uses it), gradient clipping (``cfg.clip_grad``) and the weight average (``cfg.ema``,
    whose weights are the ones validated and saved: :attr:`scored`)."""

    def __init__(self, cfg: TrainConfig, model: Segmenter, lr: float, steps_per_epoch: int, distributed: bool) -> None:
        self.model, self.clip_grad = model, cfg.clip_grad
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
        self.averaged = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=ema_update(cfg.ema, warmup=not cfg.init_from), use_buffers=True,
        ) if cfg.ema else None
        self.scored: Segmenter = self.averaged.module if self.averaged is not None else model
        self.cosine = cfg.schedule == "cosine"
        # processes of a distributed run anneal by steps alone: their clocks could give them different rates
        self.scheduler: Any = CosineSchedule(
            self.optimizer, steps_per_epoch * cfg.epochs, minutes=None if distributed else cfg.max_minutes,
        ) if self.cosine else torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=0.5, patience=cfg.plateau_patience)

    @property
    def lr(self) -> float:
        """The learning rate now."""
        return self.optimizer.param_groups[0]["lr"]

    def step(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` and update the weights (and their average)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.optimizer.step()
        if self.cosine:
            self.scheduler.step()
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)

    def end_epoch(self, val_loss: float) -> None:
        """The plateau schedule's step (the cosine schedule steps with each batch)."""
        if not self.cosine:
            self.scheduler.step(val_loss)


def _training_record(cfg: TrainConfig, train_set: CachedPairs, val_set: CachedPairs, replay_keys: set[str],
                     lr: float, world: int, device: torch.device, model: Segmenter, with_sides: bool,
                     distilled: bool, budgeted: bool) -> dict[str, Any]:
    """The ``training`` record of the run's checkpoint metadata and model card: data, split, recipe
    and whether its figures are measured on held-out images."""
    replayed = sum(p.key in replay_keys for p in train_set.pairs)  # (readable ones)
    # measured on training images (nothing held out: cfg.validate_on_training), on held-out ones, or on none
    val_keys = {p.key for p in val_set.pairs}
    on_training = bool(val_keys) and val_keys <= {p.key for p in train_set.pairs}
    return {
        "data": [str(d) for d in cfg.data],
        # images of other folders mixed into training against forgetting: data too, so said
        **({"replay": {"data": [str(r) for r in cfg.replay], "images": replayed}} if replayed else {}),
        "mode": cfg.mode,
        "seed": cfg.seed,
        "split_seed": cfg.split_seed_or_seed,
        "n_train": len(train_set),
        "n_val": len(val_set),
        "lr": lr,
        "schedule": cfg.schedule,
        "plateau_patience": cfg.plateau_patience,
        "batch_size": cfg.batch_size * world,
        "device": f"{device.type} x{world}",
        "init_from": cfg.init_from,
        "teacher": cfg.teacher,
        "align_stages": cfg.align_stages if with_sides else [],
        **({"distill": cfg.distill, "distill_mix": cfg.distill_mix} if distilled else {}),
        **({"deep_supervision": cfg.deep_supervision} if cfg.deep_supervision else {}),
        **({"masks": "area-weighted (soft)"} if cfg.soft_masks else {}),
        **({"max_firing_rate": cfg.max_firing_rate, "firing_weight": cfg.firing_weight} if budgeted else {}),
        "gradient": f"SLTT-{cfg.sltt} (spatial only, {cfg.sltt} of {model.timesteps} timesteps)" if cfg.sltt else "BPTT",
        "val_keys": [p.key for p in val_set.pairs],
        "validated_on": "training images (nothing held out)" if on_training else "held-out images",
        "held_out": bool(val_keys) and not on_training,
        "description": cfg.description,
        "torch": torch.__version__,
    }


def _train_epoch(cfg: TrainConfig, epoch: int, loader: torch.utils.data.DataLoader, step_loss: StepLoss,
                 optimisation: Optimisation, augment: torch.nn.Module | None, device: torch.device,
                 use_amp: bool, cancel: threading.Event | None, report: bool, held_out: bool, best_path: Path,
                 ) -> Generator[TrainProgress, None, tuple[float, int, bool]]:
    """One pass over ``loader``, yielding a :class:`TrainProgress` after each step where
    ``report`` (rank 0); returns the summed loss, the images seen and whether ``cancel`` stopped
    it. Raises :class:`TrainingDiverged` at the first loss that is not finite."""
    running, seen, steps = 0.0, 0, len(loader)
    for step, (x, y) in enumerate(loader, 1):
        if cancel is not None and cancel.is_set():
            return running, seen, True
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if augment is not None:
            x, y = augment(x, y)
        if use_amp:
            x = x.contiguous(memory_format=torch.channels_last)
        # grad mode is per thread: a job that ran before in this (pooled) worker thread
        # must not leave this step without gradients
        with torch.inference_mode(False), torch.enable_grad():
            loss = step_loss(x, y)
            optimisation.step(loss)
        value = loss.item()
        if not math.isfinite(value):
            kept = f"the best checkpoint so far is kept in {best_path}" if best_path.exists() else "nothing was saved"
            raise TrainingDiverged(f"the training loss became {value} at epoch {epoch}, step {step}: the run "
                                   f"stops here ({kept}); try a lower learning rate or --clip-grad 1")
        running += value * len(x)
        if device.type == "cpu":
            del loss
            # freed activations' holes would raise the peak step by step (also where loading
            # a model tuned the allocator to keep freed memory for inference)
            release_free_memory(even_if_tuned=True)
        seen += len(x)
        if report:
            yield TrainProgress(epoch, cfg.epochs, step, steps, running / seen, message=TrainEvent.STEP.value,
                                held_out=held_out)
    return running, seen, False


def _train_steps(
    cfg: TrainConfig,
    cancel: threading.Event | None,
    resume: bool,
) -> Generator[TrainProgress, None, TrainResult]:
    """:func:`train_steps` without giving the caller's random states back."""
    out = Path(cfg.out_dir)
    lr = check_options(cfg)
    check_run_folder(out, resume=resume, overwrite=cfg.overwrite)
    if resume:
        check_resumed_options(cfg, out)
    check_teacher_size(cfg)
    distributed, rank, world = _join_processes(out)
    seed_everything(cfg.seed)
    device = _training_device(cfg, distributed)

    train_set, val_set, problems, replay_keys = _datasets(cfg, out, resume=resume)
    for p in problems:
        log.warning(p)
    if not len(val_set):
        log.warning("no images held out for validation (%d training images, --val-fraction %g): epochs are "
                    "not validated (their 'val' loss is the training loss, Dice nan) and the last is kept",
                    len(train_set), cfg.val_fraction)
    model, use_amp = _prepare_model(cfg, device, distributed)
    teacher, distiller, spike_budget = loss_helpers(cfg, model, device, [p.key for p in val_set.pairs])
    with_sides = teacher is not None or cfg.deep_supervision > 0

    # Every check has passed: only now is a run replaced (--overwrite) and this run's record
    # written. (Its config.json used to be written first: an overwrite over a finished run left the
    # old last.pt beside the new options, and a later --resume mixed the two runs.)
    if rank == 0:
        if not resume:
            for path in clear_earlier_run(out):
                log.info("removed %s of the run replaced (--overwrite)", path.name)
        _write_config(out, cfg)
        _write_split(cfg, out, train_set, val_set)

    loader, sampler, generator = _training_loader(cfg, train_set, device, distributed, rank, world)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.batch_size, num_workers=0)
    net: torch.nn.Module = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=model.has_side_heads and not with_sides,  # side heads idle without alignment
        )
    optimisation = Optimisation(cfg, model, lr, len(loader), distributed)
    scored = optimisation.scored  # the weights that are validated and saved
    anchor = {name: p.detach().clone() for name, p in model.named_parameters()} if cfg.anchor_weight else {}
    augment = build_augment(cfg.photometric, cfg.scale_augment, cfg.soft_masks).to(device) if cfg.augment else None
    step_loss = StepLoss(cfg, model, net, teacher, distiller, spike_budget, anchor, autocast=use_amp)

    history: list[dict[str, float]] = []
    best: dict[str, float] = {"val_dice": -1.0}
    start_epoch = 1
    state_path = out / "last.pt"
    best_path = out / "best.safetensors"
    if resume and state_path.is_file():
        history, best, start_epoch = _load_training_state(state_path, model, optimisation.optimizer,
                                                          optimisation.scheduler, generator, optimisation.averaged)
        log.info("resuming after epoch %d", start_epoch - 1)
        if start_epoch > cfg.epochs:
            log.warning("nothing to continue: the run has done %d epochs and --epochs is %d; pass a larger --epochs "
                        "to train on", start_epoch - 1, cfg.epochs)

    began = time.time() - sum(h.get("time_s", 0.0) for h in history)
    if optimisation.cosine:  # the time budget counts from the run's start, across resumes
        optimisation.scheduler.count_time_from(began)
    meta_training = _training_record(cfg, train_set, val_set, replay_keys, lr, world, device, model, with_sides,
                                     distiller is not None, spike_budget is not None)
    held_out = meta_training["held_out"]

    # weights that start from a checkpoint keep its recommended inference settings (e.g. flips)
    inherited = ModelInfo.from_metadata(read_metadata(resolve_checkpoint(cfg.init_from))).inherited() \
        if cfg.init_from else {}

    def save_best(metrics: dict[str, float]) -> None:
        meta_training.update(epochs_run=len(history), minutes=(time.time() - began) / 60)
        meta = {"input_size": cfg.size, "training": meta_training, "metrics": metrics, **inherited}
        save_checkpoint(scored, best_path, **meta)
        write_model_card(best_path, read_metadata(best_path))

    initial = None
    if cfg.keep_initial_as_best and not history and len(val_set):
        # (cancellable: measuring the start on 12 held-out images took 3.7 s, a wait after Cancel)
        initial = validate(scored, val_loader, device, cancel)
        if initial is not None:
            best = {**initial, "epoch": 0}
            if rank == 0:
                save_best(best)
            # the starting weights' figures: the bar to beat (a fine-tune keeps them unless beaten),
            # and whether they are measured on held-out images (one correction cannot be held out)
            yield TrainProgress(0, cfg.epochs, 0, 0, float("nan"), metrics=dict(best), message=TrainEvent.START.value,
                                kind=TrainEvent.START, held_out=held_out)

    cancelled = False
    timed_out = False  # stopped by the time budget (cfg.max_minutes)
    steps = len(loader)
    calibration = norm_calibration_images(cfg, model)
    # frozen parts keep their batch-norm statistics through the re-estimation too
    kept_statistics = {name: b.detach().clone() for name, b in scored.named_buffers() if _under(name, cfg.frozen)}
    # the budget's hooks on the neurons go when training ends, stops or fails
    with spike_budget if spike_budget is not None else contextlib.nullcontext():
        for epoch in range(start_epoch, cfg.epochs + 1):
            t0 = time.time()
            if sampler is not None:
                sampler.set_epoch(epoch)
            net.train()
            if cfg.freeze_norm_stats:
                freeze_norm_statistics(model)
            freeze_parts(model, cfg.frozen)
            running, seen, cancelled = yield from _train_epoch(
                cfg, epoch, loader, step_loss, optimisation, augment, device, use_amp, cancel,
                report=rank == 0, held_out=held_out, best_path=best_path)
            if cancelled:  # a partial epoch is neither validated nor recorded: stop now
                break
            if calibration:
                recalibrate_norms(scored, train_set, calibration, cfg.batch_size, device)
                with torch.no_grad():
                    for name, b in scored.named_buffers():
                        if name in kept_statistics:
                            b.copy_(kept_statistics[name])
            metrics = validate(scored, val_loader, device) if len(val_set) else {
                "val_loss": running / max(seen, 1), "val_dice": float("nan"), "val_iou": float("nan"), "firing_rate": float("nan")}
            optimisation.end_epoch(metrics["val_loss"])
            row = {
                "epoch": epoch,
                "train_loss": running / max(seen, 1),
                **metrics,
                "lr": optimisation.lr,
                "time_s": time.time() - t0,
            }
            history.append(row)
            # Without a validation set the latest weights are the best we know.
            improved = not len(val_set) or metrics["val_dice"] > best["val_dice"]
            if rank == 0:
                if improved:
                    best = {**metrics, "epoch": epoch}
                    save_best(best)
                elif best_path.exists():  # the card and metadata count every epoch run, not just up to the best
                    refresh_training_record(best_path, epochs_run=len(history), minutes=(time.time() - began) / 60)
                if cfg.resumable:
                    _save_training_state(state_path, model, optimisation.optimizer, optimisation.scheduler,
                                         generator, optimisation.averaged, epoch, history, best)
                write_logs(out, history, plot=cfg.resumable)
                yield TrainProgress(epoch, cfg.epochs, steps, steps, row["train_loss"], metrics={**row},
                                    message=TrainEvent.EPOCH.value, kind=TrainEvent.EPOCH, held_out=held_out)
            elif improved:
                best = {**metrics, "epoch": epoch}
            if cfg.max_minutes is not None and (time.time() - began) / 60 >= cfg.max_minutes:
                log.info("time budget of %.1f min reached after epoch %d", cfg.max_minutes, epoch)
                timed_out = epoch < cfg.epochs
                break
    if rank == 0:
        _finish_run(cfg, out, best_path, history, timed_out, train_set)
    if distributed:
        dist.barrier()
    return TrainResult(best_path if best_path.exists() else None, history, best, cancelled, out, initial, timed_out,
                       problems)


def _finish_run(cfg: TrainConfig, out: Path, best_path: Path, history: list[dict[str, float]], timed_out: bool,
                train_set: CachedPairs) -> None:
    """Rank 0's last writes: whether the time limit cut the run short, the domain record of a
    trained (not fine-tuned) model, the curves and the config."""
    if best_path.exists():  # the card says whether the run was cut short, not only how long it ran
        stopped = (f"stopped by its {cfg.max_minutes:g}-minute limit after {len(history)} of {cfg.epochs} "
                   "epochs") if timed_out else None
        if read_metadata(best_path).get("training", {}).get("stopped") != stopped:  # (a resumed run's may go)
            refresh_training_record(best_path, stopped=stopped)
    if best_path.exists() and not cfg.keep_initial_as_best:  # (fine-tuning records its own)
        record_training_domain(best_path, [p.image for p in train_set.pairs],
                               "training images of " + ", ".join(dataset_name(d) for d in cfg.data))
    if history and not cfg.resumable:
        plot_curves(history, out / "curves.png")  # the curves once, at the end (logs are written)
    _write_config(out, cfg)


def _write_config(out: Path, cfg: TrainConfig) -> None:
    """Record the run's options as ``config.json`` (atomically): a resumed run is checked
    against them (:func:`check_resumed_options`)."""
    atomic_write(out / "config.json", lambda tmp: tmp.write_text(json.dumps(asdict(cfg), indent=1), encoding="utf-8"))


def _save_training_state(path: Path, model: Segmenter, optimizer: torch.optim.Optimizer, scheduler: Any,
                         generator: torch.Generator, averaged: torch.nn.Module | None, epoch: int,
                         history: list[dict[str, float]], best: dict[str, float]) -> None:
    """Write ``last.pt`` (atomically): what :func:`_load_training_state` restores to continue the
    run exactly, random states included."""
    state = {
        "model": model.state_dict(),
        **({"averaged": averaged.state_dict()} if averaged is not None else {}),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "history": history,
        "best": best,
        "torch_rng": torch.get_rng_state(),
        "loader_rng": generator.get_state(),
        "python_rng": _from_python_state(random.getstate()),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _load_training_state(path: Path, model: Segmenter, optimizer: torch.optim.Optimizer, scheduler: Any,
                         generator: torch.Generator, averaged: torch.nn.Module | None = None,
                         ) -> tuple[list[dict[str, float]], dict[str, float], int]:
    """Restore a run from its ``last.pt``; return its history, best epoch and the next epoch.

    Raises :class:`RunFolderError` naming the file if it is not a readable training state or
    does not fit this run's model (another ``--arch`` or ``--config``)."""
    def first_line(err: BaseException) -> str:
        lines = str(err).strip().splitlines()
        return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise RunFolderError(f"cannot resume from {path}: not a readable training state, the file may be "
                             f"damaged or cut short ({first_line(err)})") from err
    if not isinstance(state, dict):
        raise RunFolderError(f"cannot resume from {path}: not a training state written by medspike-train")
    try:
        model.load_state_dict(state["model"])
    except KeyError as err:
        raise RunFolderError(f"cannot resume from {path}: the training state lacks {err}") from err
    except Exception as err:
        raise RunFolderError(f"cannot resume from {path}: its weights do not fit this run's {model.arch} "
                             f"{model.config} (was it started with another --arch or --config?): "
                             f"{first_line(err)}") from err
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best = state["history"], state["best"]
        start_epoch = int(state["epoch"]) + 1
        if averaged is not None and "averaged" in state:  # else the average starts from the weights
            averaged.load_state_dict(state["averaged"])
        torch.set_rng_state(state["torch_rng"])
        generator.set_state(state["loader_rng"])
        random.setstate(_to_python_state(state["python_rng"]))
    except KeyError as err:
        raise RunFolderError(f"cannot resume from {path}: the training state lacks {err}") from err
    except (ValueError, TypeError, RuntimeError) as err:
        raise RunFolderError(f"cannot resume from {path}: its optimiser or random state does not fit "
                             f"this run ({first_line(err)})") from err
    return history, best, start_epoch


def _from_python_state(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _to_python_state(state: list) -> tuple:
    version, internal, gauss = state
    return (int(version), tuple(int(i) for i in internal), gauss)
