"""Whole-image (resize) or tiled prediction of a foreground probability map.

The core is a generator (stardist-napari style): :func:`predict_steps` yields
:class:`Progress` events and returns the probability map, so a GUI worker can report progress and
stop between steps; :func:`predict` runs it to the end with an optional callback and cancel flag.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch

from ..data.io import (box_shrink, colour_channels, image_hw, intensity_range, reduced_rgb_float, resize_extent,
                       rgb_for_resize, to_rgb_float)
from ..data.resize import resize_image, resize_map
from ..models.base import Segmenter
from ..common import Progress, run_job  # noqa: F401 (Progress: re-exported)
from ..runtime import bf16_inference, pick_device, requested_device, tune_malloc  # noqa: F401 (pick_device: re-exported)

log = logging.getLogger(__name__)

PREDICTION_MODES = ("resize", "tiled")


class Cancelled(RuntimeError):
    """Raised when a caller's cancel flag stops a long job."""


def memory_format_for(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA (tensor-core convolutions); contiguous NCHW on the CPU, where the
    fast paths make it 5-20 % faster than channels_last at 256² (BENCHMARKS.md)."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def _to_batch(tiles: np.ndarray, device: torch.device) -> torch.Tensor:
    """``[N, H, W, 3]`` float -> ``[N, 3, H, W]`` on ``device`` in its preferred layout."""
    x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2)
    if device.type == "cuda":
        x = x.pin_memory()  # lets the copy below run asynchronously
    return x.to(device, non_blocking=True).contiguous(memory_format=memory_format_for(device))


def tile_window(size: int, overlap: int) -> torch.Tensor:
    """A separable blending weight for one tile: flat in the middle, tapering over ``overlap``."""
    ramp = torch.ones(size)
    if overlap > 0:
        edge = torch.linspace(0, math.pi / 2, overlap + 2)[1:-1]
        ramp[:overlap] = torch.sin(edge) ** 2
        ramp[-overlap:] = torch.flip(torch.sin(edge) ** 2, [0])
    return ramp[:, None] * ramp[None, :]


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins covering ``[0, length)``; the last tile is shifted to end at the border."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return sorted(set(starts))


FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def flip_averaged_logits(model: Segmenter, x: torch.Tensor, flips: bool = True) -> torch.Tensor:
    """Logits ``[B, 1, H, W]`` of ``x``; with ``flips`` the mean over the four mirror images.

    Test-time augmentation: the batch is run once with all four flips stacked (identity,
    left-right, up-down, both) and each result is flipped back before averaging the logits.
    """
    if not flips:
        return model(x).float()
    stacked = torch.cat([x.flip(dims) if dims else x for dims in FLIPS])
    out = model(stacked).float().chunk(len(FLIPS))
    return torch.stack([o.flip(dims) if dims else o for o, dims in zip(out, FLIPS)]).mean(0)


def recommended_flips(model: Segmenter) -> bool:
    """Whether ``model``'s checkpoint recommends flip test-time augmentation (``inference.flips``)."""
    return model.info.recommended_flips


def recommended_mode(model: Segmenter) -> str:
    """The mode that suits how ``model`` was trained: ``"tiled"`` after random crops (histology),
    ``"resize"`` after whole resized images."""
    return model.info.recommended_mode


def resolve_mode(model: Segmenter, mode: str | None) -> str:
    """``mode``, or the model's own (:func:`recommended_mode`) for None or ``"auto"``; an unknown
    mode raises ValueError."""
    if mode is None or mode == "auto":
        return recommended_mode(model)
    if mode not in PREDICTION_MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {PREDICTION_MODES} (or 'auto': as the model was trained)")
    return mode


def _keeps_training_mode(steps: Callable[..., Generator[Progress, None, np.ndarray]]):
    """Put the model back in the mode (train or eval) it came in: prediction runs it in eval
    mode, and a training loop that predicts to watch its progress must not lose train mode."""
    @functools.wraps(steps)
    def wrapper(model: Segmenter, *args: Any, **kwargs: Any) -> Generator[Progress, None, np.ndarray]:
        was_training = model.training
        try:
            return (yield from steps(model, *args, **kwargs))
        finally:
            model.train(was_training)

    return wrapper


def mode_note(model: Segmenter, mode: str) -> str | None:
    """A warning when ``mode`` does not suit how ``model`` was trained (None: it does)."""
    trained = model.info.training.get("mode")
    if mode == "tiled" and trained == "resize":
        return ("tiled prediction with a model trained on whole resized images: each tile shows it a small "
                "part of a picture it learnt to see whole; mode 'resize' suits it")
    if mode == "resize" and trained == "crop":
        return ("resize prediction with a model trained on crops at full resolution: the whole image shrunk to "
                f"{model.input_size} px shows it objects far smaller than it learnt; mode 'tiled' suits it")
    return None


#: Sides further apart than this make resize mode squeeze objects out of shape.
MAX_RESIZE_ASPECT = 3.0


