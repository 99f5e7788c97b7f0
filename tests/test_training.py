"""The training engine: learning, resume, cancel, atomic checkpoints, DDP, fine-tune, evaluate."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import io

from lesions import write_lesion_pairs
from napari_medspike import create_model, load_model, save_checkpoint
from napari_medspike.common import WriteError
from napari_medspike.engine.checkpoint import atomic_write, read_metadata
from napari_medspike.engine.config import FINETUNE, TrainConfig
from napari_medspike.engine.finetune import finetune
from napari_medspike.engine.trainer import train

TINY = {"widths": [8, 16, 32, 64]}


@pytest.fixture(scope="module")
def lesions(tmp_path_factory) -> Path:
    return write_lesion_pairs(tmp_path_factory.mktemp("lesions"), range(16))


def config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=[str(data)], out_dir=str(out), arch="medqkformer", model_config=TINY, size=32,
                epochs=3, batch_size=4, val_fraction=0.25, augment=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_training_lowers_the_loss_and_writes_the_run_folder(lesions, tmp_path):
    result = train(config(lesions, tmp_path / "run", epochs=4, lr=3e-3))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    for name in ("best.safetensors", "best.md", "last.pt", "split.json", "history.csv", "history.json", "curves.png"):
        assert (tmp_path / "run" / name).is_file(), name
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(split["val"]) == 4 and not {r["key"] for r in split["train"]} & {r["key"] for r in split["val"]}
    meta = read_metadata(result.checkpoint)
    assert meta["arch"] == "medqkformer" and meta["input_size"] == 32
    assert sorted(meta["training"]["val_keys"]) == sorted(r["key"] for r in split["val"])
    assert meta["metrics"]["val_dice"] == pytest.approx(result.best["val_dice"])
    # what kind of images it knows: the style vectors of its 12 training images (for fine-tuning)
    assert meta["domain"]["images"] == 12 and len(meta["domain"]["styles"][0]) == 2 * TINY["widths"][0]


def test_training_and_loading_leave_the_callers_random_generators_as_they_were(lesions, tmp_path):
    """A fine-tune in napari shares the process's generators with the user's code: it reseeded
    them (to 0), and loading a model drew its throw-away first weights from the caller's."""
    import random

    def draws() -> tuple:
        return random.random(), torch.rand(3).tolist()

    random.seed(12345)
    torch.manual_seed(12345)
    expected = draws()
    random.seed(12345)
    torch.manual_seed(12345)
    result = train(config(lesions, tmp_path / "run", epochs=1))
    load_model(result.checkpoint)
    assert draws() == expected


def test_training_on_soft_masks_learns_and_says_so(lesions, tmp_path):
    result = train(config(lesions, tmp_path / "soft", epochs=4, lr=3e-3, soft_masks=True, augment=True))
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] and result.best["val_dice"] > 0.3
    assert read_metadata(result.checkpoint)["training"]["masks"] == "area-weighted (soft)"


def test_split_seed_keeps_the_held_out_images_while_the_weights_change(lesions, tmp_path):
    """Another model for an ensemble: a new --seed with --split-seed holds out the same images."""
    def run(name: str, **kw):
        result = train(config(lesions, tmp_path / name, epochs=1, **kw))
        split = json.loads((tmp_path / name / "split.json").read_text())
        return {r["key"] for r in split["val"]}, load_model(result.checkpoint), read_metadata(result.checkpoint)

    first_val, first, _ = run("seed0")
    other_val, other, _ = run("seed1", seed=1)
    same_val, same, meta = run("seed1split0", seed=1, split_seed=0)
    assert other_val != first_val  # --seed alone draws another split
    assert same_val == first_val and meta["training"]["split_seed"] == 0 and meta["training"]["seed"] == 1
    weights = next(iter(first.state_dict()))
    assert not torch.equal(first.state_dict()[weights], same.state_dict()[weights])


