"""Reading video files (mp4, avi, mov, mkv, webm) as frames, with PyAV (FFmpeg's libraries).

Endoscopy comes as video. :func:`iter_frames` streams the frames one by one (a folder job
segments a long video in bounded memory); :func:`read_video` loads them as one ``[N, H, W, 3]``
uint8 stack for a napari layer, taking every k-th frame when all of them would not fit in
``max_bytes``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import ImageReadError, missing_file_reason

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

#: A video layer larger than this is read with every k-th frame (see :func:`read_video`).
DEFAULT_MAX_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says: frame count (an estimate from the duration when the
    container does not store it: ``exact`` False), frame size and frame rate."""

    frames: int
    height: int
    width: int
    fps: float
    exact: bool = True

    def cut_short(self, decoded: int) -> bool:
        """Whether ``decoded`` frames are fewer than the header promises: any fewer than a
        stored count, or under 90 % of one estimated from the duration."""
        return decoded < self.frames if self.exact else decoded < 0.9 * self.frames

    @property
    def frame_bytes(self) -> int:
        """Bytes of one decoded RGB frame (8 bits per channel)."""
        return self.height * self.width * 3


class VideoCutShort(ImageReadError):
    """A video that ends before the frame its header announces (a file cut off while copying or
    recording: FFmpeg stops at the damage without an error). ``frames_read`` frames were read."""

    def __init__(self, message: str, frames_read: int) -> None:
        super().__init__(message)
        self.frames_read = frames_read


def is_video(path: str | Path) -> bool:
    """Whether ``path`` has a video file suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _av():
    try:
        import av
    except ImportError as err:  # pragma: no cover - av is a dependency; a broken install lands here
        raise ImageReadError("reading videos needs PyAV: pip install av") from err
    return av


def _open(path: Path):
    av = _av()
    if not path.is_file():
        raise ImageReadError(f"{path}: {missing_file_reason(path)}")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: not a video (empty file)")
    try:
        container = av.open(str(path))
    except Exception as err:  # FFmpeg raises InvalidDataError and others: all mean "unreadable"
        raise ImageReadError(f"{path}: cannot read the video ({type(err).__name__}: {err})") from err
    if not container.streams.video:
        container.close()
        raise ImageReadError(f"{path}: the file holds no video stream")
    return container


def _header(container) -> VideoInfo:  # type: ignore[no-untyped-def]
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 0.0)
    frames = int(stream.frames or 0)
    exact = frames > 0
    if not exact:
        duration = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                    else (container.duration or 0) / 1_000_000)
        frames = max(1, round(duration * fps)) if fps else 1
    return VideoInfo(frames, int(stream.codec_context.height), int(stream.codec_context.width), fps, exact)


def video_info(path: str | Path) -> VideoInfo:
    """The frame count, size and rate of a video file (raises :class:`ImageReadError`)."""
    with _open(Path(path)) as container:
        return _header(container)


def iter_frames(path: str | Path, every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame)`` for every ``every``-th frame of a video, ``frame`` RGB uint8
    ``[H, W, 3]``, decoding one frame at a time. A file that breaks off mid-way raises
    :class:`ImageReadError` naming the file and the last frame read, after the frames before it:
    :class:`VideoCutShort` where the video simply ends before the frame count of its header."""
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    path = Path(path)
    index = -1
    with _open(path) as container:
        info = _header(container)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % every == 0:
                    yield index, frame.to_ndarray(format="rgb24")
        except ImageReadError:
            raise
        except Exception as err:
            if index < 0:
                raise ImageReadError(f"{path}: cannot decode the video ({type(err).__name__}: {err})") from err
            raise VideoCutShort(f"{path}: the video breaks off after frame {index}, {index + 1} of the "
                                f"{'' if info.exact else 'about '}{info.frames} frames its header announces "
                                f"({type(err).__name__}: {err})", index + 1) from err
    if index < 0:
        raise ImageReadError(f"{path}: the video holds no frames")
    if info.cut_short(index + 1):
        about = "" if info.exact else "about "
        raise VideoCutShort(f"{path}: the video ends after frame {index}, {index + 1} of the {about}{info.frames} "
                            "frames its header announces: the file may be damaged or cut off", index + 1)


def frame_step(info: VideoInfo, max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """The smallest k such that every k-th frame of the video fits in ``max_bytes``."""
    return max(1, math.ceil(info.frames * info.frame_bytes / max(max_bytes, info.frame_bytes)))


def read_video(path: str | Path, every: int | None = None,
               max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[np.ndarray, dict[str, object]]:
    """A video's frames as one ``[N, H, W, 3]`` uint8 stack, and what was read: ``every``
    (frames kept: every k-th; chosen so the stack fits in ``max_bytes`` when not given),
    ``frames`` (the indices kept), ``fps`` and the path. The frames are decoded into one array
    sized from the header (no second copy of the stack). A video that ends or breaks off early
    gives the frames before, and ``cut_short`` says what happened (absent otherwise)."""
    path = Path(path)
    info = video_info(path)
    step = every if every is not None else frame_step(info, max_bytes)
    stack = np.empty((max(1, -(-info.frames // step)), info.height, info.width, 3), np.uint8)
    extra: list[np.ndarray] = []  # frames beyond the header's count (an estimate that fell short)
    indices: list[int] = []
    meta: dict[str, object] = {"path": str(path), "every": step, "frames": indices, "fps": info.fps}
    try:
        for index, frame in iter_frames(path, step):
            if frame.shape != stack.shape[1:]:
                raise ImageReadError(f"{path}: frame {index} is {frame.shape[1]}x{frame.shape[0]} pixels, "
                                     f"the video's header says {info.width}x{info.height}")
            if len(indices) < len(stack):
                stack[len(indices)] = frame
            else:
                extra.append(frame)
            indices.append(index)
    except VideoCutShort as err:
        if not indices:
            raise
        meta["cut_short"] = str(err)
    if extra:
        return np.concatenate([stack, np.stack(extra)]), meta
    return stack[: len(indices)], meta


def write_video(path: str | Path, frames: np.ndarray, fps: int = 10, codec: str | None = None) -> Path:
    """Write ``[N, H, W, 3]`` uint8 frames as a video (mp4 and mov: MPEG-4 part 2; avi: MJPEG,
    unless ``codec`` says otherwise). For tests and examples; H and W must be even."""
    av = _av()
    path = Path(path)
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [N, H, W, 3], got shape {frames.shape}")
    codec = codec or ("mjpeg" if path.suffix.lower() == ".avi" else "mpeg4")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec != "mjpeg":
            stream.bit_rate = 4_000_000
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
