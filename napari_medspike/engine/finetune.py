"""Fine-tuning a trained model on corrections: the training loop with fine-tuning's guard rails."""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..common import check_writable, run_job
from ..data.dataset import Pair, find_pairs, split_pairs, split_units
from ..models.base import Segmenter
from ..models.routed import STYLE_FEATURES, RoutedSegmenter, style_feature_dim
from ..runtime import release_free_memory
from .checkpoint import load_model, read_metadata, resolve_checkpoint, save_checkpoint
from .config import FINETUNE, MAX_SAFE_LR, FinetuneResult, TrainConfig, TrainProgress
from .reports import refresh_training_record, write_model_card
from .routing import check_gate, domain_record, image_styles, recorded_styles, routed_model
from .trainer import train_steps

log = logging.getLogger(__name__)


def finetune(
    start: str | Path | Segmenter,
    data: str | Path | Sequence[str | Path],
    out: str | Path,
    progress: Callable[[TrainProgress], None] | None = None,
    **options: Any,
) -> FinetuneResult:
    """Run :func:`finetune_steps` to its end, passing each event to ``progress``; ``options``
    are :func:`finetune_steps`'s (``epochs``, ``lr``, ``cancel``, ...)."""
    return run_job(finetune_steps(start, data, out, **options), progress)


def scratch_run_folder(out: str | Path) -> Path:
    """The folder a fine-tune that writes ``out`` keeps its logs in: ``<out stem>_run`` beside it,
    unless that folder holds anything but an earlier fine-tune's logs (a training run, weights:
    a fine-tune interrupted there keeps its best epoch in it); then ``<out stem>_run2``, ... The
    fine-tune replaces what it reuses, so it never writes into another run."""
    out = Path(out)
    for n in itertools.count(1):
        folder = out.with_name(f"{out.stem}_run{n if n > 1 else ''}")
        if not folder.exists() or _holds_only_finetune_logs(folder):
            return folder
    raise AssertionError("unreachable")