@pytest.mark.parametrize("workers, mode", [(0, "resize"), (1, "crop")])
def test_resume_continues_exactly(lesions, tmp_path, workers, mode):
    """Also with loader workers, whose random crops were seeded once per process: a resumed run
    cropped otherwise than an uninterrupted one."""
    options = dict(augment=True, workers=workers, mode=mode)
    full = train(config(lesions, tmp_path / "full", epochs=3, **options))
    train(config(lesions, tmp_path / "part", epochs=2, **options))
    resumed = train(config(lesions, tmp_path / "part", epochs=3, **options), resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"], rel=1e-4)


def test_cancel_keeps_the_best_checkpoint(lesions, tmp_path):
    cancel = threading.Event()

    def progress(p):
        if p.epoch == 2 and p.step == 1:
            cancel.set()

    result = train(config(lesions, tmp_path / "c", epochs=5), progress=progress, cancel=cancel)
    assert result.cancelled and len(result.history) == 1
    assert load_model(result.checkpoint).arch == "medqkformer"


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "best.safetensors"
    save_checkpoint(create_model("medqkformer", **TINY), target)
    before = target.read_bytes()

    def half_write(tmp: Path) -> None:
        tmp.write_bytes(before[: len(before) // 2])
        raise KeyboardInterrupt  # the run dies mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_write)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]


@pytest.mark.parametrize("arch", ["medspikeformer", "medqkformer", "ann_twin"])
def test_checkpoint_round_trip(tmp_path, arch):
    model = create_model(arch, **TINY).eval()
    path = save_checkpoint(model, tmp_path / f"{arch}.safetensors", input_size=64)
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.info.input_size == 64
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))


def test_half_precision_storage_is_smaller_and_close(tmp_path):
    model = create_model("medqkformer", **TINY).eval()
    full = save_checkpoint(model, tmp_path / "full.safetensors")
    half = save_checkpoint(model, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_model(half)
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(torch.sigmoid(loaded(x)), torch.sigmoid(model(x)), atol=0.02, rtol=0)


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_model(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a napari-medspike checkpoint"):
        load_model(junk)


def test_alignment_training_with_ann_twin_teacher(lesions, tmp_path):
    twin = train(config(lesions, tmp_path / "twin", arch="ann_twin", epochs=1))
    snn = train(config(lesions, tmp_path / "snn", arch="medspikeformer", model_config={**TINY, "timesteps": 2},
                       init_from=str(twin.checkpoint), teacher=str(twin.checkpoint), epochs=1))
    meta = read_metadata(snn.checkpoint)
    assert meta["training"]["teacher"] == str(twin.checkpoint) and meta["training"]["align_stages"] == [0, 1, 2, 3]
    assert 0 <= snn.history[0]["firing_rate"] <= 1
    # a twin is a teacher only at the size it was trained at: refused before any data is read
    with pytest.raises(ValueError, match="trained at 32x32 but this run is at 64x64"):
        train(config(lesions, tmp_path / "snn64", arch="medspikeformer", model_config={**TINY, "timesteps": 2},
                     teacher=str(twin.checkpoint), size=64, epochs=1))
    assert not (tmp_path / "snn64").exists()


def test_distilled_targets_mix_the_masks_with_the_teachers_probabilities():
    from napari_medspike.models.losses import distilled_targets

    masks = torch.tensor([[0.0, 1.0, 1.0]])
    logits = torch.tensor([[0.0, 0.0, 20.0]])  # probabilities 0.5, 0.5, ~1
    assert torch.allclose(distilled_targets(masks, logits, 0.5), torch.tensor([[0.25, 0.75, 1.0]]))
    assert torch.equal(distilled_targets(masks, logits, 0.0), masks)
    with pytest.raises(ValueError, match="differ"):
        distilled_targets(masks, logits[:, :2], 0.5)


def test_distillation_from_a_checkpoint_that_never_saw_the_validation_images(lesions, tmp_path, monkeypatch):
    import napari_medspike.engine.trainer as trainer

    teacher = train(config(lesions, tmp_path / "teacher", epochs=1))
    targets = []
    plain_loss = trainer.segmentation_loss
    monkeypatch.setattr(trainer, "segmentation_loss", lambda logits, y: targets.append(y) or plain_loss(logits, y))
    student = train(config(lesions, tmp_path / "student", arch="medspikeformer",
                           model_config={**TINY, "timesteps": 2}, distill=str(teacher.checkpoint), epochs=1))
    # its three training steps (12 images, batch 4) learned from soft targets: masks (0/1) mixed
    # half and half with probabilities; validation scores against the masks alone
    steps, validation = targets[:3], targets[3:]
    assert all(((t > 0) & (t < 1)).any() for t in steps)
    assert validation and all(((t == 0) | (t == 1)).all() for t in validation)
    meta = read_metadata(student.checkpoint)
    assert meta["training"]["distill"] == str(teacher.checkpoint) and meta["training"]["distill_mix"] == 0.5
    assert "distilled from" in student.checkpoint.with_suffix(".md").read_text()
    # refused: a teacher that trained on this run's validation images (another split), another
    # size, a mix outside [0, 1]; each before any training
    with pytest.raises(ValueError, match="trained on .* of this run's"):
        train(config(lesions, tmp_path / "leak", distill=str(teacher.checkpoint), seed=1, epochs=1))
    with pytest.raises(ValueError, match="run at --size 32"):
        train(config(lesions, tmp_path / "size", distill=str(teacher.checkpoint), size=48, epochs=1))
    with pytest.raises(ValueError, match="must lie in"):
        train(config(lesions, tmp_path / "mix", distill=str(teacher.checkpoint), distill_mix=1.5, epochs=1))
    assert not (tmp_path / "leak" / "best.safetensors").exists()


def test_deep_supervision_trains_the_side_heads_against_pooled_masks(lesions, tmp_path):
    from napari_medspike.models.losses import deep_supervision_loss, segmentation_loss

    masks = torch.zeros(1, 1, 8, 8)
    masks[..., :4, :] = 1.0
    sides = [torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4)]
    expected = (segmentation_loss(sides[0], masks) + segmentation_loss(sides[1], masks[..., ::2, ::2])) / 2
    assert torch.allclose(deep_supervision_loss(sides, masks), expected)

    tiny = {**TINY, "timesteps": 2}
    start = save_checkpoint(create_model("medspikeformer", **tiny), tmp_path / "start.safetensors", input_size=32)
    begin = {k: v.clone() for k, v in load_model(start).state_dict().items() if "side_head" in k and v.is_floating_point()}
    for weight in (0.0, 0.5):
        run = train(config(lesions, tmp_path / f"ds{weight}", arch="medspikeformer", model_config=tiny,
                           init_from=str(start), deep_supervision=weight, epochs=1))
        after = load_model(run.checkpoint).state_dict()
        moved = any(not torch.allclose(after[k], v) for k, v in begin.items())
        assert moved == (weight > 0), weight  # idle side heads stay as they start
    assert read_metadata(tmp_path / "ds0.5" / "best.safetensors")["training"]["deep_supervision"] == 0.5
    with pytest.raises(ValueError, match="side heads"):
        train(config(lesions, tmp_path / "qk", deep_supervision=0.5, epochs=1))


def test_deep_supervision_adds_side_heads_to_a_trained_medqkformer(lesions, tmp_path):
    plain = create_model("medqkformer", **TINY)
    start = save_checkpoint(plain, tmp_path / "start.safetensors", input_size=32)
    heads = {}
    for weight in (0.0, 0.5):  # the same seed: the new heads start the same in both runs
        run = train(config(lesions, tmp_path / f"ds{weight}", init_from=str(start), model_config={"side_heads": True},
                           deep_supervision=weight, epochs=1, lr=3e-3))
        tuned = load_model(run.checkpoint)
        assert tuned.config == {**plain.config, "side_heads": True}  # the start's widths, plus the heads
        heads[weight] = {k: v for k, v in tuned.state_dict().items() if k.startswith("side_heads.")}
    assert len(heads[0.5]) == 6
    assert any(not torch.equal(v, heads[0.0][k]) for k, v in heads[0.5].items())  # supervised heads learnt
    # and can be dropped again: a run without them starts from the trained body
    again = load_model(train(config(lesions, tmp_path / "plain", init_from=str(run.checkpoint),
                                    model_config={"side_heads": False}, epochs=1)).checkpoint)
    assert not again.has_side_heads and "side_heads.0.weight" not in again.state_dict()
    with pytest.raises(ValueError, match="does not fit"):
        train(config(lesions, tmp_path / "wider", init_from=str(start), model_config={"widths": [16, 16, 32, 64]},
                     epochs=1))


def test_a_spike_budget_lowers_the_firing_rate_and_is_recorded(lesions, tmp_path):
    # a low threshold: without a budget it fires at about 0.03, above the budget of 0.02 (at 0.5 it
    # fired at 0.001, far under the budget, so the test measured noise that moved with thread counts)
    tiny = {**TINY, "timesteps": 2, "threshold": 0.2, "spike_levels": 4}
    start = save_checkpoint(create_model("medspikeformer", **tiny), tmp_path / "start.safetensors", input_size=32)
    rates = {}
    for budget in (0.0, 0.02):
        run = train(config(lesions, tmp_path / f"budget{budget}", arch="medspikeformer", model_config=tiny,
                           init_from=str(start), max_firing_rate=budget, firing_weight=50.0, epochs=2, lr=1e-2,
                           norm_calibration=0))
        rates[budget] = run.history[-1]["firing_rate"]
    assert rates[0.0] > 1.25 * 0.02, rates  # unheld, it fires above the budget
    assert rates[0.02] < 0.75 * rates[0.0] and rates[0.02] < 1.2 * 0.02, rates  # held, it comes down to it
    meta = read_metadata(tmp_path / "budget0.02" / "best.safetensors")
    assert (meta["training"]["max_firing_rate"], meta["training"]["firing_weight"]) == (0.02, 50.0)
    assert "spike budget: mean firing rate 0.02" in (tmp_path / "budget0.02" / "best.md").read_text()
    assert "max_firing_rate" not in read_metadata(tmp_path / "budget0.0" / "best.safetensors")["training"]
    with pytest.raises(ValueError, match="spiking models"):
        train(config(lesions, tmp_path / "twin", arch="ann_twin", max_firing_rate=0.1, epochs=1))
    with pytest.raises(ValueError, match="checkpointing"):
        train(config(lesions, tmp_path / "ckpt", arch="medspikeformer", model_config=tiny, max_firing_rate=0.1,
                     checkpointing=True, epochs=1))


def test_a_stopped_run_leaves_no_spike_budget_hooks_on_the_neurons(lesions, tmp_path, monkeypatch):
    import napari_medspike.engine.trainer as trainer

    budgets = []

    class Recorded(trainer.FiringRatePenalty):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            budgets.append(self)

    monkeypatch.setattr(trainer, "FiringRatePenalty", Recorded)
    tiny = {**TINY, "timesteps": 2, "threshold": 0.5, "spike_levels": 4}
    steps = trainer.train_steps(config(lesions, tmp_path / "stopped", arch="medspikeformer", model_config=tiny,
                                       max_firing_rate=0.01, epochs=2, norm_calibration=0))
    next(steps)  # one training step, with the budget's hooks on every neuron
    (budget,) = budgets
    assert budget._hooks and all(m._forward_hooks for m in budget._neurons)
    steps.close()  # what a caller that stops iterating does
    assert not budget._hooks and not any(m._forward_hooks for m in budget._neurons)


def test_sltt_training_with_teacher_through_the_command_line(lesions, tmp_path):
    from napari_medspike.cli.train import train_main

    twin = train(config(lesions, tmp_path / "twin", arch="ann_twin", epochs=1))
    assert train_main(["--arch", "medspikeformer", "--data", str(lesions), "--out", str(tmp_path / "snn"),
                       "--config", json.dumps({**TINY, "timesteps": 3}), "--size", "32", "--epochs", "2",
                       "--batch-size", "4", "--val-fraction", "0.25", "--no-augment", "--device", "cpu",
                       "--init-from", str(twin.checkpoint), "--teacher", str(twin.checkpoint), "--sltt", "1"]) == 0
    meta = read_metadata(tmp_path / "snn" / "best.safetensors")
    assert meta["training"]["gradient"].startswith("SLTT-1")
    assert meta["config"]["layout"] == "spike_driven" and meta["config"]["timesteps"] == 3
    history = json.loads((tmp_path / "snn" / "history.json").read_text())
    assert len(history) == 2 and all(np.isfinite(h["train_loss"]) for h in history)
    with pytest.raises(ValueError, match="1 <= K <= T"):
        train(config(lesions, tmp_path / "bad", arch="medspikeformer", model_config={**TINY, "timesteps": 2}, sltt=3))
    with pytest.raises(ValueError, match="LIF models"):
        train(config(lesions, tmp_path / "bad2", sltt=1))


def test_finetune_on_corrections(lesions, tmp_path):
    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "start.safetensors", input_size=32)
    result = finetune(start, lesions, tmp_path / "tuned.safetensors", epochs=2, lr=1e-3, device="cpu")
    assert result.checkpoint.is_file() and result.checkpoint.with_suffix(".md").is_file()
    assert len(result.history) == 2 and result.dice_after >= result.dice_before
    assert load_model(result.checkpoint).arch == "medqkformer"
    # improved says whether an epoch beat the start (the start stays the answer on a tie)
    assert result.improved == (result.dice_after > result.dice_before)
    # the run folder keeps the record, not a second and third copy of the weights; the user's start stays
    run = tmp_path / "tuned_run"
    assert (run / "history.csv").is_file() and not list(run.glob("*.safetensors")) and start.is_file()
    assert "Fine-tuned from start on" in str(read_metadata(result.checkpoint))


def five_corrections(lesions: Path, folder: Path) -> Path:
    """A corrections folder holding copies of the first five lesion pairs."""
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
        for f in sorted((lesions / sub).iterdir())[:5]:
            (folder / sub / f.name).write_bytes(f.read_bytes())
    return folder


def test_finetune_auto_epochs_count_replayed_images_and_a_time_limit_is_said(lesions, tmp_path, monkeypatch):
    """Auto epochs counted the corrections only: 5 corrections with 200 replayed pairs planned 60
    epochs of 205 images, 25 times the budget, which the time limit then cut after one epoch while
    the dock said "done"."""
    from napari_medspike.engine import finetune as finetune_module

    planned = []
    real_steps = finetune_module.train_steps

    def recording(cfg, **kw):
        planned.append(cfg.epochs)
        return real_steps(cfg, **kw)

    monkeypatch.setattr(finetune_module, "train_steps", recording)
    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "start.safetensors", input_size=32)
    corrections = five_corrections(lesions, tmp_path / "corrections")
    n_train = 4  # 5 corrections, one held out
    result = finetune(start, corrections, tmp_path / "a.safetensors", epochs=0, replay=lesions, replay_samples=10,
                      minutes=1e-4, device="cpu")
    assert planned == [FINETUNE.epochs_for(n_train + 10)] and planned[0] < FINETUNE.epochs_for(n_train)
    # the time limit (here at once) stopped it after its first epoch: said beside the figures
    assert result.time_limited == (1, planned[0]) and len(result.history) == 1
    assert f"the time limit stopped it after 1 of {planned[0]} epochs" in result.describe()
    full = finetune(start, corrections, tmp_path / "b.safetensors", epochs=1, device="cpu")
    assert full.time_limited is None and "time limit" not in full.describe()


