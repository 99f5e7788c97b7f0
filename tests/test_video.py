"""Videos: reading frames, and segmenting folders of images and videos from the command line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from skimage import io

from napari_medspike import create_model, save_checkpoint
from napari_medspike.common import Progress, run_job
from napari_medspike.data.io import ImageReadError
from napari_medspike.data.synthetic import synthetic_lesion
from napari_medspike.data.video import VideoCutShort, frame_step, iter_frames, read_video, video_info, write_video
from napari_medspike.inference.folder import list_inputs, segment_folder_steps


def frames(n: int = 5, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    return np.stack([synthetic_lesion(shape, seed=i)[0] for i in range(n)])


@pytest.fixture
def tiny_model():
    return create_model("medqkformer", widths=(8, 16, 32, 64)).eval()


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mov", ".mkv"])
def test_a_video_reads_back_as_its_frames(tmp_path, suffix):
    original = frames()
    path = write_video(tmp_path / f"clip{suffix}", original)
    info = video_info(path)
    assert (info.frames, info.height, info.width) == (5, 48, 64) and info.fps == pytest.approx(10)
    stack, meta = read_video(path)
    assert stack.shape == original.shape and stack.dtype == np.uint8
    assert meta["every"] == 1 and meta["frames"] == [0, 1, 2, 3, 4]
    # lossy codecs: close to the frames written, and each frame closest to its own original
    error = np.abs(stack.astype(float) - original).mean(axis=(1, 2, 3))
    assert error.max() < 12
    cross = np.abs(stack[1].astype(float) - original[3]).mean()
    assert cross > 2 * error[1]


def test_a_video_too_large_for_memory_is_read_every_kth_frame(tmp_path):
    path = write_video(tmp_path / "clip.mp4", frames(7))
    one_frame = 48 * 64 * 3
    assert frame_step(video_info(path), max_bytes=3 * one_frame) == 3
    stack, meta = read_video(path, max_bytes=3 * one_frame)
    assert stack.shape[0] == 3 and meta["every"] == 3 and meta["frames"] == [0, 3, 6]
    assert [i for i, _ in iter_frames(path, every=2)] == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="at least 1"):
        next(iter_frames(path, every=0))


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"hello, this is text and no video", "cannot read the video"),
])
def test_unreadable_videos_raise_a_message_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message) as err:
        read_video(path)
    assert "bad.mp4" in str(err.value)
    with pytest.raises(ImageReadError, match="no such file"):
        video_info(tmp_path / "missing.avi")


def cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("suffix", [".avi", ".mkv"])
def test_a_video_cut_off_gives_its_frames_and_says_it_ends_early(tmp_path, suffix):
    """FFmpeg stops without an error at the end of a file cut off while copying: the reader gave a
    shorter layer and the command line fewer masks, with no word (30 frames in the header, 12
    read)."""
    path = cut_in_half(write_video(tmp_path / f"clip{suffix}", frames(30)))
    assert video_info(path).frames == 30
    stack, meta = read_video(path)
    assert 0 < len(stack) < 30 and meta["frames"] == list(range(len(stack)))
    assert "clip" in meta["cut_short"] and "30 frames its header announces" in meta["cut_short"]
    with pytest.raises(VideoCutShort) as err:
        list(iter_frames(path))
    assert err.value.frames_read == len(stack)
    whole, meta = read_video(write_video(tmp_path / f"whole{suffix}", frames(30)))
    assert len(whole) == 30 and "cut_short" not in meta


def test_a_folder_job_says_which_videos_end_early(tmp_path, tiny_model):
    folder = tmp_path / "in"
    folder.mkdir()
    cut_in_half(write_video(folder / "clip.avi", frames(30)))
    result = run_job(segment_folder_steps(tiny_model, folder, tmp_path / "out", threshold=0.3))
    assert 0 < len(result.masks) < 30 and not result.skipped
    assert len(result.incomplete) == 1
    assert "clip.avi" in result.incomplete[0] and f"the {len(result.masks)} frames before it were segmented" in result.incomplete[0]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak memory")
def test_a_video_is_read_into_one_array_without_a_second_copy(tmp_path):
    """The frames went into a list and then np.stack copied them: opening a video took twice the
    memory its layer holds (a 211 MiB stack raised the peak by 444 MiB). Measured in a fresh
    process: the rise of its peak resident memory while reading."""
    import subprocess
    import sys

    path = write_video(tmp_path / "clip.avi", np.tile(frames(60, (96, 128)), (1, 3, 3, 1)))  # 60 x 288 x 384
    script = (
        "import re, sys\n"
        "from pathlib import Path\n"
        "from napari_medspike.data.video import read_video\n"
        "def kib(field): return int(re.search(field + r':\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1))\n"
        "read_video(sys.argv[2])\n"  # the decoder's own buffers, once
        "Path('/proc/self/clear_refs').write_text('5')\n"  # the peak starts again from here
        "base = kib('VmRSS')\n"
        "stack, _ = read_video(sys.argv[1])\n"
        "print((kib('VmHWM') - base) * 1024 / stack.nbytes)\n"
    )
    small = write_video(tmp_path / "small.avi", frames(2))
    out = subprocess.run([sys.executable, "-c", script, str(path), str(small)], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 1.4, out.stdout


def test_a_folder_job_segments_images_and_every_video_frame(tmp_path, tiny_model):
    folder = tmp_path / "in"
    folder.mkdir()
    io.imsave(folder / "still.png", frames(1)[0], check_contrast=False)
    write_video(folder / "clip.avi", frames(4))
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    (folder / "notes.txt").write_text("ignored")
    assert [p.name for p in list_inputs(folder)] == ["broken.mp4", "clip.avi", "still.png"]

    events = []
    result = run_job(segment_folder_steps(tiny_model, folder, tmp_path / "out", threshold=0.3, every=2),
                     events.append)
    assert all(isinstance(e, Progress) and e.total == 3 for e in events)
    assert [e.done for e in events if e.message in ("broken.mp4", "clip.avi", "still.png")] == [1, 2, 3]
    names = sorted(p.name for p in result.masks)
    assert names == ["clip_f00000.png", "clip_f00002.png", "still.png"]
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == names
    assert len(result.skipped) == 1 and "broken.mp4" in result.skipped[0]
    mask = io.imread(tmp_path / "out" / "masks" / "clip_f00002.png")
    assert mask.shape == (48, 64) and set(np.unique(mask)) <= {0, 255}
    with result.csv.open(encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result.rows)
    assert {(r["image"], r["slice"]) for r in rows} <= {("clip.avi", "0"), ("clip.avi", "2"), ("still.png", "0")}


def test_an_image_named_like_a_video_frame_keeps_its_own_mask(tmp_path, tiny_model):
    """clip_f00001.png beside clip.mp4: the image's mask replaced the video's frame 1 mask."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_video(folder / "clip.mp4", frames(2))
    io.imsave(folder / "clip_f00001.png", frames(1)[0], check_contrast=False)
    result = run_job(segment_folder_steps(tiny_model, folder, tmp_path / "out"))
    names = sorted(p.name for p in result.masks)
    assert names == ["clip_f00001.png", "clip_mp4_f00000.png", "clip_mp4_f00001.png"]
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == names