def _holds_only_finetune_logs(folder: Path) -> bool:
    """A finished fine-tune's scratch folder: its config says so, and no weights are left in it."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        names = [p.name for p in folder.iterdir()]
    except (OSError, ValueError):
        return False
    weights = [n for n in names if n.endswith((".safetensors", ".pt", ".pth"))]
    return bool(config.get("keep_initial_as_best")) and not config.get("resumable", True) and not weights


def check_finetune_request(out: str | Path, lr: float, epochs: int, minutes: float) -> None:
    """Refuse (``ValueError``, or :class:`~napari_medspike.common.WriteError` for a folder that
    cannot be written) a fine-tune whose options or output cannot work, before any training."""
    if not 0 <= lr <= MAX_SAFE_LR:
        raise ValueError(f"learning rate {lr} is unsafe for fine-tuning: use a value in (0, {MAX_SAFE_LR}], "
                         "or 0 for the architecture's own")
    if epochs < 0:
        raise ValueError("epochs must be >= 1, or 0 for auto")
    if minutes < 0:
        raise ValueError("minutes must be >= 0 (0: no time limit)")
    if Path(out).is_dir():  # checked before minutes of training, not when writing
        raise ValueError(f"{out} is a folder: give the checkpoint file to write, e.g. {Path(out) / 'tuned.safetensors'}")
    if Path(out).suffix.lower() != ".safetensors":
        raise ValueError(f"{out}: the checkpoint to write must end in .safetensors")
    check_writable(Path(out).parent)  # a read-only folder: said now, not after the training


def correction_pairs(folders: Sequence[str | Path]) -> list[Pair]:
    """The image/mask pairs of the correction ``folders`` (problems logged); ``ValueError`` when
    there are none, or when every mask is empty or unreadable (nothing to learn from)."""
    from ..data.io import ImageReadError, read_mask

    pairs, problems = find_pairs(folders)
    for problem in problems:
        log.warning("fine-tune: %s", problem)
    if not pairs:
        raise ValueError("no corrections to learn from: no image/mask pairs in " + ", ".join(map(str, folders)))

    def has_foreground(pair: Pair) -> bool:
        try:
            return bool(read_mask(pair.mask).any())
        except ImageReadError:  # unreadable pairs are skipped (and reported) by the training loop
            return False

    if not any(has_foreground(p) for p in pairs):
        raise ValueError("every correction mask is empty or unreadable: paint the foreground before fine-tuning")
    return pairs


@dataclass
class _Start:
    """What a fine-tune starts from."""

    model: Segmenter  #: the model trained (a routed start: the expert the corrections go to)
    keeper: Segmenter  #: the model a routed result keeps for the starting kind of image
    first_kind: RoutedSegmenter | None  #: a routed start whose first expert the corrections are like
    name: str  #: the starting model's name, for cards and messages
    path: Path  #: its checkpoint file (a scratch copy where it has none of its own)
    meta: dict[str, Any]  #: the starting checkpoint's metadata


def _choose_start(start: str | Path | Segmenter, images: list[Path], run_dir: Path) -> _Start:
    """Load ``start`` and choose what trains: a routed start fine-tunes the expert its gate
    sends most of ``images`` to and keeps the other one."""
    if isinstance(start, Segmenter):
        source_model = start
        start_name = Path(start.info.path).stem if start.info.path else "the model in use"
    else:
        start_name = Path(str(start)).stem
        source_model = load_model(resolve_checkpoint(start))
    start_meta = source_model.info.to_metadata()
    keeper = source_model
    first_kind: RoutedSegmenter | None = None
    if isinstance(source_model, RoutedSegmenter):  # fine-tune the expert the corrections go to
        routed_start = source_model
        to_tuned = routed_start.routes(image_styles(routed_start.experts[0], images, skip_unreadable=True))
        index = 1 if not len(to_tuned) or float(to_tuned.float().mean()) >= 0.5 else 0
        log.info("fine-tune: the gate sends %d of %d corrections to the fine-tuned copy: training expert %d",
                 int(to_tuned.sum()), len(to_tuned), index)
        if index == 0:
            first_kind = routed_start
        for expert in routed_start.experts:
            expert.info = routed_start.info.updated(arch=expert.arch, config=expert.config)
        keeper = routed_start.experts[1 - index]
        source_model = routed_start.experts[index]
        start_name = (start_meta.get("routing") or {}).get("start", start_name)
    if isinstance(start, Segmenter) or keeper is not source_model:
        start_path = run_dir / "start.safetensors"
        save_checkpoint(source_model, start_path, **source_model.info.record())
    else:
        start_path = resolve_checkpoint(start)
    return _Start(source_model, keeper, first_kind, start_name, start_path, start_meta)


def finetune_steps(
    start: str | Path | Segmenter,
    data: str | Path | Sequence[str | Path],
    out: str | Path,
    epochs: int = FINETUNE.epochs,
    lr: float = FINETUNE.lr,
    batch_size: int = FINETUNE.batch_size,
    val_fraction: float = FINETUNE.val_fraction,
    minutes: float = FINETUNE.minutes,
    replay: str | Path | Sequence[str | Path] | None = None,
    replay_samples: int = 0,
    freeze_norm_stats: bool = FINETUNE.freeze_norm_stats,
    anchor_weight: float = FINETUNE.anchor_weight,
    route: bool = FINETUNE.route,
    device: str = "auto",
    seed: int = 0,
    cancel: threading.Event | None = None,
    run_dir: str | Path | None = None,
    keep_unimproved: bool = True,
) -> Generator[TrainProgress, None, FinetuneResult]:
    """Fine-tune a model (shipped name, checkpoint or model) on folder(s) of corrections: a
    generator of training events that returns a :class:`FinetuneResult`.

    ``epochs=0`` chooses them from the number of training pairs (:meth:`FinetuneDefaults.epochs_for`),
    ``lr=0`` is the architecture's training rate (``default_lr``);
    ``minutes`` (0: no limit) stops after the epoch that crosses it. Holds out ``val_fraction``
    of the pairs to measure Dice before and after (of the pictures: entries that show the same
    image stay together; with one picture, Dice is measured on it); the starting
    weights stay the best candidate until an epoch beats them, so fine-tuning never returns a
    worse model on the held-out pairs. Writes ``out`` (``.safetensors``) and its model card; the
    run folder ``run_dir`` (by default :func:`scratch_run_folder`: ``<out stem>_run/`` beside it)
    keeps logs and the split (its scratch weights are deleted once ``out`` is written).
    ``keep_unimproved=False`` writes no ``out`` when no epoch beat the starting weights (a copy
    of the start; the dock's case): fitting the gate and writing the copy took seconds.

    With ``route`` (the default), when the starting model records the kind of images it was
    trained on (metadata ``"domain"``) and the corrections are of another kind (a gate tells them
    apart, :func:`~.routing.check_gate`), ``out`` is a
    :class:`~napari_medspike.models.routed.RoutedSegmenter`: the starting model answers images
    like its training data, the fine-tuned one images like the corrections, so nothing is
    forgotten. A routed starting model fine-tunes the expert its gate sends most corrections
    to and keeps the other one and the gate: corrections like its fine-tuned kind train that
    copy (and the gate is fitted again between the first kind and them); corrections like its
    first kind train the first expert except its first stage, which the gate reads (so every
    image is routed as before), and the copy fine-tuned before stays as it was.
    """
    check_finetune_request(out, lr, epochs, minutes)
    folders = [data] if isinstance(data, (str, Path)) else list(data)
    pairs = correction_pairs(folders)
    images = [p.image for p in pairs]  # what the gate looks at (unreadable ones left out, as training does)
    out = Path(out)
    run_dir = Path(run_dir) if run_dir is not None else scratch_run_folder(out)
    chosen = _choose_start(start, images, run_dir)
    source_model, keeper, first_kind = chosen.model, chosen.keeper, chosen.first_kind
    start_name, start_path, start_meta = chosen.name, chosen.path, chosen.meta
    in_ch = source_model.in_channels
    if in_ch != 3:
        raise ValueError(f"model expects {in_ch} input channels; corrections are RGB images")
    size = source_model.input_size
    lr = lr or source_model.default_lr
    # one picture (however many entries show it) cannot be both trained on and held out
    held_out = split_units(pairs) >= 2
    val_fraction = val_fraction if held_out else 0.0
    replay_list = [] if replay is None else ([str(replay)] if isinstance(replay, (str, Path)) else [str(r) for r in replay])
    if not epochs:  # auto: from the images each epoch trains on, replayed ones too (the trainer splits the same way)
        replayed = min(replay_samples, len(find_pairs(replay_list)[0])) if replay_list and replay_samples > 0 else 0
        epochs = FINETUNE.epochs_for(len(split_pairs(pairs, val_fraction, seed)[0]) + replayed)
    cfg = TrainConfig(
        data=[str(f) for f in folders],
        out_dir=str(run_dir),
        arch=source_model.arch,
        init_from=str(start_path),
        size=size,
        # as the model learnt (a histology model saw random crops at full resolution: shrinking
        # whole corrections to its input size would teach it another scale)
        mode=str(source_model.info.training.get("mode") or "resize"),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        val_fraction=val_fraction,
        max_minutes=minutes or None,
        validate_on_training=not held_out,
        seed=seed,
        device=device,
        replay=replay_list,
        replay_samples=replay_samples,
        freeze_norm_stats=freeze_norm_stats,
        anchor_weight=anchor_weight,
        # the gate reads the first expert's first stage: training that expert leaves it as it is
        frozen=["stages.0"] if first_kind is not None else [],
        keep_initial_as_best=True,
        resumable=False,  # a fine-tune is short: no last.pt every epoch, the curves once
        overwrite=True,  # the run folder is this output's own scratch space
        plateau_patience=max(1, epochs),
        description=f"Fine-tuned from {start_name} on {len(pairs)} correction{'s' * (len(pairs) != 1)}.",
    )
    result = yield from train_steps(cfg, cancel=cancel)
    release_free_memory(even_if_tuned=True)  # the training's tensors are gone: their memory too (the plugin)
    best_file = run_dir / "best.safetensors"
    if not best_file.exists():  # nothing held out and cancelled before an epoch: keep the start
        save_checkpoint(source_model, best_file, input_size=size, **source_model.info.inherited())
    dice_before = result.initial["val_dice"] if result.initial else float("nan")
    dice_after = float(result.best.get("val_dice", float("nan")))
    improved = int(result.best.get("epoch", 0)) > 0  # epoch 0: the starting weights stayed the best
    measured = read_metadata(best_file)
    routed, kept = False, FinetuneResult.kept
    if improved or keep_unimproved:
        if first_kind is not None and route:
            routed = _write_first_expert(best_file, out, first_kind, start_meta)
            kept = "the copy fine-tuned before is kept for images like its corrections"
        else:
            routed = _write_result(best_file, out, keeper, start_meta, start_name, images, route)
        if improved:
            write_model_card(out, read_metadata(out))
        else:  # written on request (the command line): its card must not read as a changed model
            refresh_training_record(out, description=(
                f"{cfg.description} No epoch beat the starting weights on the "
                f"{'held-out corrections' if held_out else 'corrected image'}: these are {start_name}'s weights."))
    # the scratch weights are in ``out`` now (each about as large as the model): the run folder
    # keeps only its logs, curves and split
    users_start = None if isinstance(start, Segmenter) else resolve_checkpoint(start).resolve()
    for scratch in (best_file, best_file.with_suffix(".md"), start_path):
        if scratch.parent == run_dir and scratch.resolve() != users_start:  # (never a starting file of the user's)
            scratch.unlink(missing_ok=True)
    n_val = len(measured.get("training", {}).get("val_keys", []))
    time_limited = (len(result.history), epochs) if result.timed_out else None
    return FinetuneResult(out, result.history, dice_before, dice_after, result.cancelled, held_out, n_val, routed, kept,
                          improved=improved, time_limited=time_limited,
                          left_out=list(dict.fromkeys(result.problems)))  # (the trainer lists some twice)


def _write_first_expert(best_file: Path, out: Path, start: RoutedSegmenter, start_meta: dict[str, Any]) -> bool:
    """Write ``start`` with its first expert replaced by the fine-tuned one in ``best_file``: its
    gate, its other expert and its records (domain, routing) stay as they were."""
    tuned = load_model(best_file)
    model = RoutedSegmenter(start.expert_arch, start.experts[0].config)
    model.load_state_dict(start.state_dict())
    model.experts[0].load_state_dict(tuned.state_dict())
    meta = tuned.info.record()
    routing = {**(start_meta.get("routing") or {}), "first_expert": "fine-tuned on corrections like its kind"}
    if start_meta.get("domain"):
        meta["domain"] = start_meta["domain"]
    save_checkpoint(model.eval(), out, **{**meta, "routing": routing})
    return True


def _write_result(best_file: Path, out: Path, keeper: Segmenter, start_meta: dict[str, Any], start_name: str,
                  images: list[Path], route: bool) -> bool:
    """Write the fine-tuned model to ``out``: routed with ``keeper`` when ``route`` and a gate
    tells the starting model's recorded images from the corrections, plain otherwise (then with
    the corrections as its own domain record). Returns whether it is routed."""
    tuned = load_model(best_file)
    meta = tuned.info.record()
    start_styles = recorded_styles(start_meta, style_feature_dim(keeper)) if route else None
    if start_styles is not None and keeper.arch == tuned.arch and keeper.config == tuned.config:
        new_styles = image_styles(keeper, images, skip_unreadable=True)
        fit = check_gate(start_styles, new_styles)
        log.info("fine-tune: gate between %s's training images and the corrections: %s", start_name, fit.record())
        if fit.separates:
            model = routed_model(keeper, tuned, start_styles, new_styles)
            routing = {"start": start_name, "features": STYLE_FEATURES, **fit.record()}
            # a start whose weights are float16 numbers (a shipped model) is stored so: lossless
            start_half = all(torch.equal(t, t.half().float()) for n, t in keeper.state_dict().items()
                             if t.is_floating_point() and not n.endswith(("running_mean", "running_var")))
            save_checkpoint(model, out, half=lambda name: start_half and name.startswith("experts.0."),
                            **{**meta, "domain": start_meta["domain"], "routing": routing})
            return True
    meta["domain"] = domain_record(tuned, images, source="corrections")
    save_checkpoint(tuned, out, **meta)
    return False