def test_replay_never_brings_in_an_image_that_is_held_out_or_already_trained_on(lesions, tmp_path):
    """Replay drew from every pair of its folders: the run's own held-out images (its "Dice after"
    measured on trained images), images it already trained on (twice), and the starting model's
    validation images (a later evaluation of the fine-tuned model on them scored trained images)."""
    from napari_medspike.data.dataset import find_pairs
    from napari_medspike.engine.trainer import _datasets

    other = write_lesion_pairs(tmp_path / "other", range(20, 28))
    other_keys = sorted(p.key for p in find_pairs(other)[0])
    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "start.safetensors", input_size=32,
                            training={"val_keys": other_keys[:3]})
    cfg = config(lesions, tmp_path / "run", init_from=str(start), replay=[str(lesions), str(other)], replay_samples=50)
    train_set, val_set, _, replayed = _datasets(cfg, tmp_path / "run")
    own = {p.key for p in find_pairs(lesions)[0]}
    val_keys = {p.key for p in val_set.pairs}
    trained = [p.key for p in train_set.pairs]
    assert replayed == set(other_keys[3:])  # the other folder's images, less the start's validation ones
    assert len(trained) == len(set(trained)) == len(own) - len(val_keys) + 5
    assert not val_keys & set(trained)


def test_a_model_trained_on_crops_is_fine_tuned_on_crops(lesions, tmp_path):
    """A histology model (random crops at full resolution) was fine-tuned on whole corrections
    shrunk to its input size, another scale, and its result recorded as a 'resize' model."""
    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "crops.safetensors", input_size=32,
                            training={"mode": "crop"})
    result = finetune(start, lesions, tmp_path / "tuned.safetensors", epochs=1, device="cpu")
    assert read_metadata(result.checkpoint)["training"]["mode"] == "crop"
    assert json.loads((tmp_path / "tuned_run" / "config.json").read_text())["mode"] == "crop"