def test_closing_a_folder_job_stops_it_and_keeps_what_was_done(tmp_path, tiny_model):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        io.imsave(folder / f"f{i}.png", frames(1)[0], check_contrast=False)
    steps = segment_folder_steps(tiny_model, folder, tmp_path / "out")
    seen = [next(steps) for _ in range(3)]  # start, f0 done, f1 done
    steps.close()
    assert seen[-1].done == 2
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["f0.png", "f1.png"]
    assert (tmp_path / "out" / "measurements.csv").is_file()


def test_inputs_sharing_a_stem_get_masks_of_their_own_and_a_cancel_event_stops_between_images(tmp_path, tiny_model):
    import threading

    folder = tmp_path / "in"
    folder.mkdir()
    io.imsave(folder / "a.png", frames(1)[0], check_contrast=False)
    io.imsave(folder / "a.jpg", frames(1)[0][:24, :24], check_contrast=False)
    io.imsave(folder / "b.png", frames(1)[0], check_contrast=False)
    result = run_job(segment_folder_steps(tiny_model, folder, tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["a_jpg.png", "a_png.png", "b.png"]
    assert len(set(result.masks)) == 3 and not result.cancelled
    assert io.imread(tmp_path / "out" / "masks" / "a_jpg.png").shape == (24, 24)
    # a cancel event: the job stops before the next image and returns what it wrote, table included
    cancel = threading.Event()
    steps = segment_folder_steps(tiny_model, folder, tmp_path / "cut", cancel=cancel)
    next(steps), next(steps)  # started, first file done
    cancel.set()
    cut = run_job(steps)
    assert cut.cancelled and len(cut.masks) == 1 and (tmp_path / "cut" / "measurements.csv").is_file()


def test_a_second_run_into_one_output_folder_moves_the_first_runs_masks_aside(tmp_path, tiny_model):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    io.imsave(first / "a.png", frames(1)[0], check_contrast=False)
    io.imsave(second / "b.png", frames(1)[0], check_contrast=False)
    out = tmp_path / "out"
    assert run_job(segment_folder_steps(tiny_model, first, out, probabilities=True)).earlier is None
    result = run_job(segment_folder_steps(tiny_model, second, out))
    # the folder holds only what the second run wrote: its table never sits beside a.png's mask
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["b.png"]
    assert not (out / "probabilities").exists()
    # nothing is lost: the first run's outputs are in earlier/<time>/
    assert result.earlier is not None and result.earlier.parent == out / "earlier"
    assert sorted(p.name for p in result.earlier.iterdir()) == ["masks", "measurements.csv", "probabilities"]
    assert (result.earlier / "masks" / "a.png").is_file() and (result.earlier / "probabilities" / "a.tif").is_file()
    # a third run in the same second gets a folder of its own
    third = run_job(segment_folder_steps(tiny_model, first, out))
    assert third.earlier != result.earlier and (third.earlier / "masks" / "b.png").is_file()


def test_segment_command_takes_a_video_file(tmp_path, tiny_model):
    from napari_medspike.cli.segment import main

    video = write_video(tmp_path / "clip.mp4", frames(3))
    ckpt = save_checkpoint(tiny_model, tmp_path / "m.safetensors", input_size=32)
    out = tmp_path / "out"
    assert main([str(video), "--out", str(out), "--model", str(ckpt), "--device", "cpu", "--probabilities"]) == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"clip_f0000{i}.png" for i in range(3)]
    assert len(list((out / "probabilities").iterdir())) == 3
    assert main([str(tmp_path / "m.safetensors"), "--out", str(out)]) == 2  # not an image or video
    with pytest.raises(SystemExit) as usage:
        main([str(video), "--out", str(out), "--every", "0"])
    assert usage.value.code == 2


def test_inputs_whose_mask_names_would_still_coincide_get_numbers(tmp_path, tiny_model):
    """photo.jpg and photo.JPG both became photo_jpg, and a.png became a_png beside a_png.png: five
    inputs left three masks while the tool said five."""
    from napari_medspike.inference.folder import output_stems

    folder = tmp_path / "in"
    folder.mkdir()
    names = ["photo.jpg", "photo.JPG", "a.png", "a.jpg", "a_png.png"]
    for i, name in enumerate(names):
        io.imsave(folder / name, np.roll(frames(1)[0], 3 * i, axis=1), check_contrast=False)
    stems = output_stems([folder / n for n in names])
    assert len({s.lower() for s in stems.values()}) == 5
    # videos write <name>_f<frame>: no image may be named like one of those frames either
    for odd in (["clip.mp4", "clip.avi", "clip_mp4_f00001.png"], ["x.mp4", "x.MP4", "x_mp4_f00000.png"],
                ["clip.mp4", "clip_f100000.png"]):
        named = output_stems([Path(n) for n in odd])
        images = {named[Path(n)].lower() for n in odd if n.endswith(".png")}
        videos = [named[Path(n)].lower() for n in odd if not n.endswith(".png")]
        assert len(set(videos)) == len(videos), named
        assert not any(image.startswith(video + "_f") for image in images for video in videos), named
    assert stems[folder / "a_png.png"] == "a_png"  # its own stem, not a number
    result = run_job(segment_folder_steps(tiny_model, folder, tmp_path / "out"))
    masks = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())
    assert len(masks) == 5 and len(set(result.masks)) == 5, masks