def channels_first_note(image: np.ndarray) -> str | None:
    """A warning for an array read as one colour image with its channels first (``[3, H, W]`` or
    ``[4, H, W]``; None otherwise): a stack of 3 or 4 grey images has that shape too, and was
    segmented as one picture (an empty mask for three ultrasound frames with lesions)."""
    shape = tuple(np.shape(image))
    if len(shape) != 3 or shape[0] not in (3, 4) or shape[-1] in (3, 4):
        return None
    return (f"an array of shape {shape} is taken as one {'RGB' if shape[0] == 3 else 'RGBA'} image with its "
            f"channels first; if it is a stack of {shape[0]} grey images, segment them one by one "
            "(or in napari's Segment dock)")


def shape_note(height: int, width: int, mode: str) -> str | None:
    """A warning when ``mode`` would squeeze an image of this shape out of shape (None: fine): resize
    mode makes every image square, so a strip of eight polyp photos (4232 x 622) gave an empty
    mask (Dice 0.000 against 0.936 for one photo)."""
    if mode != "resize" or min(height, width) < 1:
        return None
    ratio = max(height, width) / min(height, width)
    if ratio <= MAX_RESIZE_ASPECT:
        return None
    return (f"a {height} x {width} image is squeezed into a square in resize mode ({ratio:.0f} times as long as "
            "wide): its objects lose their shape and may not be found; tiled mode keeps them as they are")