def test_a_fine_tune_that_beats_nothing_can_leave_no_copy_of_its_start(lesions, tmp_path):
    """The dock deleted the copy of the start that an unimproved fine-tune wrote: with many
    corrections, fitting the gate and writing it took 3.6 of the 8.6 s from Cancel to idle."""
    import threading

    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "start.safetensors", input_size=32)
    stop = threading.Event()
    stop.set()  # cancelled before an epoch ended: the start stays the best
    result = finetune(start, lesions, tmp_path / "none.safetensors", epochs=2, device="cpu", cancel=stop,
                      keep_unimproved=False)
    assert not result.improved and result.cancelled
    # cancelled at once: not even the start is measured (its validation took 3.7 s with 60 corrections)
    assert not result.measured and result.describe() == "Dice not measured (cancelled before the first epoch)"
    assert not (tmp_path / "none.safetensors").exists() and not list((tmp_path / "none_run").glob("*.safetensors"))
    kept = finetune(start, lesions, tmp_path / "copy.safetensors", epochs=2, device="cpu", cancel=stop)
    assert not kept.improved and (tmp_path / "copy.safetensors").is_file()  # the command line's case


def test_a_fine_tune_says_which_corrections_it_left_out(lesions, tmp_path):
    """An unreadable correction was left out with a line in the log only: the dock said "fine-tuning
    on 5 corrections" and then "done" as if all had been used."""
    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "start.safetensors", input_size=32)
    corrections = five_corrections(lesions, tmp_path / "corrections")
    (corrections / "images" / "l01.png").write_bytes(b"\x89PNG broken")
    result = finetune(start, corrections, tmp_path / "t.safetensors", epochs=1, device="cpu")
    assert len(result.left_out) == 1 and "l01.png" in result.left_out[0]
    assert "1 correction could not be used and was left out: " in result.describe()


def test_a_fine_tune_on_one_correction_says_its_figures_are_not_held_out(lesions, tmp_path):
    """One correction cannot be held out: the events, the result and the checkpoint say so as a
    flag (the dock's summary read it from the card's wording before)."""
    from napari_medspike.common import run_job
    from napari_medspike.engine.config import TrainEvent
    from napari_medspike.engine.finetune import finetune_steps
    from napari_medspike.engine.trainer import train_steps

    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "start.safetensors", input_size=32)
    one = five_corrections(lesions, tmp_path / "one")
    for sub in ("images", "masks"):
        for f in sorted((one / sub).iterdir())[1:]:
            f.unlink()
    events = []
    result = run_job(finetune_steps(start, one, tmp_path / "t.safetensors", epochs=1, device="cpu"), events.append)
    assert not result.held_out
    assert {e.kind for e in events} >= {TrainEvent.START, TrainEvent.EPOCH} and not any(e.held_out for e in events)
    info = load_model(result.checkpoint).info
    assert info.training["held_out"] is False and not info.validated_on_held_out
    # nor does a run that holds nothing out and validates nothing
    events = []
    run = run_job(train_steps(config(lesions, tmp_path / "none", epochs=1, val_fraction=0.0)), events.append)
    assert events and not any(e.held_out for e in events)
    assert load_model(run.checkpoint).info.training["held_out"] is False


def test_finetune_guardrails(lesions, tmp_path):
    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "s.safetensors")
    with pytest.raises(ValueError, match="unsafe"):
        finetune(start, lesions, tmp_path / "x.safetensors", lr=0.5)
    nothing = tmp_path / "nothing"
    (nothing / "images").mkdir(parents=True)
    (nothing / "masks").mkdir()
    with pytest.raises(ValueError, match="no corrections"):
        finetune(start, nothing, tmp_path / "x.safetensors")
    empty = tmp_path / "blank"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    io.imsave(empty / "images" / "a.png", np.zeros((32, 32, 3), np.uint8), check_contrast=False)
    io.imsave(empty / "masks" / "a.png", np.zeros((32, 32), np.uint8), check_contrast=False)
    with pytest.raises(ValueError, match="empty"):
        finetune(start, empty, tmp_path / "x.safetensors")
    # a folder the result cannot go to is said before any training (here a file stands in its way)
    (tmp_path / "taken").write_text("")
    with pytest.raises(WriteError, match="cannot write in .*taken"):
        finetune(start, lesions, tmp_path / "taken" / "x.safetensors")
    assert not list(tmp_path.glob("**/history.csv"))


