"""Reliability defects: resume/overwrite of run folders, draft and correction file names,
untrusted checkpoint metadata, and the one rule by which masks are read."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from skimage import io

from napari_medspike import create_model, load_model, save_checkpoint
from napari_medspike.data.corrections import (
    CorrectionStore,
    draft_file_name,
    read_draft_names,
    write_draft,
)
from napari_medspike.data.dataset import CachedPairs, find_pairs
from napari_medspike.data.io import read_mask, to_binary_mask
from napari_medspike.data.synthetic import synthetic_lesion
from napari_medspike.engine import checkpoint as checkpoint_module
from napari_medspike.engine.checkpoint import read_metadata
from napari_medspike.engine.trainer import RunFolderError, TrainConfig, finetune, train

TINY = {"widths": [8, 16, 32, 64]}


@pytest.fixture(scope="module")
def lesions(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lesions")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(8):
        image, mask = synthetic_lesion((48, 64), seed=i)
        io.imsave(root / "images" / f"l{i:02d}.png", image, check_contrast=False)
        io.imsave(root / "masks" / f"l{i:02d}.png", mask * 255, check_contrast=False)
    return root


def config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=[str(data)], out_dir=str(out), arch="medqkformer", model_config=TINY, size=32,
                epochs=1, batch_size=4, val_fraction=0.25, augment=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def trained_folder(folder: Path) -> dict[str, bytes]:
    """A run folder as an earlier run left it, minus last.pt: best model, card and history."""
    folder.mkdir(parents=True)
    save_checkpoint(create_model("medqkformer", **TINY), folder / "best.safetensors", input_size=32)
    (folder / "history.json").write_text(json.dumps([{"epoch": 1, "train_loss": 0.5}]))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# --------------------------------------------------------------------------- 1. resume / overwrite


def test_resume_without_last_pt_refuses_and_keeps_the_trained_model(lesions, tmp_path):
    run = tmp_path / "run"
    before = trained_folder(run)
    with pytest.raises(RunFolderError, match=f"no last.pt in the run folder {run}"):
        train(config(lesions, run), resume=True)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_new_run_refuses_to_replace_a_trained_model_unless_told(lesions, tmp_path):
    run = tmp_path / "run"
    before = trained_folder(run)
    with pytest.raises(RunFolderError, match=r"best\.safetensors already exists.*--overwrite.*--resume.*--out"):
        train(config(lesions, run))
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    result = train(config(lesions, run, overwrite=True))
    assert result.checkpoint.read_bytes() != before["best.safetensors"]
    assert read_metadata(result.checkpoint)["training"]["n_train"] == 6


def test_train_cli_reports_run_folder_problems_in_one_line(lesions, tmp_path, capsys):
    from napari_medspike.cli.train import train_main

    args = ["--arch", "medqkformer", "--data", str(lesions), "--config", json.dumps(TINY), "--size", "32",
            "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--no-augment"]
    empty = tmp_path / "empty"
    assert train_main([*args, "--out", str(empty), "--resume"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(empty) in err and "Traceback" not in err
    assert not (empty / "best.safetensors").exists()

    run = tmp_path / "run"
    before = trained_folder(run)
    assert train_main([*args, "--out", str(run)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(run / "best.safetensors") in err and "--overwrite" in err
    assert (run / "best.safetensors").read_bytes() == before["best.safetensors"]


def test_finetuning_twice_to_the_same_output_works(lesions, tmp_path):
    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "start.safetensors", input_size=32)
    out = tmp_path / "tuned.safetensors"
    first = finetune(start, lesions, out, epochs=1, lr=1e-3, device="cpu")
    second = finetune(first.checkpoint, lesions, out, epochs=1, lr=1e-3, device="cpu")
    assert second.checkpoint == out and load_model(out).arch == "medqkformer"
    assert len(second.history) == 1


# --------------------------------------------------------------------------- 2. draft and correction names


def test_draft_file_names_are_unique_ascii_and_bounded():
    names = ["病変 mask", "腫瘍 mask", "a/b mask", "a_b mask", "a b mask", "mask", "", "x" * 300, "x" * 299 + "y"]
    files = [draft_file_name(n) for n in names]
    assert len(set(files)) == len(names)
    for f in files:
        assert f.endswith(".png") and f.isascii() and len(f) <= 75
        assert f.replace("-", "").replace("_", "").replace(".", "").isalnum()
    assert draft_file_name("a/b mask") == draft_file_name("a/b mask")  # stable
    assert draft_file_name("lesion mask").startswith("lesion_mask-")


def test_drafts_round_trip_with_their_full_layer_names(tmp_path):
    folder = tmp_path / "drafts"
    masks = {}
    for i, name in enumerate(["病変 mask", "腫瘍 mask", "a/b mask", "a_b mask", "z" * 300]):
        mask = np.zeros((20, 30), np.uint8)
        mask[i : i + 5, 2:12] = 1
        masks[name] = mask
        path = write_draft(folder, name, mask)
        assert path.parent == folder and path.name == draft_file_name(name)
    found = read_draft_names(folder)
    assert set(found) == set(masks)
    for name, path in found.items():
        np.testing.assert_array_equal(read_mask(path), masks[name] > 0)
    # saving a layer again replaces its draft; nothing else is left behind
    write_draft(folder, "病変 mask", np.ones((20, 30), np.uint8))
    assert read_mask(read_draft_names(folder)["病変 mask"]).all()
    assert len(list(folder.iterdir())) == 2 * len(masks)
    with pytest.raises(ValueError, match="2D"):
        write_draft(folder, "stack", np.zeros((4, 20, 30), np.uint8))


def test_read_draft_names_skips_broken_sidecars_and_keeps_old_drafts(tmp_path):
    folder = tmp_path / "drafts"
    good = write_draft(folder, "lesion mask", np.ones((8, 8), bool))
    (folder / "broken-0123456789.json").write_text("{not json")
    (folder / "broken-0123456789.png").write_bytes(good.read_bytes())
    (folder / "listed-0123456789.json").write_text(json.dumps(["not", "a", "dict"]))
    (folder / "old_style.png").write_bytes(good.read_bytes())  # written before sidecars existed
    found = read_draft_names(folder)
    assert found["lesion mask"] == good and found["old_style"] == folder / "old_style.png"
    assert "broken-0123456789" in found  # its picture is still offered, under its file name
    assert read_draft_names(tmp_path / "missing") == {}


def test_correction_store_bounds_long_names_and_keeps_short_ones(tmp_path):
    store = CorrectionStore(tmp_path / "store")
    image, mask = synthetic_lesion((32, 32), seed=1)
    short = store.save(image, mask, name="polyp 1.png")
    assert short.stem.startswith("polyp_1_png_")
    long_a = store.save(image, mask, name="a" * 300)
    long_b = store.save(image, mask, name="a" * 299 + "b")
    for entry in (long_a, long_b):
        assert entry.image.is_file() and entry.mask.is_file() and len(entry.stem) < 140
    assert long_a.stem.split("_")[0] != long_b.stem.split("_")[0]  # the hash tells them apart
    assert {c.stem for c in store.list()} == {short.stem, long_a.stem, long_b.stem}


# --------------------------------------------------------------------------- 3. checkpoint metadata


def crafted(path: Path, meta, state: dict[str, torch.Tensor] | None = None) -> Path:
    if state is None:
        state = create_model("medqkformer", **TINY).state_dict()
    raw = meta if isinstance(meta, str) else json.dumps(meta)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"medspike": raw})
    return path


GOOD = {"format": 1, "arch": "medqkformer", "config": {"in_channels": 3, **TINY, "heads": 4}, "input_size": 32}


def test_huge_claimed_config_is_refused_before_any_real_allocation(tmp_path, monkeypatch):
    real_create = checkpoint_module.create_model
    devices = []

    def guarded(arch, **config):
        device = torch.get_default_device()
        devices.append(device.type)
        if device.type != "meta" and max(config.get("widths", [0])) > 1000:
            raise AssertionError(f"a {config['widths']} model was allocated on {device}")
        return real_create(arch, **config)

    monkeypatch.setattr(checkpoint_module, "create_model", guarded)
    path = crafted(tmp_path / "huge.safetensors", {**GOOD, "config": {"widths": [1024, 2048, 4096, 8192]}})
    with pytest.raises(ValueError, match=r"huge\.safetensors.*(shape|do not fit)"):
        load_model(path)
    assert devices == ["meta"]


def test_shape_mismatch_names_the_tensor(tmp_path):
    path = crafted(tmp_path / "wide.safetensors", {**GOOD, "config": {"widths": [8, 16, 32, 128]}})
    with pytest.raises(ValueError, match=r"wide\.safetensors.*tensor '[\w.]+' has shape"):
        load_model(path)


@pytest.mark.parametrize("meta, message", [
    ("{not json", "not valid JSON"),
    ('["medqkformer", {}]', "JSON object"),
    ({"config": TINY}, "lacks 'arch'"),
    ({"arch": "medqkformer"}, "lacks 'config'"),
    ({"arch": 3, "config": TINY}, "'arch' must be a string"),
    ({"arch": "unet", "config": TINY}, "unknown architecture"),
    ({"arch": "medqkformer", "config": [8, 16, 32, 64]}, "'config' must be a JSON object"),
    ({"arch": "medqkformer", "config": {**TINY, "depth": 3}}, "unknown option 'depth'"),
    ({"arch": "ann_twin", "config": {**TINY, "timesteps": 4}}, "unknown option 'timesteps'"),
    ({"arch": "medqkformer", "config": {"widths": "8,16,32,64"}}, "'widths'"),
    ({"arch": "medqkformer", "config": {**TINY, "heads": 0}}, "'heads'"),
    ({"arch": "medqkformer", "config": {**TINY, "heads": True}}, "'heads'"),
    ({"arch": "medqkformer", "config": {"widths": [8, 16, 32]}}, "cannot build"),
    ({**GOOD, "input_size": 10**9}, "input_size"),
    ({**GOOD, "input_size": 8}, "input_size"),
    ({**GOOD, "input_size": "256"}, "input_size"),
])
def test_malformed_metadata_raises_value_error_naming_the_file(tmp_path, meta, message):
    path = crafted(tmp_path / "crafted.safetensors", meta)
    with pytest.raises(ValueError, match=rf"crafted\.safetensors.*{message}"):
        load_model(path)
    if message != "cannot build":  # the metadata alone is already refused
        with pytest.raises(ValueError, match=r"crafted\.safetensors"):
            read_metadata(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_weights_with_nan_or_inf_are_refused(tmp_path, bad):
    state = create_model("medqkformer", **TINY).state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name] = state[name].clone()
    state[name].view(-1)[0] = bad
    path = crafted(tmp_path / "poisoned.safetensors", GOOD, state)
    with pytest.raises(ValueError, match=rf"poisoned\.safetensors.*{name}.*NaN or infinite"):
        load_model(path)


def test_good_checkpoints_still_load_with_extra_keys_and_half_storage(tmp_path):
    model = create_model("medspikeformer", widths=(8, 16, 32, 64), timesteps=2).eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors", half=True, input_size=64, note={"free": "form"})
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.checkpoint_info["note"] == {"free": "form"}
    assert loaded.checkpoint_info["path"] == str(path) and not loaded.training
    assert next(loaded.parameters()).device.type == "cpu"


# --------------------------------------------------------------------------- 4. the mask rule


@pytest.mark.parametrize("fill, expected", [(255, True), (1, True), (0, False)])
def test_one_valued_masks_are_read_as_they_are(tmp_path, fill, expected):
    array = np.full((12, 10), fill, np.uint8)
    assert (to_binary_mask(array) == expected).all()
    path = tmp_path / "m.png"
    io.imsave(path, array, check_contrast=False)
    mask = read_mask(path)
    assert mask.dtype == bool and mask.shape == (12, 10) and (mask == expected).all()


@pytest.mark.parametrize("top", [1, 255])
def test_two_valued_masks(top):
    array = np.zeros((12, 10), np.uint8)
    array[2:5, 3:9] = top
    mask = to_binary_mask(array)
    assert mask.dtype == bool and mask.sum() == 18 and mask[2:5, 3:9].all()


def test_many_valued_masks_use_half_their_largest_value_and_say_so(caplog):
    """JPEG noise near 0 stays background; soft or anti-aliased masks are cut at half their
    largest value, with a warning naming the file."""
    array = np.zeros((12, 10), np.uint8)
    array[0:2] = 3  # compression noise
    array[3:5] = 140  # above half of 255
    array[5:7] = 255
    with caplog.at_level(logging.WARNING, logger="napari_medspike.data.io"):
        mask = to_binary_mask(array, name="soft.jpg")
    assert mask.sum() == 40 and mask[3:7].all() and not mask[0:2].any()
    assert any("soft.jpg" in r.getMessage() and "4 distinct values" in r.getMessage() for r in caplog.records)
    # colour masks: the largest colour channel; alpha is ignored
    rgba = np.zeros((12, 10, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[3:6, :, 1] = 200
    assert to_binary_mask(rgba).sum() == 30


def test_all_foreground_masks_are_stored_and_trained_on(tmp_path):
    image, _ = synthetic_lesion((32, 32), seed=2)
    store = CorrectionStore(tmp_path / "store")
    entry = store.save(image, np.full((32, 32), 255, np.uint8), name="all")
    assert read_mask(entry.mask).all()
    with pytest.raises(ValueError, match="empty"):
        store.save(image, np.zeros((32, 32), np.uint8), name="none")
    data = CachedPairs(find_pairs(store.root)[0], size=32)
    assert len(data) == 1 and bool((data[0][1] == 1).all())