@_keeps_training_mode
def predict_steps(
    model: Segmenter,
    image: np.ndarray,
    mode: str | None = None,
    device: torch.device | str = "cpu",
    tile_size: int | None = None,
    overlap: float = 0.25,
    batch_size: int | None = None,
    flips: bool | None = None,
    precision: str = "auto",
    *,
    warn: bool = True,
    value_range: tuple[float, float] | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Yield progress while predicting; return the probability map ``[H, W]`` float32.

    ``image`` is any 2D grey/RGB/RGBA array (see :func:`to_rgb_float`). ``mode="resize"`` resizes
    to the model's input size and the probabilities back; ``"tiled"`` runs overlapping tiles of
    the model's size at full resolution, blended smoothly (memory bounded by the tile batch);
    None or ``"auto"``: the mode the model was trained for (:func:`recommended_mode`).
    ``batch_size`` tiles go through the model at once (default: 4 on a GPU, 1 on a CPU, where
    larger batches were no faster, or slower: a 600 x 800 image with the spiking model and mirror
    TTA took 48-52 s one tile at a time against 68-71 s four at a time, and a job can stop after
    each batch).
    ``precision`` is ``"auto"``, ``"fp32"`` or ``"bf16"`` (autocast; see
    :func:`~napari_medspike.runtime.bf16_inference`); probabilities are always fp32.
    ``warn=False`` leaves out the log's warnings about the mode and the device (a stack logs
    them once, not once per image). ``value_range`` is the ``(lo, hi)`` mapped to black and
    white for images that are not 8-bit (default: the image's own, see :func:`to_rgb_float`).
    """
    mode = resolve_mode(model, mode)
    if warn and (note := mode_note(model, mode)) is not None:
        log.warning(note)
    h, w = image_hw(image)
    if warn and (squeezed := shape_note(h, w, mode)) is not None:
        log.warning(squeezed)
    if warn and (first := channels_first_note(image)) is not None:
        log.warning(first)
    device, fallback = requested_device(device)  # "auto", or a GPU that may not be there
    if fallback and warn:
        log.warning(fallback)
    if flips is None:
        flips = recommended_flips(model)
    batch_size = batch_size or (4 if device.type == "cuda" else 1)
    tune_malloc()
    size = tile_size or model.input_size
    # resize mode on a large image: box-averaged in bands first (the same input the inspector shows)
    rgb = rgb_for_resize(image, size, value_range) if mode == "resize" else to_rgb_float(image, value_range=value_range)
    model = model.to(device, memory_format=memory_format_for(device)).eval()
    bf16 = bf16_inference(model, device, precision)
    # Inference mode and autocast are per thread: they are entered around each piece of work,
    # never across a yield (a job suspended inside them would leave its worker thread, which
    # napari reuses for the next job, without gradients).
    def computing() -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        # bf16 autocast where it pays (probabilities are computed in fp32); fp32 elsewhere
        stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16))
        return stack

    if mode == "resize":
        yield Progress(0, 1, "segmenting")
        # the pixels the box-averaged image stands for: its last partial boxes were dropped, so
        # the map goes back over those and its edge is carried on (stretched over the whole
        # image, a mask's far edges drifted by up to the box width: +19 px on a 6000² image)
        covered = resize_extent(h, w, size)
        with computing():
            x = _to_batch(rgb[None], device)
            del rgb
            x = resize_image(x, size)
            logits = flip_averaged_logits(model, x, flips)
            logits = resize_map(logits.float(), covered)
            if covered != (h, w):
                logits = torch.nn.functional.pad(logits, (0, w - covered[1], 0, h - covered[0]), mode="replicate")
            prob = torch.sigmoid_(logits)[0, 0].cpu().numpy()
        yield Progress(1, 1, "done")
        return prob

    route = getattr(model, "expert_for", None)
    if route is not None:  # a routed model: one expert for the whole image, chosen on all of it
        with computing():
            shrink = box_shrink(h, w, model.input_size)  # as resize mode sees the image
            whole = reduced_rgb_float(image, shrink, value_range=value_range) if shrink >= 2 else rgb
            model = route(resize_image(_to_batch(whole[None], device), model.input_size))
            del whole
    pad_h, pad_w = max(0, size - h), max(0, size - w)
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
    ph, pw = rgb.shape[:2]
    ov = int(round(size * min(max(overlap, 0.0), 0.5)))
    stride = max(1, size - ov)
    origins = [(y, x) for y in tile_starts(ph, size, stride) for x in tile_starts(pw, size, stride)]
    with computing():
        window = tile_window(size, ov).to(device)
        acc = torch.zeros(ph, pw, device=device)
        weight = torch.zeros(ph, pw, device=device)
    total = len(origins)
    yield Progress(0, total, f"{total} tiles")
    for i in range(0, total, batch_size):
        chunk = origins[i : i + batch_size]
        with computing():
            tiles = np.stack([rgb[y : y + size, x : x + size] for y, x in chunk])
            batch = _to_batch(tiles, device)
            prob = torch.sigmoid(flip_averaged_logits(model, batch, flips)[:, 0])
            for (y, x), p in zip(chunk, prob):
                acc[y : y + size, x : x + size] += p * window
                weight[y : y + size, x : x + size] += window
        yield Progress(min(i + batch_size, total), total, "tiles")
    with computing():
        return (acc / weight.clamp_min(1e-6))[:h, :w].cpu().numpy()


def predict(
    model: Segmenter,
    image: np.ndarray,
    mode: str | None = None,
    device: torch.device | str = "cpu",
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    **options,
) -> np.ndarray:
    """Run :func:`predict_steps` to completion; raise :class:`Cancelled` when ``cancel`` is set."""
    def on_event(event: Progress) -> None:
        if progress is not None:
            progress(event)
        if cancel is not None and cancel.is_set():
            raise Cancelled("prediction cancelled")  # run_job closes the generator first

    return run_job(predict_steps(model, image, mode=mode, device=device, **options), on_event)


def stack_slices(array: np.ndarray, rgb: bool) -> int:
    """How many 2D images an array holds: 1 for ``[H, W]`` or ``[H, W, 3|4]`` (``rgb``), N for a
    stack ``[N, H, W]`` or ``[N, H, W, 3|4]`` (frames of a video, tiles, slices). Raises a
    ``ValueError`` that says what to do for anything else."""
    ndim = array.ndim - (1 if rgb else 0)
    if ndim == 2:
        return 1
    if ndim == 3:
        return int(array.shape[0])
    raise ValueError(f"an array of shape {tuple(array.shape)} is neither a 2D image nor a stack of them "
                     "([N, H, W] or [N, H, W, 3]): take a 2D slice or a stack of slices first")


def predict_stack_steps(
    model: Segmenter, stack: np.ndarray, rgb: bool = False, **options
) -> Generator[Progress, None, np.ndarray]:
    """Yield progress while predicting every 2D image of ``stack`` (``[N, H, W]``, or
    ``[N, H, W, 3|4]`` with ``rgb``); return probabilities ``[N, H, W]`` float32. A single 2D
    image gives ``[H, W]``. ``options`` go to :func:`predict_steps` for each slice."""
    n = stack_slices(stack, rgb)
    if (stack.ndim - (1 if rgb else 0)) == 2:
        return (yield from predict_steps(model, np.asarray(stack), **options))  # a lazy array: read here
    if options.get("value_range") is None and isinstance(stack, np.ndarray):
        # one range for every frame (a hot pixel in one frame darkened that frame alone); a lazy
        # stack is not read twice for it: its frames keep their own ranges
        options["value_range"] = intensity_range(colour_channels(stack) if rgb else stack)
    out = np.zeros(stack.shape[:3], np.float32)
    yield Progress(0, n, f"{n} images")
    for i in range(n):
        # each image's own steps (tiles) are passed on, so that a cancel stops within an image:
        # it waited for the whole image (104 s for a 2000 x 3000 frame in tiled mode)
        steps = predict_steps(model, np.asarray(stack[i]), warn=i == 0, **options)
        try:
            while True:
                try:
                    event = next(steps)
                except StopIteration as done:
                    out[i] = done.value
                    break
                tiles = f", tile {event.done} of {event.total}" if event.total > 1 else ""
                yield Progress(i, n, f"image {i + 1} of {n}{tiles}")
        finally:
            steps.close()
        yield Progress(i + 1, n, f"image {i + 1} of {n}")
    return out
