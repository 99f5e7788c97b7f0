"""Reliability defects: resume/overwrite of run folders, draft and correction file names,
untrusted checkpoint metadata, and the one rule by which masks are read."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from skimage import io

from lesions import write_lesion_pairs
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
from napari_medspike.engine.config import RunFolderError, TrainConfig
from napari_medspike.engine.finetune import finetune
from napari_medspike.engine.trainer import train

TINY = {"widths": [8, 16, 32, 64]}


@pytest.fixture(scope="module")
def lesions(tmp_path_factory) -> Path:
    return write_lesion_pairs(tmp_path_factory.mktemp("lesions"), range(8))


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


def test_a_resumed_run_keeps_its_validation_images_and_its_restored_options(lesions, tmp_path):
    """Images added to a run's folder re-drew its split on --resume without a word (images it had
    validated on were trained on, and the best epoch was compared across two validation sets); a
    new --lr was recorded in the checkpoint while the optimiser state kept the old one."""
    data = tmp_path / "lesions"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
        for f in (lesions / sub).iterdir():
            (data / sub / f.name).write_bytes(f.read_bytes())
    run = tmp_path / "run"
    train(config(data, run, epochs=1))
    split = (run / "split.json").read_bytes()
    with pytest.raises(RunFolderError, match=r"--lr 0\.001 -> 0\.0001 \(resuming restores it from last\.pt\)"):
        train(config(data, run, epochs=2, lr=1e-4), resume=True)
    write_lesion_pairs(data, range(8, 11))  # three more images in the run's folder
    with pytest.raises(RunFolderError, match="other validation images than the run held out"):
        train(config(data, run, epochs=2), resume=True)
    assert (run / "split.json").read_bytes() == split and len(json.loads((run / "history.json").read_text())) == 1
    for f in ("l08", "l09", "l10"):
        for sub in ("images", "masks"):
            (data / sub / f"{f}.png").unlink()
    result = train(config(data, run, epochs=2), resume=True)  # its own data again: it continues
    assert len(result.history) == 2


def test_an_overwrite_replaces_the_earlier_run_only_once_it_can_start(lesions, tmp_path):
    """--overwrite wrote the new config.json first and left the earlier run's last.pt: a later
    --resume mixed the two runs (history, best epoch, size), and an overwrite that failed at once
    (no data) left the earlier run unable to resume with its own options."""
    import threading

    run = tmp_path / "run"
    train(config(lesions, run, epochs=1))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True), (empty / "masks").mkdir()
    with pytest.raises(ValueError, match="no image/mask pairs"):
        train(config(empty, run, size=48, overwrite=True))
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    stop = threading.Event()
    stop.set()  # stopped before its first epoch ended (as Ctrl-C or a kill would)
    train(config(lesions, run, size=48, val_fraction=0.5, overwrite=True), cancel=stop)
    assert not (run / "last.pt").exists() and not (run / "best.safetensors").exists()
    assert json.loads((run / "config.json").read_text())["size"] == 48
    with pytest.raises(RunFolderError, match="no last.pt"):
        train(config(lesions, run, size=48, val_fraction=0.5, epochs=2), resume=True)


def test_a_fine_tune_never_writes_into_a_training_run_named_like_its_scratch_folder(lesions, tmp_path):
    """medspike-finetune --checkpoint runs/ph2_run/best.safetensors --out runs/ph2.safetensors took the
    training run's folder for its scratch folder: it replaced that run's records and deleted its
    best.safetensors, the very checkpoint it started from."""
    from napari_medspike.engine.finetune import scratch_run_folder

    run = tmp_path / "ph2_run"
    train(config(lesions, run, epochs=1))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    out = tmp_path / "ph2.safetensors"
    assert scratch_run_folder(out) == tmp_path / "ph2_run2"
    result = finetune(run / "best.safetensors", lesions, out, epochs=1, device="cpu")
    assert result.checkpoint == out and out.is_file()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert (tmp_path / "ph2_run2" / "history.json").is_file()
    # its own logs, once the weights are gone from them, are reused by the next fine-tune to that file
    assert scratch_run_folder(out) == tmp_path / "ph2_run2"


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


def test_drafts_of_two_pictures_whose_masks_share_a_name_are_both_kept(tmp_path):
    """Two scans opened in two sessions, each "scan" with its "scan mask": the second draft
    replaced the first (one file per layer name)."""
    folder = tmp_path / "drafts"
    first, second = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
    first[:4], second[4:] = 1, 1
    write_draft(folder, "scan mask", first, image="/data/a/scan.png")
    write_draft(folder, "scan mask", second, image="/data/b/scan.tif")
    found = read_draft_names(folder)
    assert set(found) == {"scan mask (scan.png)", "scan mask (scan.tif)"}
    np.testing.assert_array_equal(read_mask(found["scan mask (scan.png)"]), first > 0)
    np.testing.assert_array_equal(read_mask(found["scan mask (scan.tif)"]), second > 0)
    write_draft(folder, "scan mask", second, image="/data/a/scan.png")  # the same picture's: replaced
    assert len(read_draft_names(folder)) == 2 and read_mask(read_draft_names(folder)["scan mask (scan.png)"])[5].all()


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
    (image, mask), (image_a, mask_a), (image_b, mask_b) = (synthetic_lesion((32, 32), seed=s) for s in (1, 2, 3))
    short = store.save(image, mask, name="polyp 1.png")
    assert short.stem.startswith("polyp_1_png_")
    long_a = store.save(image_a, mask_a, name="a" * 300)
    long_b = store.save(image_b, mask_b, name="a" * 299 + "b")
    for entry in (long_a, long_b):
        assert entry.image.is_file() and entry.mask.is_file() and len(entry.stem) < 140
    assert long_a.stem.split("_")[0] != long_b.stem.split("_")[0]  # the hash tells them apart
    assert {c.stem for c in store.list()} == {short.stem, long_a.stem, long_b.stem}


def test_saving_an_image_again_replaces_its_correction_and_keeps_the_old_files(tmp_path):
    store = CorrectionStore(tmp_path / "store")
    image, mask = synthetic_lesion((32, 40), seed=1)
    other, other_mask = synthetic_lesion((32, 40), seed=2)
    first = store.save(image, mask, name="polyp")
    kept = store.save(other, other_mask, name="polyp")  # same name, another picture: both stay
    assert kept.replaced == () and len(store.list()) == 2
    # the same pixels again (as floats, under another name): the earlier correction is replaced
    fixed = mask.copy()
    fixed[:4] = 1
    second = store.save(image.astype(np.float32) / 255, fixed, name="polyp copy")
    assert second.replaced == (first.stem,) and second.provenance["replaces"] == [first.stem]
    assert sorted(c.stem for c in store.list()) == sorted([kept.stem, second.stem])
    removed = store.root / "removed"
    for sub, suffix in (("images", ".png"), ("masks", ".png"), ("provenance", ".json")):
        assert (removed / sub / f"{first.stem}{suffix}").is_file()
        assert not (store.root / sub / f"{first.stem}{suffix}").exists()
    assert {p.key.split("/", 1)[1] for p in find_pairs(store.root)[0]} == {kept.stem, second.stem}
    # a stored correction opened and saved again keeps its name, not a second time stamp
    third = store.save(*store.load(second.stem)[:2], name=second.stem)
    assert third.replaced == (second.stem,) and re.fullmatch(r"polyp_copy_\d{8}-\d{6}_\d{6}", third.stem)
    # removing: gone from the list and from training, kept in removed/
    store.remove(kept.stem)
    assert [c.stem for c in store.list()] == [third.stem]
    assert (removed / "masks" / f"{kept.stem}.png").is_file()
    with pytest.raises(KeyError, match="no correction"):
        store.remove(kept.stem)


def test_a_correction_whose_record_is_damaged_is_still_known_by_its_picture(tmp_path):
    """A damaged provenance file made its entry a group of its own: saving the same picture again
    kept both entries, and a split could hold out one and train on the other."""
    from napari_medspike.data.corrections import entry_groups

    store = CorrectionStore(tmp_path / "store")
    image, mask = synthetic_lesion((32, 40), seed=1)
    first = store.save(image, mask, name="polyp")
    (store.root / "provenance" / f"{first.stem}.json").write_text("{ damaged")
    assert entry_groups(store.root)[first.stem] != f"stem:{first.stem}"
    again = store.save(image, mask, name="polyp")
    assert again.replaced == (first.stem,) and [c.stem for c in store.list()] == [again.stem]


def test_stored_corrections_list_in_the_order_saved(tmp_path):
    store = CorrectionStore(tmp_path / "store")
    saved = [store.save(*synthetic_lesion((16, 16), seed=s), name="frame").stem for s in range(8)]
    assert [c.stem for c in store.list()] == saved  # within one second too: the stamp ends in microseconds


def test_copies_of_one_picture_in_a_store_are_never_split_apart(tmp_path):
    """Stores written before corrections were replaced can hold one picture several times: a
    split keeps those entries on one side, and a fine-tune on one picture holds nothing out."""
    from napari_medspike.data.dataset import split_pairs, split_units

    store = CorrectionStore(tmp_path / "store")
    pictures = [synthetic_lesion((32, 32), seed=s) for s in range(4)]
    stems = [store.save(*pictures[i], name=f"p{i}").stem for i in range(4)]
    for n, source in enumerate(stems[:2] * 2):  # two extra copies of each of the first two pictures
        copy = f"copy{n}_20260101-000000_00000{n}"
        for sub, suffix in (("images", ".png"), ("masks", ".png")):
            (store.root / sub / f"{copy}{suffix}").write_bytes((store.root / sub / f"{source}{suffix}").read_bytes())
        (store.root / "provenance" / f"{copy}.json").write_text("{}")  # an old entry: no fingerprint
    pairs = find_pairs(store.root)[0]
    assert len(pairs) == 8 and split_units(pairs) == 4
    for seed in range(20):
        train, val = split_pairs(pairs, 0.25, seed)
        assert {p.group for p in train}.isdisjoint({p.group for p in val})
        assert len({p.group for p in val}) == 1 and len(train) + len(val) == 8
    # ordinary folders split exactly as before groups existed
    folder = write_lesion_pairs(tmp_path / "plain", range(10))
    plain = find_pairs(folder)[0]
    assert all(p.group == "" for p in plain)
    keys = sorted(p.key for p in plain)
    import random

    random.Random(7).shuffle(keys)
    assert {p.key for p in split_pairs(plain, 0.2, 7)[1]} == set(keys[:2])

    one = CorrectionStore(tmp_path / "one")
    one.save(*pictures[0], name="a")
    (one.root / "images" / "b_20260101-000000_000001.png").write_bytes(next((one.root / "images").iterdir()).read_bytes())
    (one.root / "masks" / "b_20260101-000000_000001.png").write_bytes(next((one.root / "masks").iterdir()).read_bytes())
    (one.root / "provenance" / "b_20260101-000000_000001.json").write_text("{}")
    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "start.safetensors", input_size=32)
    result = finetune(start, one.root, tmp_path / "tuned.safetensors", epochs=1, route=False)
    assert not result.held_out and "corrected image itself" in result.describe()


def test_corrections_folders_fine_tuned_in_are_remembered(tmp_path):
    from napari_medspike.data.corrections import default_store, known_stores, remember_store

    assert known_stores() == []  # a fresh user folder: not even the default store exists yet
    default_store().mkdir(parents=True)
    elsewhere, gone = tmp_path / "elsewhere", tmp_path / "gone"
    for folder in (elsewhere, gone):
        folder.mkdir()
        remember_store(folder)
    remember_store(elsewhere)  # noted once
    remember_store(default_store())  # the default is always listed first, never noted
    assert known_stores() == [default_store(), elsewhere.resolve(), gone.resolve()]
    gone.rmdir()
    assert known_stores() == [default_store(), elsewhere.resolve()]
    (default_store().parent / "stores.json").write_text("[not json")  # damaged: the default still comes
    assert known_stores() == [default_store()]


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
    array[0:2] = np.tile([3, 0, 2, 1, 0], 4).reshape(2, 10)  # compression noise: low values that vary pixel to pixel
    array[3:5] = 140  # above half of 255
    array[5:7] = 255
    with caplog.at_level(logging.WARNING, logger="napari_medspike.data.io"):
        mask = to_binary_mask(array, name="soft.jpg")
    assert mask.sum() == 40 and mask[3:7].all() and not mask[0:2].any()
    assert any("soft.jpg" in r.getMessage() and "6 distinct values" in r.getMessage() for r in caplog.records)
    # colour masks: the largest colour channel; alpha is ignored
    rgba = np.zeros((12, 10, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[3:6, :, 1] = 200
    assert to_binary_mask(rgba).sum() == 30


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_label_images_keep_every_object(tmp_path, caplog, dtype):
    """Objects numbered 1..N (instance masks, napari's Labels files, GlaS's annotations): cut at
    half the largest number, objects 1 and 2 of 5 were lost without a word."""
    array = np.zeros((40, 60), dtype)
    for label in range(1, 6):
        array[5:15, 10 * label - 8:10 * label - 1] = label  # five 10 x 7 objects
    array[25:35, 2:9] = 3  # a second object with a number already used
    with caplog.at_level(logging.WARNING, logger="napari_medspike.data.io"):
        mask = to_binary_mask(array, name="labels.tif")
    assert mask.sum() == 6 * 70 and not caplog.records
    path = tmp_path / "labels.tif"
    io.imsave(path, array, check_contrast=False)
    assert read_mask(path).sum() == 6 * 70


def test_the_same_mask_compressed_or_anti_aliased_is_cut_at_half(tmp_path):
    """What tells a label image from a JPEG or anti-aliased mask, on a real mask: the values
    between 0 and half the largest are the insides of objects, not noise along the edges."""
    from PIL import Image
    from skimage import measure, transform

    from napari_medspike.data.io import is_label_image

    truth = np.zeros((120, 160), bool)
    truth[20:70, 30:90] = truth[80:110, 100:150] = True
    truth[30:50, 120:140] = True
    labels = measure.label(truth).astype(np.uint8)
    assert labels.max() == 3 and is_label_image(labels) and (to_binary_mask(labels) == truth).all()
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "m.jpg", quality=75)
    compressed = np.asarray(Image.open(tmp_path / "m.jpg"))
    assert len(np.unique(compressed)) > 2 and not is_label_image(compressed)
    assert (to_binary_mask(compressed) == truth).mean() > 0.99
    smooth = (transform.rescale(truth.astype(float), 0.5, anti_aliasing=True) * 255).round().astype(np.uint8)
    assert not is_label_image(smooth)


def test_a_label_image_whose_first_object_is_a_speck_keeps_it():
    """Numbered in raster order, a one-pixel speck above a large object becomes object 1: it has
    no inside, yet the mask is a label image (seen on 9 Kvasir-SEG masks)."""
    array = np.zeros((60, 60), np.uint8)
    array[2, 2] = 1
    array[10:50, 10:50] = 2
    array[52:58, 52:58] = 3
    assert to_binary_mask(array).sum() == 1 + 1600 + 36


def test_grey_and_alpha_masks_are_read_as_grey():
    mask = np.zeros((12, 10, 2), np.uint8)
    mask[..., 1] = 255  # opaque everywhere
    mask[2:6, 3:8, 0] = 255
    assert to_binary_mask(mask).sum() == 20


def test_all_foreground_masks_are_stored_and_trained_on(tmp_path):
    image, _ = synthetic_lesion((32, 32), seed=2)
    store = CorrectionStore(tmp_path / "store")
    entry = store.save(image, np.full((32, 32), 255, np.uint8), name="all")
    assert read_mask(entry.mask).all()
    with pytest.raises(ValueError, match="empty"):
        store.save(image, np.zeros((32, 32), np.uint8), name="none")
    data = CachedPairs(find_pairs(store.root)[0], size=32)
    assert len(data) == 1 and bool((data[0][1] == 1).all())


# --------------------------------------------------------------------------- 5. evaluate --report


def _folder(root: Path, shapes: dict[str, tuple[int, int]]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (stem, shape) in enumerate(shapes.items()):
        image, mask = synthetic_lesion(shape, seed=i) if min(shape) >= 8 else (
            np.full((*shape, 3), 40 * i % 256, np.uint8), np.eye(*shape, dtype=np.uint8) * (i % 2))
        io.imsave(root / "images" / f"{stem}.png", image, check_contrast=False)
        io.imsave(root / "masks" / f"{stem}.png", (mask > 0).astype(np.uint8) * 255, check_contrast=False)
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(create_model("medqkformer", **TINY), tmp_path_factory.mktemp("ckpt") / "m.safetensors",
                           input_size=32)


@pytest.mark.parametrize("mode", ["resize", "tiled"])
def test_evaluate_report_draws_1x1_and_other_tiny_images(tmp_path, tiny_checkpoint, mode):
    from napari_medspike.cli.evaluate import main

    data = _folder(tmp_path / "tiny", {"one": (1, 1), "odd": (5, 7), "row": (1, 6), "two": (2, 2)})
    out, report = tmp_path / "eval.json", tmp_path / "rep"
    assert main(["--checkpoint", str(tiny_checkpoint), "--data", str(data), "--json", str(out),
                 "--report", str(report), "--device", "cpu", "--mode", mode]) == 0
    assert json.loads(out.read_text())["count"] == 4
    assert (report / "gallery.png").stat().st_size > 1000


def test_evaluate_report_keeps_only_the_best_and_worst_images(tmp_path, tiny_checkpoint, monkeypatch):
    """The gallery is streamed: however many images are evaluated, at most 2 n are kept, and
    the gallery shows what write_gallery would show given every image."""
    from napari_medspike.cli import evaluate

    data = _folder(tmp_path / "many", {f"m{i:02d}": (16 + i, 20) for i in range(11)})
    kept_sizes = []
    real_add = evaluate.GalleryPicker.add

    def add(self, *args):
        real_add(self, *args)
        kept_sizes.append(len(self))

    shown = {}
    real_write = evaluate.write_gallery

    def write(rows, images, path, n=4):
        shown["images"] = len(images)
        shown["picks"] = real_write(rows, images, path, n)
        return shown["picks"]

    monkeypatch.setattr(evaluate.GalleryPicker, "add", add)
    monkeypatch.setattr(evaluate, "write_gallery", write)
    out = tmp_path / "eval.json"
    assert evaluate.main(["--checkpoint", str(tiny_checkpoint), "--data", str(data), "--json", str(out),
                          "--report", str(tmp_path / "rep"), "--device", "cpu", "--gallery-size", "3"]) == 0
    assert len(kept_sizes) == 11 and max(kept_sizes) <= 6 and shown["images"] <= 6
    ranked = sorted(json.loads(out.read_text())["images"], key=lambda r: r["dice"])
    expected = [("worst", r["key"]) for r in ranked[:3]] + [("best", r["key"]) for r in ranked[::-1][:3]]
    assert shown["picks"] == expected


def test_gallery_picker_matches_the_full_gallery_on_any_number_of_images(tmp_path):
    from napari_medspike.cli.evaluate import GalleryPicker, write_gallery

    rng = np.random.default_rng(0)
    image, mask = np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), bool)
    for count in (1, 2, 3, 5, 11):
        rows = [{"key": f"k{i}", "dice": float(rng.choice([0.0, 0.5, 0.7, 1.0]))} for i in range(count)]  # ties
        picker = GalleryPicker(2)
        for row in rows:
            picker.add(row, image, mask, mask)
            assert len(picker) <= 4
        full = write_gallery(rows, {r["key"]: (image, mask, mask) for r in rows}, tmp_path / f"full{count}.png", n=2)
        assert picker.write(tmp_path / f"streamed{count}.png") == full


# --------------------------------------------------------------------------- 6. failed writes


def test_a_full_disk_while_writing_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import errno

    from safetensors import SafetensorError

    from napari_medspike.common import WriteError, atomic_write

    # torch.save on a full disk: "unexpected pos" from its zip writer
    last = tmp_path / "run" / "last.pt"
    atomic_write(last, lambda tmp: torch.save({"epoch": 1}, tmp))
    before = last.read_bytes()

    def full_disk_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full_disk_save)
    with pytest.raises(WriteError, match=rf"could not write {last}.*device is full.*previous file is unchanged") as info:
        atomic_write(last, lambda tmp: torch.save({"epoch": 2}, tmp))
    assert isinstance(info.value, OSError) and info.value.path == last
    assert last.read_bytes() == before and [p.name for p in last.parent.iterdir()] == ["last.pt"]

    # safetensors on a full disk, and a plain ENOSPC; a file that did not exist stays absent
    best = tmp_path / "best.safetensors"
    save_checkpoint(create_model("medqkformer", **TINY), best)
    before = best.read_bytes()
    for failure in (SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                    'message: "No space left on device" })'),
                    OSError(errno.ENOSPC, "No space left on device")):
        def failing_save(tensors, filename, metadata=None, failure=failure):
            Path(filename).write_bytes(b"half")
            raise failure

        monkeypatch.setattr(checkpoint_module, "save_file", failing_save)
        for target, kept in ((best, "the previous file is unchanged"), (tmp_path / "new.safetensors", "no file was written")):
            with pytest.raises(WriteError, match=rf"could not write {target}: no space left on the device.*{kept}") as info:
                save_checkpoint(create_model("medqkformer", **TINY), target)
            assert info.value.errno == errno.ENOSPC
        assert best.read_bytes() == before and not (tmp_path / "new.safetensors").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors", "run"]
    # errors that are not write failures pass through unchanged
    with pytest.raises(KeyError):
        atomic_write(best, lambda tmp: {}["missing"])
    assert best.read_bytes() == before


# --------------------------------------------------------------------------- 7. command-line errors


def _one_line(capsys, prog: str, *names: str) -> str:
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert "Traceback" not in err and last.startswith(f"{prog}: error: "), err
    for name in names:
        assert name in last, last
    return last


def test_command_line_tools_report_file_errors_in_one_line(lesions, tmp_path, capsys, monkeypatch):
    from napari_medspike.cli.evaluate import main as evaluate_main
    from napari_medspike.cli.train import finetune_main, train_main

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    missing = tmp_path / "missing.safetensors"
    data = ["--data", str(lesions), "--device", "cpu"]
    # damaged and missing checkpoints, in each tool
    assert evaluate_main(["--checkpoint", str(junk), *data]) == 2
    _one_line(capsys, "medspike-evaluate", str(junk), "not a napari-medspike checkpoint")
    assert evaluate_main(["--checkpoint", str(missing), *data]) == 2
    _one_line(capsys, "medspike-evaluate", str(missing))
    assert finetune_main(["--checkpoint", str(junk), *data, "--out", str(tmp_path / "t.safetensors")]) == 2
    _one_line(capsys, "medspike-finetune", str(junk))
    with pytest.raises(ValueError, match="junk.safetensors"):  # --debug: the exception and its traceback
        finetune_main(["--checkpoint", str(junk), *data, "--out", str(tmp_path / "t.safetensors"), "--debug"])
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        evaluate_main(["--checkpoint", str(missing), *data, "--debug"])
    # replay folders without a number of pairs would be ignored: refused with a word instead
    with pytest.raises(SystemExit) as stop:
        finetune_main(["--checkpoint", str(junk), *data, "--out", str(tmp_path / "t.safetensors"), "--replay", str(lesions)])
    assert stop.value.code == 2 and "--replay-samples" in capsys.readouterr().err
    args = ["--arch", "medqkformer", *data, "--config", json.dumps(TINY), "--size", "32", "--epochs", "1",
            "--batch-size", "4", "--no-augment"]
    assert train_main([*args, "--out", str(tmp_path / "a"), "--init-from", str(missing)]) == 2
    _one_line(capsys, "medspike-train", str(missing))
    # a damaged split file
    split = tmp_path / "split.json"
    split.write_text("{oops")
    ckpt = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "m.safetensors", input_size=32)
    assert evaluate_main(["--checkpoint", str(ckpt), *data, "--subset", "val", "--split", str(split)]) == 2
    _one_line(capsys, "medspike-evaluate", str(split))

    # resume: a damaged last.pt, one of another model, and a full disk while writing it
    run = tmp_path / "run"
    assert train_main([*args, "--out", str(run)]) == 0
    good = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(good[: len(good) // 3])
    assert train_main([*args, "--out", str(run), "--resume", "--epochs", "2"]) == 2
    _one_line(capsys, "medspike-train", str(run / "last.pt"), "cannot resume")
    with pytest.raises(RunFolderError, match="last.pt"):  # --debug: the exception itself
        train_main([*args, "--out", str(run), "--resume", "--epochs", "2", "--debug"])
    capsys.readouterr()
    (run / "last.pt").write_bytes(good)
    other = ["--config", json.dumps({"widths": [8, 16, 32, 32]})]
    assert train_main([*args, *other, "--out", str(run), "--resume", "--epochs", "2"]) == 2
    _one_line(capsys, "medspike-train", str(run / "last.pt"), "--config")

    def full_disk_save(obj, f, *a, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full_disk_save)
    assert train_main([*args, "--out", str(run), "--resume", "--epochs", "2"]) == 2
    _one_line(capsys, "medspike-train", str(run / "last.pt"), "device is full")
    monkeypatch.undo()
    assert (run / "last.pt").read_bytes() == good
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1


def test_command_line_tools_refuse_what_would_waste_or_mix_up_a_run(lesions, tmp_path, capsys, monkeypatch):
    import shutil

    from napari_medspike.cli.evaluate import main as evaluate_main
    from napari_medspike.cli.train import finetune_main, train_main

    args = ["--arch", "medqkformer", "--data", str(lesions), "--device", "cpu", "--config", json.dumps(TINY),
            "--size", "32", "--epochs", "1", "--batch-size", "4", "--no-augment"]
    run = tmp_path / "run"
    assert train_main([*args, "--out", str(run)]) == 0
    capsys.readouterr()
    # resuming with another split, size or data would validate on other images than it chose by
    for changed, word in ((["--size", "48"], "--size 32 -> 48"), (["--val-fraction", "0.5"], "--val-fraction"),
                          (["--seed", "3"], "split seed 0 -> 3")):
        assert train_main([*args, *changed, "--out", str(run), "--resume", "--epochs", "2"]) == 2
        _one_line(capsys, "medspike-train", word, "cannot resume")
    other = tmp_path / "other"
    shutil.copytree(lesions, other)
    assert train_main([*args[:2], "--data", str(other), *args[4:], "--out", str(run), "--resume", "--epochs", "2"]) == 2
    _one_line(capsys, "medspike-train", "--data")
    assert train_main([*args, "--out", str(run), "--resume", "--epochs", "2"]) == 0  # its own options: resumes
    capsys.readouterr()
    # refused before any work: a size the checkpoint could not record, no epochs, a misspelt option
    assert train_main([*args, "--size", "8", "--out", str(tmp_path / "small")]) == 2
    _one_line(capsys, "medspike-train", "--size must lie in [32, 4096] for training")
    assert not (tmp_path / "small").exists()
    # 16: a model takes it, but its deepest stage sees one pixel, and a batch of one image failed
    # inside a batch norm ("Expected more than 1 value per channel")
    assert train_main([*args, "--size", "16", "--out", str(tmp_path / "small")]) == 2
    _one_line(capsys, "medspike-train", "the deepest stage would see one pixel")
    assert train_main([*args, "--epochs", "0", "--out", str(tmp_path / "none")]) == 2
    _one_line(capsys, "medspike-train", "--epochs must be at least 1")
    assert train_main([*args[:-7], "--config", '{"nosuch": 1}', "--size", "32", "--epochs", "1",
                       "--out", str(tmp_path / "typo")]) == 2
    _one_line(capsys, "medspike-train", "nosuch", "widths")
    # a file given as the run folder
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert train_main([*args, "--out", str(a_file)]) == 2
    _one_line(capsys, "medspike-train", "is a file, not a folder")
    assert a_file.read_text() == "mine"
    # fine-tuning into a folder or a file without the suffix: said before minutes of training
    best = str(run / "best.safetensors")
    for out in (tmp_path, tmp_path / "tuned"):
        assert finetune_main(["--checkpoint", best, "--data", str(lesions), "--device", "cpu", "--out", str(out)]) == 2
        _one_line(capsys, "medspike-finetune", str(out))
    # ... or onto a file that exists, even the checkpoint it starts from: refused unless --overwrite
    earlier = tmp_path / "earlier.safetensors"
    earlier.write_bytes(b"an earlier model")
    for out, word in ((earlier, "already exists"), (Path(best), "it is the --checkpoint")):
        with pytest.raises(SystemExit) as stop:
            finetune_main(["--checkpoint", best, "--data", str(lesions), "--device", "cpu", "--out", str(out)])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert word in err and "--overwrite" in err
    assert earlier.read_bytes() == b"an earlier model"
    # evaluate: the training images without a split file (the folder minus the recorded validation images)
    report = tmp_path / "train.json"
    assert evaluate_main(["--checkpoint", best, "--data", str(lesions), "--device", "cpu", "--subset", "train",
                          "--json", str(report)]) == 0
    keys = {row["key"] for row in json.loads(report.read_text())["images"]}
    split = json.loads((run / "split.json").read_text())
    assert keys == {row["key"] for row in split["train"]}
    # --compare against an evaluation of other images: refused before evaluating anything
    calls = []
    monkeypatch.setattr("napari_medspike.cli.evaluate.predict", lambda *a, **k: calls.append(1))
    assert evaluate_main(["--checkpoint", best, "--data", str(lesions), "--device", "cpu", "--subset", "val",
                          "--compare", str(report)]) == 2
    _one_line(capsys, "medspike-evaluate", "nothing to compare")
    assert not calls
    # a threshold that is no probability, and results that could not be written: refused before the work
    evaluate = ["--checkpoint", best, "--data", str(lesions), "--device", "cpu"]
    with pytest.raises(SystemExit) as stop:
        evaluate_main([*evaluate, "--threshold", "5"])
    assert stop.value.code == 2 and "--threshold must lie in (0, 1)" in capsys.readouterr().err
    a_file = tmp_path / "a_file.png"
    a_file.write_bytes(b"not a folder")
    for option, where in (("--json", a_file / "val.json"), ("--report", a_file)):
        assert evaluate_main([*evaluate, option, str(where)]) == 2
        _one_line(capsys, "medspike-evaluate", "a_file.png", "it is a file")
    assert evaluate_main([*evaluate, "--json", str(tmp_path)]) == 2
    _one_line(capsys, "medspike-evaluate", "it is a folder")
    assert not calls
    # Ctrl-C: one line, status 130, no traceback
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("napari_medspike.cli.evaluate.load_model", interrupted)
    assert evaluate_main(["--checkpoint", best, "--data", str(lesions)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_keys_name_the_dataset_also_for_a_relative_folder_and_clashes_name_both_folders(lesions, tmp_path,
                                                                                         monkeypatch):
    import shutil

    from napari_medspike.data.dataset import split_pairs

    monkeypatch.chdir(lesions)
    pairs, _ = find_pairs(".")
    assert pairs and all(p.key.startswith(f"{lesions.name}/") for p in pairs)
    for side in ("a", "b"):
        shutil.copytree(lesions, tmp_path / side / "train")
    both, _ = find_pairs([tmp_path / "a" / "train", tmp_path / "b" / "train"])
    with pytest.raises(ValueError, match=r"share the key train/.*same name"):
        split_pairs(both, 0.25, 0)


# --------------------------------------------------------------------------- 8. the correction store


def test_store_lists_exactly_what_training_uses_and_removes_stale_temp_files(tmp_path):
    import os
    import time

    root = tmp_path / "store"
    store = CorrectionStore(root)
    saved = [store.save(*synthetic_lesion((32, 32), seed=3 + i), name=f"c{i}").stem for i in range(2)]
    # a save that died after the image and mask, before the provenance; and one before the mask
    (root / "images" / "orphan_1.png").write_bytes((root / "images" / f"{saved[0]}.png").read_bytes())
    (root / "masks" / "orphan_1.png").write_bytes((root / "masks" / f"{saved[0]}.png").read_bytes())
    (root / "images" / "orphan_2.png").write_bytes((root / "images" / f"{saved[0]}.png").read_bytes())
    # temporary files of interrupted saves: two hours old, and one being written right now
    stale = [root / sub / f".{name}.abc123_x.tmp" for sub, name in
             (("images", "orphan_2.png"), ("masks", "orphan_2.png"), ("provenance", "orphan_1.json"))]
    for p in stale:
        p.write_bytes(b"")
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    fresh = root / "images" / ".c9.png.def456_y.tmp"
    fresh.write_bytes(b"")
    old_hidden = root / "images" / ".keep"  # not a temporary file of ours
    old_hidden.write_bytes(b"")
    os.utime(old_hidden, (time.time() - 7200, time.time() - 7200))

    reopened = CorrectionStore(root)
    assert not any(p.exists() for p in stale) and fresh.exists() and old_hidden.exists()
    listed = [c.stem for c in reopened.list()]
    pairs, problems = find_pairs(root)
    assert listed == sorted(saved) == [p.key.split("/", 1)[1] for p in pairs]
    assert any("orphan_1.png" in p and "not a complete correction" in p for p in problems)
    assert any("orphan_2.png" in p for p in problems)
    assert len(CachedPairs(pairs, size=32)) == len(listed)
    # a damaged provenance file still lists its entry, and training still uses it
    (root / "provenance" / f"{saved[1]}.json").write_text("{oops")
    assert [c.stem for c in reopened.list()] == listed and "error" in reopened.list()[-1].provenance
    assert len(find_pairs(root)[0]) == 2


# --------------------------------------------------------------------------- 9. split.json


def test_split_and_val_keys_list_only_the_pairs_used(lesions, tmp_path):
    import os
    import shutil
    import time

    from napari_medspike.data.dataset import split_pairs

    data = tmp_path / "data"
    shutil.copytree(lesions, data)
    (data / "images" / "broken_a.png").write_text("not an image")
    (data / "images" / "broken_b.png").write_bytes(b"")
    for stem in ("broken_a", "broken_b"):
        (data / "masks" / f"{stem}.png").write_bytes((data / "masks" / "l00.png").read_bytes())
    pairs, _ = find_pairs(data)
    # a seed that puts one broken pair in the validation part and the other in training
    seed = next(s for s in range(200)
                if sorted(p.key.endswith("broken_a") for p in split_pairs(pairs, 0.25, s)[1]) == [False, True])
    stale = tmp_path / "run" / ".last.pt.k3x9_q2a.tmp"  # a run killed while writing last.pt
    stale.parent.mkdir()
    stale.write_bytes(b"PK")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    result = train(config(data, tmp_path / "run", seed=seed))
    assert not stale.exists()
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    used = [r["key"] for r in split["train"] + split["val"]]
    assert not any("broken" in k for k in used) and len(used) == 8
    assert sorted(r["key"] for r in split["skipped"]) == ["data/broken_a", "data/broken_b"]
    assert all("not an image" in r["reason"] for r in split["skipped"])
    meta = read_metadata(result.checkpoint)["training"]
    assert sorted(meta["val_keys"]) == sorted(r["key"] for r in split["val"]) and meta["n_val"] == len(split["val"])


def _numpy_peak(fn):
    """Peak bytes numpy allocates while ``fn`` runs (tracemalloc sees numpy buffers, not torch's)."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_image_is_segmented_without_a_full_size_float_copy(monkeypatch):
    from napari_medspike.data import io as image_io
    from napari_medspike.inference.predictor import predict

    monkeypatch.setattr(image_io, "BAND_MB", 2)  # the float working memory, scaled to this image

    model = create_model("medqkformer", **TINY).eval()
    model.info = model.info.updated(input_size=32)
    image = np.random.default_rng(0).integers(0, 256, (3000, 2000, 3), dtype=np.uint8)  # 18 MB
    prob, peak = _numpy_peak(lambda: predict(model, image, mode="resize", flips=False))
    assert prob.shape == (3000, 2000) and prob.dtype == np.float32
    # a float32 copy of the image alone is 4x its bytes; reading in bands stays well below one copy
    assert peak < 0.5 * image.nbytes, peak / image.nbytes


def test_banded_reduction_equals_converting_the_whole_image_then_box_averaging():
    from napari_medspike.data.io import reduced_rgb_float, to_rgb_float

    rng = np.random.default_rng(1)
    for image in (rng.integers(0, 4096, (203, 150), dtype=np.uint16),  # 12-bit grey: own maximum
                  rng.normal(5, 3, (97, 121, 3)).astype(np.float32),    # float outside [0, 1]
                  rng.integers(0, 256, (3, 90, 64), dtype=np.uint8),    # channel-first
                  rng.integers(-900, 300, (90, 70), dtype=np.int16)):   # signed: from its minimum
        full = to_rgb_float(image)
        h, w = (s // 4 * 4 for s in full.shape[:2])
        expected = full[:h, :w].reshape(h // 4, 4, w // 4, 4, 3).mean(axis=(1, 3))
        got = reduced_rgb_float(image, 4, band_mb=0)  # the smallest bands: one output row each
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_metrics_of_a_large_pair_need_one_temporary_mask():
    from napari_medspike.engine.metrics import binary_metrics

    rng = np.random.default_rng(2)
    pred, target = rng.random((2000, 3000)) > 0.5, rng.random((2000, 3000)) > 0.3
    metrics, peak = _numpy_peak(lambda: binary_metrics(pred, target))
    assert peak <= 1.5 * pred.nbytes, peak / pred.nbytes
    tp = np.sum(pred & target)
    assert metrics["dice"] == pytest.approx(2 * tp / (pred.sum() + target.sum()))


def test_stored_pixels_are_read_as_stored(tmp_path):
    import tifffile

    from napari_medspike.data.io import ImageReadError, read_image, read_pixels

    image = np.random.default_rng(3).integers(0, 4096, (20, 30, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", image, photometric="rgb")
    pixels = read_pixels(tmp_path / "a.tif")
    assert pixels.dtype == np.uint16 and np.array_equal(pixels, image)
    np.testing.assert_allclose(read_image(tmp_path / "a.tif"), image / image.max(), rtol=1e-6)
    (tmp_path / "b.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="b.png"):
        read_pixels(tmp_path / "b.png")


def test_the_models_mask_as_it_came_never_replaces_a_painted_correction(tmp_path):
    from napari_medspike.data.corrections import CorrectionStore

    store = CorrectionStore(tmp_path / "store")
    image = (np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)
    painted = store.save(image, np.eye(30, 40), {"painted": True})
    with pytest.raises(ValueError, match="was painted by hand"):
        store.save(image, np.ones((30, 40)), {"painted": False})
    assert [e.stem for e in store.list()] == [painted.stem]
    again = store.save(image, np.ones((30, 40)), {"painted": True})  # painted again: it replaces
    assert again.replaced == (painted.stem,)
    unknown = store.save(image, np.eye(30, 40))  # a caller that does not say: replaced as before
    assert unknown.replaced == (again.stem,)


def test_text_files_and_messages_survive_a_locale_whose_encoding_lacks_their_characters(tmp_path):
    """Windows writes text in its code page unless told otherwise: the measurements' "px²" failed
    in a Japanese one, a model card's "×" in a Cyrillic one. A C locale (ASCII) stands in for them."""
    import os
    import subprocess
    import sys

    data = write_lesion_pairs(tmp_path / "set", range(4), shape=(40, 48))
    save_checkpoint(create_model("medqkformer", widths=(8, 16, 32, 64)), tmp_path / "m.safetensors", input_size=32)
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    env.pop("PYTHONIOENCODING", None)
    run = [sys.executable, "-c", "import sys; from napari_medspike.cli.{0} import {1} as main; sys.exit(main(sys.argv[1:]))"]
    done = subprocess.run([run[0], run[1], run[2].format("segment", "main"), str(data / "images"), "--out", str(tmp_path / "out"),
                           "--model", str(tmp_path / "m.safetensors"), "--device", "cpu"],
                          env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    written = (tmp_path / "out" / "measurements.csv").read_bytes()
    assert written.startswith(b"\xef\xbb\xbf") and "px²" in written.decode("utf-8-sig")  # (the mark is for Excel)
    done = subprocess.run([run[0], run[1], run[2].format("train", "train_main"), "--arch", "medqkformer", "--config",
                           json.dumps({"widths": [8, 16, 32, 64]}), "--data", str(data), "--out", str(tmp_path / "run"),
                           "--size", "32", "--epochs", "1", "--batch-size", "2", "--device", "cpu"],
                          env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert "×" in (tmp_path / "run" / "best.md").read_text(encoding="utf-8")
    # what is printed: a character the terminal cannot show is escaped, the command goes on
    done = subprocess.run([run[0], "-c", "import sys; from napari_medspike.common import run_command; "
                           "sys.exit(run_command('x', lambda: print('area in px\\u00b2, 2 \\u00d7 2 \\u2026') or 0))"],
                          env=env, capture_output=True, timeout=60)
    assert done.returncode == 0 and b"px\\xb2" in done.stdout, done.stderr


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's mappings from /proc")
def test_a_checkpoints_metadata_is_rewritten_while_the_file_is_not_mapped(tmp_path, monkeypatch):
    """Windows refuses to replace a file that is mapped into memory: rewriting a card's metadata
    (every epoch's best checkpoint, every fine-tune) kept the old file mapped while replacing it."""
    from napari_medspike.engine import reports

    ckpt = save_checkpoint(create_model("medqkformer", widths=(8, 16, 32, 64)), tmp_path / "m.safetensors", input_size=32)
    mapped_while_replaced = []
    write = reports.atomic_write

    def watching(path, writer):
        result = write(path, writer)
        mapped_while_replaced.append(str(ckpt) in Path("/proc/self/maps").read_text(encoding="utf-8"))
        return result

    monkeypatch.setattr(reports, "atomic_write", watching)
    reports.refresh_metadata(ckpt, note="checked")
    assert mapped_while_replaced and not any(mapped_while_replaced)
    assert read_metadata(ckpt)["note"] == "checked" and load_model(ckpt) is not None