def test_evaluate_cli(lesions, tmp_path, capsys):
    from napari_medspike.cli.evaluate import main

    ckpt = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "m.safetensors", input_size=32)
    out = tmp_path / "eval.json"
    assert main(["--checkpoint", str(ckpt), "--data", str(lesions), "--json", str(out),
                 "--report", str(tmp_path / "rep"), "--device", "cpu"]) == 0
    payload = json.loads(out.read_text())
    assert payload["count"] == 16 and len(payload["images"]) == 16
    assert payload["data"] == [str(lesions)] and payload["skipped"] == []  # what it measured, on its own
    assert payload["mean_dice"] == pytest.approx(np.mean([r["dice"] for r in payload["images"]]))
    assert (tmp_path / "rep" / "gallery.png").stat().st_size > 1000
    low, high = payload["ci95_dice"]
    assert low <= payload["mean_dice"] <= high
    # the same model with mirror TTA, compared image by image with the run above
    tta = tmp_path / "tta.json"
    assert main(["--checkpoint", str(ckpt), "--data", str(lesions), "--json", str(tta), "--device", "cpu",
                 "--flips", "on", "--compare", str(out)]) == 0
    comparison = json.loads(tta.read_text())["comparison"]
    dice = [r["dice"] for r in json.loads(tta.read_text())["images"]]
    assert comparison["dice"]["images"] == 16
    assert comparison["dice"]["mean_difference"] == pytest.approx(np.mean(dice) - payload["mean_dice"])
    assert "shared images" in capsys.readouterr().out
    (tmp_path / "junk.json").write_text("{}")
    assert main(["--checkpoint", str(ckpt), "--data", str(lesions), "--compare", str(tmp_path / "junk.json")]) == 2
    assert "not a medspike-evaluate --json file" in capsys.readouterr().err
    # a split file without --subset was ignored: every image evaluated, training images too
    (tmp_path / "split.json").write_text(json.dumps({"val": [], "train": []}))
    with pytest.raises(SystemExit) as usage:
        main(["--checkpoint", str(ckpt), "--data", str(lesions), "--split", str(tmp_path / "split.json")])
    assert usage.value.code == 2 and "add --subset val" in capsys.readouterr().err
    # an empty list (a one-image fine-tune holds nothing out) is said so, not "min() arg is an empty sequence"
    assert main(["--checkpoint", str(ckpt), "--data", str(lesions), "--subset", "val",
                 "--split", str(tmp_path / "split.json")]) == 2
    assert "its 'val' list is empty" in capsys.readouterr().err
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    assert main(["--checkpoint", str(ckpt), "--data", str(tmp_path / "empty"), "--device", "cpu"]) == 1
    assert "no image/mask pairs in" in capsys.readouterr().err
    # one image has no interval and gives no verdict (it was one image's value at both ends,
    # so a comparison of one image called any difference "better" or "worse")
    one = tmp_path / "one"
    for sub in ("images", "masks"):
        (one / sub).mkdir(parents=True)
        first = sorted((lesions / sub).iterdir())[0]
        shutil.copy(first, one / sub / first.name)
    assert main(["--checkpoint", str(ckpt), "--data", str(one), "--json", str(tmp_path / "one.json"),
                 "--device", "cpu"]) == 0
    assert "n/a" in capsys.readouterr().out
    assert main(["--checkpoint", str(ckpt), "--data", str(one), "--json", str(tmp_path / "one-tta.json"),
                 "--device", "cpu", "--flips", "on", "--compare", str(tmp_path / "one.json")]) == 0
    said = capsys.readouterr().out
    assert "too few for an interval" in said and "better" not in said and "worse" not in said
    strict = json.loads((tmp_path / "one-tta.json").read_text(),  # JSON without NaN, which other tools refuse
                        parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert strict["ci95_dice"] == [None, None] and strict["comparison"]["dice"]["interval"] == [None, None]


def test_torchrun_two_cpu_processes(lesions, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "-m", "napari_medspike.cli.train", "--arch", "medqkformer", "--config", json.dumps(TINY),
           "--data", str(lesions), "--out", str(out), "--size", "32", "--epochs", "2", "--batch-size", "4",
           "--device", "cpu", "--no-augment"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    meta = read_metadata(out / "best.safetensors")
    assert meta["training"]["device"] == "cpu x2" and meta["training"]["batch_size"] == 8


def test_train_cli_continues_from_a_checkpoint_with_its_own_schedule(lesions, tmp_path):
    from napari_medspike.cli.train import train_main

    start = train(config(lesions, tmp_path / "start", epochs=1)).checkpoint
    out = tmp_path / "more"
    code = train_main(["--arch", "medqkformer", "--init-from", str(start), "--data", str(lesions),
                       "--out", str(out), "--size", "32", "--epochs", "2", "--batch-size", "4",
                       "--val-fraction", "0.25", "--lr", "2e-4", "--plateau-patience", "1",
                       "--device", "cpu", "--no-augment"])
    assert code == 0
    meta = read_metadata(out / "best.safetensors")
    assert meta["config"]["widths"] == TINY["widths"]
    assert meta["training"]["init_from"] == str(start)
    assert meta["training"]["lr"] == 2e-4 and meta["training"]["plateau_patience"] == 1
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[0]["lr"] <= 2e-4


def test_recommended_inference_settings_survive_training_and_finetuning(lesions, tmp_path):
    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "start.safetensors",
                            input_size=32, inference={"flips": True})
    trained = train(config(lesions, tmp_path / "run", epochs=1, init_from=str(start))).checkpoint
    assert read_metadata(trained)["inference"] == {"flips": True}
    tuned = finetune(load_model(trained), lesions, tmp_path / "tuned.safetensors", epochs=1, device="cpu")
    assert read_metadata(tuned.checkpoint)["inference"] == {"flips": True}
    assert "mirror test-time augmentation on" in (tmp_path / "tuned.md").read_text()


def test_checkpointed_training_runs_and_is_refused_where_unsupported(lesions, tmp_path):
    snn = dict(arch="medspikeformer", model_config={"widths": [8, 16, 16, 32], "heads": 2, "timesteps": 2})
    result = train(config(lesions, tmp_path / "ckpt", epochs=1, checkpointing=True, **snn))
    assert result.checkpoint.is_file() and len(result.history) == 1
    with pytest.raises(ValueError, match="checkpointing"):
        train(config(lesions, tmp_path / "qk", epochs=1, checkpointing=True))


def test_recalibrated_norms_make_evaluation_match_the_calibration_batch(lesions):
    from napari_medspike.data.dataset import CachedPairs, find_pairs
    from napari_medspike.engine.trainer import recalibrate_norms

    pairs, _ = find_pairs([str(lesions)])
    data = CachedPairs(pairs[:6], 64, "resize", random_crops=False)
    x = torch.stack([data[i][0] for i in range(6)])
    model = create_model("ann_twin", **TINY)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:  # running statistics far from anything the weights produce
        norm.running_mean.fill_(50.0)
    model.eval()
    with torch.no_grad():
        stale = model(x)
        for norm in norms:
            norm.momentum = 0.0  # train mode: batch statistics, running ones left alone
        model.train()
        batch = model(x)
        for norm in norms:
            norm.momentum = 0.1
    recalibrate_norms(model, data, 6, 6, torch.device("cpu"))
    assert all(norm.momentum == 0.1 for norm in norms) and model.training  # restored as it was
    model.eval()
    with torch.no_grad():
        calibrated = model(x)
    # the same statistics up to unbiased against biased variance (a few % in the 2x2 deepest maps)
    error, stale_error = (calibrated - batch).abs().mean(), (stale - batch).abs().mean()
    assert error < 0.1 * stale_error, (error, stale_error)


def test_spiking_models_recalibrate_their_norms_before_validation(lesions, tmp_path, monkeypatch):
    from napari_medspike.engine import trainer

    calls = []
    original = trainer.recalibrate_norms
    monkeypatch.setattr(trainer, "recalibrate_norms", lambda *a, **k: calls.append(a[2]) or original(*a, **k))
    snn = {**TINY, "timesteps": 2}
    train(config(lesions, tmp_path / "snn", arch="medspikeformer", model_config=snn, epochs=2))
    assert calls == [trainer.NORM_CALIBRATION_IMAGES] * 2  # before each validation
    calls.clear()
    train(config(lesions, tmp_path / "qk", epochs=1))  # MedQKFormer: T = 1, no calibration by default
    train(config(lesions, tmp_path / "snn5", arch="medspikeformer", model_config=snn, epochs=1, norm_calibration=5))
    assert calls == [5]


def test_cpu_training_releases_freed_memory_after_every_step(lesions, tmp_path, monkeypatch):
    from napari_medspike.engine import trainer

    calls = []
    monkeypatch.setattr(trainer, "release_free_memory", lambda **kw: calls.append(kw) or True)
    train(config(lesions, tmp_path / "run", epochs=2))  # 12 training images, batch 4
    assert len(calls) == 2 * 3


def test_a_fine_tune_gives_freed_memory_back_though_loading_its_model_tuned_the_allocator(
        lesions, tmp_path, monkeypatch):
    """Loading the starting model tunes glibc to keep freed memory for inference, which turned
    the trainer's release after each step off: three fine-tunes in napari held 0.6 GB more."""
    from napari_medspike import runtime

    trims = []
    monkeypatch.setattr(runtime, "_malloc_trim", lambda: trims.append(1) or True)
    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "start.safetensors", input_size=32)
    try:
        finetune(start, lesions, tmp_path / "tuned.safetensors", epochs=2, lr=1e-3, device="cpu", batch_size=4)
        assert runtime._tuned or runtime._opted_out()  # (the start was loaded: the allocator is tuned)
    finally:
        runtime.reset_malloc()
    # 12 of the 16 pairs train (a fifth held out), batch 4: 3 steps per epoch, then once at the end
    assert len(trims) == (0 if runtime._opted_out() else 2 * 3 + 1)


