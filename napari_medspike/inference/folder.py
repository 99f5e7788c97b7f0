"""Segment a folder of images (and videos) to mask files and a measurement table: the job behind
``medspike-segment`` and the Segment dock's folder section."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..common import Progress, atomic_write, check_writable, run_job
from ..data.io import IMAGE_SUFFIXES, ImageReadError, read_pixels
from ..data.video import VIDEO_SUFFIXES, VideoCutShort, is_video, iter_frames, video_info
from ..models.base import Segmenter
from .measure import FOLDER_COLUMNS, measure_regions, write_csv
from .predictor import predict_steps


@dataclass
class FolderResult:
    """What a folder job wrote: mask files, measurement rows, the CSV, the inputs it skipped and
    the videos that ended early, their frames before segmented (one message each, naming the file)."""

    out: Path
    masks: list[Path] = field(default_factory=list)
    rows: list[dict[str, object]] = field(default_factory=list)
    csv: Path | None = None
    skipped: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    cancelled: bool = False
    earlier: Path | None = None


#: what a folder job writes in its output folder (an earlier run's are moved aside, not mixed in)
OUTPUTS = ("masks", "probabilities", "measurements.csv")


def set_aside_earlier_run(out: Path) -> Path | None:
    """Move an earlier run's masks, probabilities and table in ``out`` to ``out/earlier/<time>/``,
    so that the folder holds only what the new run writes (its table would otherwise sit beside
    masks of images it never saw). Returns where they went, or ``None`` when there were none."""
    import time

    found = [out / name for name in OUTPUTS
             if (out / name).is_file() or ((out / name).is_dir() and any((out / name).iterdir()))]
    if not found:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = out / "earlier" / stamp
    n = 1
    while aside.exists():
        n += 1
        aside = out / "earlier" / f"{stamp}-{n}"
    aside.mkdir(parents=True)
    for path in found:
        path.rename(aside / path.name)
    return aside


def list_inputs(source: str | Path) -> list[Path]:
    """The images and videos to segment: the supported files in a folder (sorted, not
    recursive), or one file. Raises ``FileNotFoundError``/``ValueError`` that say what is wrong."""
    source = Path(source)
    suffixes = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    if source.is_file():
        if source.suffix.lower() not in suffixes:
            raise ValueError(f"{source}: not an image or video file ({', '.join(suffixes)})")
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder or file")
    # a link whose target is gone is listed too: reading it then says where it points (skipped
    # with a word, not silently left out)
    found = sorted(p for p in source.iterdir()
                   if (p.is_file() or p.is_symlink() and not p.exists()) and p.suffix.lower() in suffixes)
    if not found:
        raise ValueError(f"{source}: no images or videos ({', '.join(suffixes)})")
    return found


def output_stems(inputs: list[Path]) -> dict[Path, str]:
    """The name each input's outputs start with: its stem, or, where inputs share a stem (``a.png``
    and ``a.jpg``) or an image is named like a video's frame (``clip_f00001.png`` beside
    ``clip.mp4``), the stem and the extension (``a_png``, ``clip_mp4``); where names still
    coincide, ignoring case (``photo.jpg`` and ``photo.JPG``; ``a.png`` beside ``a_png.png``), a
    number (``photo_jpg-2``). No mask replaces another, on any file system."""
    import re

    counts: dict[str, int] = {}
    for path in inputs:
        counts[path.stem.lower()] = counts.get(path.stem.lower(), 0) + 1
    stems = {path: path.stem if counts[path.stem.lower()] == 1 else f"{path.stem}_{path.suffix.lstrip('.').lower()}"
             for path in inputs}
    # a video's frames are named <stem>_f00001, ...: an image of such a name (clip_f00001.png
    # beside clip.mp4) would replace a frame's mask, so the video's names take its extension
    images = {stem.lower() for path, stem in stems.items() if not is_video(path)}
    for path, stem in stems.items():
        frame_name = re.compile(re.escape(stem.lower()) + r"_f\d{5,}")
        if is_video(path) and any(frame_name.fullmatch(name) for name in images):
            stems[path] = f"{path.stem}_{path.suffix.lstrip('.').lower()}"
    # names that still coincide (ignoring case, as some file systems do): an input keeps its own
    # stem where it can, the others take the first free number; a video's name is not free while
    # an image is named like one of its frames (``<name>_f`` and five or more digits)
    def free(name: str, video: bool) -> bool:
        if name.lower() in taken:
            return False
        frame = re.compile(re.escape(name.lower()) + r"_f\d{5,}")
        return not video or not any(frame.fullmatch(image) for image in images)

    taken: set[str] = set()
    own, renamed = [p for p in inputs if stems[p] == p.stem], [p for p in inputs if stems[p] != p.stem]
    for path in own + renamed:
        stem, n, video = stems[path], 2, is_video(path)
        while not free(stems[path], video):
            stems[path], n = f"{stem}-{n}", n + 1
        taken.add(stems[path].lower())
    return stems


def _frames(path: Path, stem: str, every: int) -> Iterator[tuple[str, int, np.ndarray]]:
    """``(output stem, slice index, pixels)`` for an image (one) or a video (every k-th frame)."""
    if is_video(path):
        for index, frame in iter_frames(path, every):
            yield f"{stem}_f{index:05d}", index, frame
    else:
        yield stem, 0, read_pixels(path)


def segment_folder_steps(
    model: Segmenter,
    source: str | Path,
    out: str | Path,
    threshold: float = 0.5,
    mode: str | None = None,
    device: torch.device | str = "cpu",
    flips: bool | None = None,
    probabilities: bool = False,
    every: int = 1,
    precision: str = "auto",
    cancel: threading.Event | None = None,
) -> Generator[Progress, None, FolderResult]:
    """Segment every image (and every ``every``-th frame of every video) of ``source``.

    Writes ``OUT/masks/<name>.png`` (0/255; video frames as ``<video>_f<frame>.png``),
    optionally ``OUT/probabilities/<name>.tif`` (float32), and ``OUT/measurements.csv`` (one row
    per connected region); ``precision`` as in :func:`predict_steps`. Unreadable files are
    skipped and listed in the result; inputs that share a stem keep their extension in the output
    names (:func:`output_stems`). Yields :class:`Progress` per file and per video frame; setting
    ``cancel`` (checked before every image and frame) or closing the generator stops it, and the
    measurements of what was done are still written (a cancelled run returns what it wrote, with
    ``cancelled`` set). An earlier run's outputs in ``out`` are moved to ``out/earlier/<time>/``
    first (:func:`set_aside_earlier_run`; the result's ``earlier``).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    from ..data.corrections import png_bytes

    inputs = list_inputs(source)
    out = check_writable(out)  # a file named like the folder, or no permission: said before any work
    result = FolderResult(out)
    result.earlier = set_aside_earlier_run(out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    if probabilities:
        (out / "probabilities").mkdir(parents=True, exist_ok=True)
    total = len(inputs)
    stems = output_stems(inputs)
    first = True  # the mode's and device's warnings are logged for the first image only
    try:
        yield Progress(0, total, f"{total} files")
        for i, path in enumerate(inputs):
            if cancel is not None and cancel.is_set():
                break
            try:
                frames = video_info(path).frames if is_video(path) else 1
                for stem, index, pixels in _frames(path, stems[path], every):
                    if cancel is not None and cancel.is_set():
                        break
                    prob = run_job(predict_steps(model, pixels, mode=mode, device=device, flips=flips,
                                                    precision=precision, warn=first))
                    first = False
                    mask = prob >= threshold
                    encoded = png_bytes(mask.astype(np.uint8) * 255)
                    target = out / "masks" / f"{stem}.png"
                    atomic_write(target, lambda tmp: tmp.write_bytes(encoded))
                    result.masks.append(target)
                    if probabilities:
                        import tifffile

                        atomic_write(out / "probabilities" / f"{stem}.tif",
                                     lambda tmp: tifffile.imwrite(tmp, prob.astype(np.float32)))
                    rows = measure_regions(mask, prob, image=path.name, slice_index=index)
                    result.rows += [{**row, "mask": target.relative_to(out).as_posix()} for row in rows]
                    if frames > 1:
                        yield Progress(i, total, f"{path.name}: frame {index + 1} of about {frames}")
            except VideoCutShort as err:
                result.incomplete.append(f"{err} (the {err.frames_read} frames before it were segmented)")
            except ImageReadError as err:
                result.skipped.append(str(err))
            yield Progress(i + 1, total, path.name)
    except GeneratorExit:
        result.cancelled = True
        raise
    finally:
        result.csv = write_csv(result.rows, out / "measurements.csv", columns=FOLDER_COLUMNS)  # (the header too, if empty)
    result.cancelled = cancel is not None and cancel.is_set()
    return result
