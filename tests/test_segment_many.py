"""Stacks, folders and measurements: the work users bring beyond one 2D image."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from skimage import io

from napari_medspike import create_model, save_checkpoint
from napari_medspike.common import run_job
from napari_medspike.data.synthetic import synthetic_lesion
from napari_medspike.inference.measure import COLUMNS, measure_regions, summarise, write_csv
from napari_medspike.inference.predictor import predict, predict_stack_steps, stack_slices


def test_regions_are_measured_in_pixels_and_units():
    mask = np.zeros((20, 30), np.uint8)
    mask[2:6, 3:8] = 1  # 20 px
    mask[10:13, 20:30] = 255  # 30 px, another region
    prob = np.where(mask > 0, 0.8, 0.1).astype(np.float32)
    prob[2:6, 3:8] = 0.6
    rows = measure_regions(mask, prob, spacing=(0.5, 0.25), unit="mm²", image="a.png")
    assert [r["area_px"] for r in rows] == [20, 30]
    assert rows[0]["area"] == pytest.approx(20 * 0.125) and rows[0]["area_unit"] == "mm²"
    assert rows[0]["mean_probability"] == pytest.approx(0.6) and rows[1]["mean_probability"] == pytest.approx(0.8)
    assert summarise(rows) == {"regions": 2, "area_px": 50, "area": pytest.approx(6.25), "area_unit": "mm²"}
    assert measure_regions(np.zeros((4, 4))) == []
    with pytest.raises(ValueError, match="differ in size"):
        measure_regions(mask, prob[:5])


def test_a_stack_is_segmented_slice_by_slice():
    model = create_model("medqkformer", widths=(8, 16, 32, 64)).eval()
    frames = np.stack([synthetic_lesion((40, 48), seed=i)[0] for i in range(3)])  # [3, H, W, 3]
    assert stack_slices(frames, rgb=True) == 3 and stack_slices(frames[0], rgb=True) == 1
    events = []
    probs = run_job(predict_stack_steps(model, frames, rgb=True, tile_size=32), events.append)
    assert probs.shape == (3, 40, 48) and sorted({e.done for e in events}) == [0, 1, 2, 3]
    assert [e.done for e in events] == sorted(e.done for e in events) and events[-1].done == 3
    np.testing.assert_allclose(probs[1], predict(model, frames[1], tile_size=32), atol=1e-6)
    grey = frames[..., 0]
    assert stack_slices(grey, rgb=False) == 3
    with pytest.raises(ValueError, match="neither a 2D image nor a stack"):
        stack_slices(np.zeros((2, 3, 8, 8)), rgb=False)


def test_a_stack_job_can_be_stopped_within_an_image():
    """A stack's job passed nothing on while it segmented an image: a cancel waited for the
    whole image (104 s for a 2000 x 3000 frame in tiled mode)."""
    model = create_model("medqkformer", widths=(8, 16, 32, 64)).eval()
    frames = np.stack([synthetic_lesion((96, 96), seed=i)[0] for i in range(2)])
    steps = predict_stack_steps(model, frames, rgb=True, mode="tiled", tile_size=32)
    events = [next(steps) for _ in range(3)]  # the stack's start, then the first image's own steps
    assert [e.done for e in events] == [0, 0, 0] and "image 1 of 2, tile" in events[-1].message
    steps.close()  # what a cancel does between two events


def test_a_model_trained_on_crops_is_tiled_unless_told_otherwise(caplog):
    """Mode None (the API's, the CLIs' and the dock's default): tiles at full resolution for a model
    trained on random crops; the whole image shrunk to its input size, with a warning, if asked."""
    from napari_medspike.models.info import ModelInfo

    model = create_model("medqkformer", widths=(8, 16, 32, 64)).eval()
    model.info = ModelInfo(arch=model.arch, config=model.config, input_size=32, training={"mode": "crop"})
    image = synthetic_lesion((72, 88), seed=3)[0]
    tiled = predict(model, image, mode="tiled")
    np.testing.assert_array_equal(predict(model, image), tiled)
    with caplog.at_level("WARNING", logger="napari_medspike"):
        resized = predict(model, image, mode="resize")
    assert np.abs(resized - tiled).max() > 1e-3
    assert any("trained on crops" in r.getMessage() for r in caplog.records)
    model.info = ModelInfo(arch=model.arch, config=model.config, input_size=32, training={"mode": "resize"})
    np.testing.assert_array_equal(predict(model, image), resized)
    with pytest.raises(ValueError, match="unknown mode 'tile'"):
        predict(model, image, mode="tile")


def test_a_stack_or_folder_logs_the_mode_warning_once(tmp_path, caplog):
    """Tiled prediction with a model trained on resized images logged its warning once per image
    of a stack or a folder (a 200-frame stack: 200 identical lines)."""
    from napari_medspike.inference.folder import segment_folder_steps

    from napari_medspike.models.info import ModelInfo

    model = create_model("medqkformer", widths=(8, 16, 32, 64)).eval()
    model.info = ModelInfo(arch=model.arch, config=model.config, input_size=32, training={"mode": "resize"})
    frames = np.stack([synthetic_lesion((40, 48), seed=i)[0] for i in range(3)])
    with caplog.at_level("WARNING", logger="napari_medspike"):
        run_job(predict_stack_steps(model, frames, rgb=True, mode="tiled", tile_size=32))
    assert sum("tiled prediction" in r.getMessage() for r in caplog.records) == 1
    folder = tmp_path / "in"
    folder.mkdir()
    for i, frame in enumerate(frames):
        io.imsave(folder / f"f{i}.png", frame, check_contrast=False)
    caplog.clear()
    with caplog.at_level("WARNING", logger="napari_medspike"):
        result = run_job(segment_folder_steps(model, folder, tmp_path / "out", mode="tiled"))
    assert len(result.masks) == 3
    assert sum("tiled prediction" in r.getMessage() for r in caplog.records) == 1


def test_an_image_resize_mode_would_squeeze_out_of_shape_is_warned_about(caplog):
    """A strip of eight polyp photos (4232 x 622) gave an empty mask in resize mode, silently."""
    from napari_medspike.inference.predictor import shape_note

    assert shape_note(4232, 622, "resize").startswith("a 4232 x 622 image is squeezed into a square")
    assert shape_note(4232, 622, "tiled") is None and shape_note(600, 800, "resize") is None
    model = create_model("medqkformer", widths=(8, 16, 32, 64)).eval()
    with caplog.at_level("WARNING", logger="napari_medspike"):
        predict(model, synthetic_lesion((40, 200), seed=0)[0], tile_size=32)
    assert any("squeezed into a square" in r.getMessage() for r in caplog.records)


def test_folder_command_writes_masks_probabilities_and_measurements(tmp_path):
    from napari_medspike.cli.segment import main

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        io.imsave(folder / f"f{i}.png", synthetic_lesion((40, 48), seed=i)[0], check_contrast=False)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"")
    ckpt = save_checkpoint(create_model("medqkformer", widths=(8, 16, 32, 64)), tmp_path / "m.safetensors",
                           input_size=32)
    out = tmp_path / "out"
    from napari_medspike.cli.segment import PARTLY

    # broken.png is skipped: the rest is written, and the exit status tells a script so
    assert main([str(folder), "--out", str(out), "--probabilities", "--model", str(ckpt), "--device", "cpu",
                 "--threshold", "0.3"]) == PARTLY
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["f0.png", "f1.png", "f2.png"]
    assert len(list((out / "probabilities").iterdir())) == 3
    mask = io.imread(out / "masks" / "f0.png")
    assert mask.shape == (40, 48) and set(np.unique(mask)) <= {0, 255}
    with (out / "measurements.csv").open(encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == (*COLUMNS, "mask")  # the mask file each region is in
    assert all(r["image"] in ("f0.png", "f1.png", "f2.png") for r in rows)
    assert rows and all(r["mask"] == f"masks/{r['image'][:-4]}.png" for r in rows)
    assert main([str(tmp_path / "missing"), "--out", str(out)]) == 2



def test_an_output_folder_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    from napari_medspike.cli.segment import main
    from napari_medspike.inference.folder import segment_folder_steps

    image = tmp_path / "a.png"
    io.imsave(image, synthetic_lesion((40, 48), seed=0)[0], check_contrast=False)
    taken = tmp_path / "results"
    taken.write_text("a file where the output folder should go")
    assert main([str(image), "--out", str(taken), "--model", "nope-not-loaded"]) == 2  # before the model
    assert "it is a file, not a folder" in capsys.readouterr().err
    assert main([str(image), "--out", str(taken / "masks")]) == 2
    assert "a part of the path is a file" in capsys.readouterr().err
    model = create_model("medqkformer", widths=(8, 16, 32, 64))
    with pytest.raises(OSError, match="it is a file, not a folder"):
        next(segment_folder_steps(model, image, taken))
    assert taken.read_text().startswith("a file")  # untouched


def test_measurements_csv_round_trip(tmp_path):
    rows = measure_regions(np.eye(6, dtype=np.uint8), image="x.png")
    path = write_csv(rows, tmp_path / "m.csv")
    with path.open() as f:
        back = list(csv.DictReader(f))
    assert len(back) == len(rows) == 1 and back[0]["area_px"] == "6"  # diagonal: one 8-connected region


def test_the_folder_commands_warnings_are_lines_of_their_own_beside_its_progress_bar(tmp_path, capsys):
    """A warning was written after the progress bar, on its line: "…[00:00, 1 files]a 40 x 400
    image is squeezed…"."""
    from napari_medspike.cli.segment import main

    folder = tmp_path / "in"
    folder.mkdir()
    io.imsave(folder / "strip.png", synthetic_lesion((40, 400), seed=0)[0], check_contrast=False)
    ckpt = save_checkpoint(create_model("medqkformer", widths=(8, 16, 32, 64)), tmp_path / "m.safetensors",
                           input_size=32)
    assert main([str(folder), "--out", str(tmp_path / "out"), "--model", str(ckpt), "--device", "cpu"]) == 0
    pieces = capsys.readouterr().err.replace("\r", "\n").splitlines()
    warned = [p for p in pieces if "squeezed into a square" in p]
    assert warned and all(not p.strip().startswith(("0%", "100%")) and "|" not in p for p in warned), warned