def test_train_command_line_options_are_the_config_fields():
    """medspike-train's options come from TrainConfig: same names, same defaults, nothing missing."""
    import argparse
    import dataclasses

    from napari_medspike.cli.options import add_config_options, config_from_options

    parser = argparse.ArgumentParser()
    add_config_options(parser, TrainConfig)
    args = parser.parse_args(["--data", "a", "b", "--out", "run"])
    assert config_from_options(TrainConfig, args) == TrainConfig(data=["a", "b"], out_dir="run")
    exposed = {a.dest for a in parser._actions} - {"help"}
    internal = {f.name for f in dataclasses.fields(TrainConfig) if not f.metadata["cli"]}
    assert exposed | internal == {f.name for f in dataclasses.fields(TrainConfig)}
    args = parser.parse_args(["--data", "a", "--out", "r", "--config", '{"timesteps": 2}', "--align-stages", "0,2",
                              "--no-augment", "--minutes", "1.5", "--lr", "3e-4", "--norm-calibration", "0"])
    cfg = config_from_options(TrainConfig, args)
    assert (cfg.model_config, cfg.align_stages, cfg.augment, cfg.max_minutes, cfg.lr, cfg.norm_calibration) == \
        ({"timesteps": 2}, [0, 2], False, 1.5, 3e-4, 0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--data", "a", "--out", "r", "--config", "[1, 2]"])  # not a JSON object


def test_training_is_a_generator_of_events_that_returns_its_result(lesions, tmp_path):
    """One job protocol: the loop yields its progress and returns the result; train() drives it."""
    from napari_medspike.common import run_job
    from napari_medspike.engine.config import TrainEvent, TrainProgress, TrainResult
    from napari_medspike.engine.finetune import finetune_steps
    from napari_medspike.engine.trainer import train_steps

    steps = train_steps(config(lesions, tmp_path / "run", epochs=2))
    events = []
    result = run_job(steps, events.append)
    assert isinstance(result, TrainResult) and all(isinstance(e, TrainProgress) for e in events)
    assert [e.epoch for e in events if e.kind == TrainEvent.EPOCH] == [1, 2]
    assert sum(e.kind == TrainEvent.STEP for e in events) == 2 * events[-1].steps
    assert all(e.held_out for e in events) and events[-1].message == "epoch done"  # (words for people)
    # a fine-tune first reports the starting weights' figures (the bar to beat); closing it after
    # its first events stops it there: no output is written
    job = finetune_steps(result.checkpoint, lesions, tmp_path / "tuned.safetensors", epochs=3, device="cpu")
    first, second = next(job), next(job)
    job.close()
    assert first.kind == TrainEvent.START and first.epoch == 0 and 0 <= first.metrics["val_dice"] <= 1
    assert first.held_out and "held_out" not in first.metrics  # a flag, not a figure to plot
    assert second.epoch == 1 and second.kind == TrainEvent.STEP and not (tmp_path / "tuned.safetensors").exists()


def test_weight_average_is_what_is_validated_saved_and_resumed(lesions, tmp_path):
    """--ema: the saved weights are the moving average (not the last step's), and a resumed run
    continues the average exactly."""
    one = train(config(lesions, tmp_path / "one", epochs=1, lr=3e-3, ema=0.9))
    state = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    raw, average = state["model"], state["averaged"]
    changed = [k for k, v in raw.items() if v.is_floating_point() and not torch.allclose(v, average["module." + k])]
    assert changed, "the average equals the raw weights"
    saved = load_model(one.checkpoint).state_dict()  # epoch 1 is the best of one
    assert all(torch.allclose(saved[k], average["module." + k], atol=1e-5) for k in changed)
    full = train(config(lesions, tmp_path / "full", epochs=3, lr=3e-3, ema=0.9, plateau_patience=99))
    train(config(lesions, tmp_path / "part", epochs=2, lr=3e-3, ema=0.9, plateau_patience=99))
    resumed = train(config(lesions, tmp_path / "part", epochs=3, lr=3e-3, ema=0.9, plateau_patience=99), resume=True)
    assert resumed.history[-1]["val_dice"] == pytest.approx(full.history[-1]["val_dice"], abs=1e-4)


def test_photometric_and_scale_augmentation_change_images_not_mask_alignment():
    from napari_medspike.engine.trainer import build_augment

    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32)
    m = torch.zeros(8, 1, 32, 32)
    m[:, :, 8:24, 8:24] = 1
    xa, ma = build_augment(photometric=True, scale=True)(x, m)
    assert xa.shape == x.shape and 0.0 <= float(xa.min()) and float(xa.max()) <= 1.0
    assert set(ma.unique().tolist()) <= {0.0, 1.0}
    areas = ma.sum(dim=(1, 2, 3))
    assert float(areas.std()) > 0  # zoom changes the lesion's area from image to image


def test_soft_masks_move_with_the_image_and_stay_soft():
    from napari_medspike.engine.trainer import build_augment

    torch.manual_seed(0)
    m = torch.zeros(8, 1, 32, 32)
    m[:, :, 8:24, 6:20] = 1
    m[:, :, 7, 6:20] = 0.4  # a soft edge
    x = m.expand(-1, 3, -1, -1).clone()  # the image is the mask: it must stay aligned with it
    xa, ma = build_augment(scale=True, soft_masks=True)(x, m)
    assert ma.shape == m.shape and 0.0 <= float(ma.min()) and float(ma.max()) <= 1.0
    assert ((ma > 0.05) & (ma < 0.95)).any()  # not thresholded
    kept = xa[:, 0] != 0  # erased patches aside
    assert torch.allclose(xa[:, 0][kept], ma[:, 0][kept], atol=1e-5)
    assert not torch.equal(ma, m)  # moved


def test_frozen_norm_statistics_and_the_weight_anchor(lesions, tmp_path):
    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "start.safetensors", input_size=32)
    first = load_model(start).state_dict()
    frozen = train(config(lesions, tmp_path / "frozen", epochs=1, lr=3e-3, init_from=str(start), freeze_norm_stats=True))
    weights = load_model(frozen.checkpoint).state_dict()
    stats = [k for k in weights if k.endswith("running_mean") or k.endswith("running_var")]
    assert stats and all(torch.equal(weights[k], first[k]) for k in stats)

    def change(run: str, **kw) -> float:
        tuned = load_model(train(config(lesions, tmp_path / run, epochs=2, lr=3e-3, init_from=str(start), **kw))
                           .checkpoint).state_dict()
        return sum(float(((tuned[k] - first[k]) ** 2).sum()) for k in first if k.endswith("weight"))

    assert change("anchored", anchor_weight=10.0) < 0.5 * change("free")


def test_frozen_parts_keep_their_weights_and_norm_statistics():
    from napari_medspike.engine.trainer import freeze_parts

    model = create_model("medqkformer", widths=[8, 16, 32, 64])
    model.train()
    freeze_parts(model, ["stages.0"])
    frozen = [p for n, p in model.named_parameters() if n.startswith("stages.0.")]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("stages.0."))
    norms = [m for n, m in model.named_modules() if n.startswith("stages.0.") and isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    with pytest.raises(ValueError, match="no module"):
        freeze_parts(model, ["nowhere"])


def test_a_frozen_stage_of_a_spiking_model_stays_through_training_and_norm_calibration(lesions, tmp_path):
    start = train(config(lesions, tmp_path / "start", arch="medspikeformer", model_config={**TINY, "timesteps": 2},
                         epochs=1))
    before = load_model(start.out_dir / "best.safetensors").state_dict()
    tuned = train(config(lesions, tmp_path / "tuned", arch="medspikeformer", epochs=1, lr=3e-3,
                         init_from=str(start.out_dir / "best.safetensors"), frozen=["stages.0"],
                         keep_initial_as_best=False))
    after = load_model(tuned.out_dir / "best.safetensors").state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert any(k.endswith("running_mean") for k in changed)  # the statistics were re-estimated elsewhere
    assert changed and not any(k.startswith("stages.0.") for k in changed)


def test_gradient_clipping_rescales_each_step_before_the_optimiser(lesions, tmp_path):
    """``clip_grad`` bounds a step's gradient norm before Adam sees it. Adam ignores a common
    scale, so clipping to almost nothing shows up only through its epsilon: the weights then
    barely move (a spiking model's rare huge steps are what clipping to about 1 tames)."""
    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "start.safetensors", input_size=32)
    first = load_model(start).state_dict()

    def change(run: str, **kw) -> float:
        tuned = load_model(train(config(lesions, tmp_path / run, epochs=1, lr=3e-3, init_from=str(start), **kw))
                           .checkpoint).state_dict()
        return sum(float(((tuned[k] - first[k]) ** 2).sum()) for k in first if k.endswith("weight"))

    assert change("clipped", clip_grad=1e-13) < 0.01 * change("free")


def test_cuda_precision_is_fp32_for_multi_step_spiking_models_unless_asked():
    from napari_medspike.engine.trainer import uses_bf16

    lif, integer = create_model("medspikeformer", timesteps=4), create_model("medqkformer", **TINY)
    assert not uses_bf16("auto", lif) and uses_bf16("auto", integer)
    assert uses_bf16("bf16", lif) and not uses_bf16("fp32", integer)
    with pytest.raises(ValueError, match="unknown precision"):
        uses_bf16("fp16", integer)


def test_a_diverging_run_stops_at_the_first_non_finite_loss_and_keeps_its_best(lesions, tmp_path, monkeypatch):
    import napari_medspike.engine.trainer as trainer
    from napari_medspike.engine.config import TrainingDiverged

    calls = {"n": 0}
    plain = trainer.segmentation_loss

    def poisoned(logits, target):
        calls["n"] += 1
        loss = plain(logits, target)
        return loss * float("nan") if calls["n"] > 3 else loss  # epoch 1 has 3 steps of 4 images

    monkeypatch.setattr(trainer, "segmentation_loss", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"became nan at epoch 2, step 1.*best checkpoint so far is kept"):
        train(config(lesions, run, epochs=3))
    assert calls["n"] == 5  # epoch 1: 3 steps and 1 validation batch; then the first step of epoch 2, and no more
    load_model(run / "best.safetensors")  # epoch 1's weights, finite (load_model refuses NaN)
    assert read_metadata(run / "best.safetensors")["metrics"]["epoch"] == 1


def test_a_weight_average_from_random_weights_warms_up():
    """From scratch the average forgets the random start within a few hundred steps; from trained
    weights (no warm-up) it keeps the plain decay."""
    from napari_medspike.engine.trainer import ema_update

    def share_of_start(warmup: bool, steps: int = 300) -> float:
        start, later = torch.zeros(4), torch.ones(4)
        model = torch.nn.Linear(2, 2)
        averaged = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_update(0.999, warmup=warmup))
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(start[: p.numel()].view_as(p))
        averaged.update_parameters(model)  # the first update copies the start
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(later[: p.numel()].view_as(p))
        for _ in range(steps):
            averaged.update_parameters(model)
        return 1.0 - float(averaged.module.weight.mean())

    assert share_of_start(warmup=False) == pytest.approx(0.999 ** 300, rel=1e-3)  # 74 % still the start
    assert share_of_start(warmup=True) < 0.05
    with pytest.raises(ValueError, match="decay"):
        ema_update(1.5)


def test_finetune_result_headline_puts_the_figures_first():
    from napari_medspike.engine.config import FinetuneResult

    def result(**kw):
        return FinetuneResult(checkpoint=Path("t.safetensors"), history=[], cancelled=False, **kw)

    assert result(dice_before=0.5, dice_after=0.8125, validation_images=3).headline() == \
        "Dice 0.500 -> 0.812 (held out: 3 images)"
    assert result(dice_before=0.5, dice_after=0.75, held_out=False).headline().endswith("(on the corrected image itself)")
    assert result(dice_before=float("nan"), dice_after=0.7).headline() == "Dice not measured"
    # no epoch beat the start: said, not dressed up as "0.500 -> 0.500"
    same = result(dice_before=0.5, dice_after=0.5, validation_images=2, improved=False)
    assert "not improved" in same.headline() and "->" not in same.headline()
    assert "kept unchanged" in same.describe()
    # a gain too small for three decimals is not shown as "0.930 -> 0.930"
    assert result(dice_before=0.93, dice_after=0.9305, validation_images=2).headline().startswith(
        "Dice 0.9300 -> 0.9305")
    # cancelled before an epoch ended: not "no epoch beat the starting model"
    early = FinetuneResult(checkpoint=Path("t.safetensors"), history=[], cancelled=True, dice_before=0.5,
                           dice_after=0.5, improved=False)
    assert "cancelled before an epoch ended" in early.headline()
    assert "cancelled before the first epoch" in early.describe() and "no epoch beat" not in early.describe()


def test_cosine_schedule_anneals_by_steps_or_by_the_time_budget():
    from napari_medspike.engine.schedule import CosineSchedule

    def optimiser():
        return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)

    opt = optimiser()
    by_steps = CosineSchedule(opt, total_steps=10, clock=lambda: 0.0)
    rates = []
    for _ in range(10):
        by_steps.step()
        rates.append(opt.param_groups[0]["lr"])
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[4] == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))  # halfway: half-way between the ends
    assert rates[-1] == pytest.approx(1e-5)
    # a time budget half spent after one step of a thousand: the rate is already the halfway one
    now = [0.0]
    opt = optimiser()
    by_time = CosineSchedule(opt, total_steps=1000, minutes=2.0, clock=lambda: now[0])
    now[0] = 60.0
    by_time.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(rates[4])
    now[0] = 600.0
    by_time.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)
    # a resume carries the steps done and the starting rate; a plateau run's state is refused
    again = CosineSchedule(optimiser(), total_steps=10, clock=lambda: 0.0)
    again.load_state_dict(by_steps.state_dict())
    assert again.steps_done == 10 and again.base_lrs == [1e-3]
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser())
    with pytest.raises(ValueError, match="plateau"):
        again.load_state_dict(plateau.state_dict())


def test_cosine_training_ends_annealed_and_resumes_exactly(lesions, tmp_path):
    full = train(config(lesions, tmp_path / "full", epochs=3, lr=3e-3, schedule="cosine"))
    rates = [h["lr"] for h in full.history]
    assert rates[0] < 3e-3 and rates[0] > rates[1] > rates[2] and rates[2] == pytest.approx(3e-5)
    assert read_metadata(full.checkpoint)["training"]["schedule"] == "cosine"
    cancel = threading.Event()  # stopped in epoch 3, then resumed: the same schedule to the end

    def progress(p):
        if p.epoch == 3:
            cancel.set()

    train(config(lesions, tmp_path / "part", epochs=3, lr=3e-3, schedule="cosine"), progress=progress, cancel=cancel)
    resumed = train(config(lesions, tmp_path / "part", epochs=3, lr=3e-3, schedule="cosine"), resume=True)
    assert [h["lr"] for h in resumed.history] == pytest.approx(rates)
    assert resumed.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"], rel=1e-4)
    with pytest.raises(ValueError, match="schedule"):
        train(config(lesions, tmp_path / "bad", schedule="linear"))


def test_a_cosine_run_resumed_for_more_epochs_says_its_rate_rises_again(lesions, tmp_path, caplog):
    """A cosine run resumed with a larger --epochs jumped from its last rate (1e-5) back to about
    5e-4 without a word."""
    train(config(lesions, tmp_path / "run", epochs=2, lr=3e-3, schedule="cosine"))
    with caplog.at_level("WARNING", logger="napari_medspike"):
        resumed = train(config(lesions, tmp_path / "run", epochs=4, lr=3e-3, schedule="cosine"), resume=True)
    assert resumed.history[2]["lr"] > resumed.history[1]["lr"]  # what it says
    assert any("stretched from 2 to 4 epochs" in r.getMessage() for r in caplog.records)


def test_atomic_write_through_a_symbolic_link_replaces_the_file_it_points_to(tmp_path):
    """The link was replaced by a file, and the file it pointed to kept its old contents."""
    (tmp_path / "real.csv").write_text("old")
    (tmp_path / "link.csv").symlink_to(tmp_path / "real.csv")
    atomic_write(tmp_path / "link.csv", lambda tmp: tmp.write_text("new"))
    assert (tmp_path / "link.csv").is_symlink() and (tmp_path / "real.csv").read_text() == "new"


def test_a_fine_tunes_card_names_replayed_data_a_time_limit_and_unchanged_weights(lesions, tmp_path, monkeypatch):
    """The card said "Training data: ph2s" for a run that replayed Kvasir-SEG images, "1 epoch"
    for a run its time limit stopped after 1 of 6, and "Fine-tuned from default" for weights
    that were the start's."""
    import shutil

    from napari_medspike.engine import trainer

    other = tmp_path / "other-data"
    shutil.copytree(lesions, other)
    start = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "start.safetensors", input_size=32)
    clock = iter(range(0, 10_000, 60))  # every call of the trainer's clock a minute later
    monkeypatch.setattr(trainer.time, "time", lambda: float(next(clock)))
    real = trainer.validate
    monkeypatch.setattr(trainer, "validate", lambda *a, **k: {**real(*a, **k), "val_dice": 0.5})  # nothing beats the start
    result = finetune(start, lesions, tmp_path / "tuned.safetensors", epochs=6, lr=1e-3, device="cpu",
                      replay=other, replay_samples=3, minutes=1, keep_unimproved=True, route=False)
    assert result.time_limited and not result.improved
    training = read_metadata(result.checkpoint)["training"]
    assert training["replay"] == {"data": [str(other)], "images": 3}
    card = result.checkpoint.with_suffix(".md").read_text()
    assert "replayed against forgetting: 3 images of other-data" in card
    assert f"stopped by its 1-minute limit after {len(result.history)} of 6 epochs" in card
    assert "No epoch beat the starting weights on the held-out corrections: these are start's weights." in card



def test_a_run_resumed_past_its_time_limit_no_longer_says_it_was_stopped(lesions, tmp_path, monkeypatch):
    from napari_medspike.engine import trainer

    clock = iter(range(0, 100_000, 60))  # every call of the trainer's clock a minute later
    monkeypatch.setattr(trainer.time, "time", lambda: float(next(clock)))
    first = train(config(lesions, tmp_path / "run", epochs=3, max_minutes=1))
    card = lambda: (tmp_path / "run" / "best.md").read_text()  # noqa: E731
    assert len(first.history) < 3 and "-minute limit after" in card()
    monkeypatch.undo()
    resumed = train(config(lesions, tmp_path / "run", epochs=3), resume=True)
    assert len(resumed.history) == 3 and "limit after" not in card()
