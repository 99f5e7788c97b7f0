"""Routing between a model and its fine-tuned copy: the gate, the routed model, and fine-tuning
that keeps the starting model for its own kind of image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import io

from lesions import write_lesion_pairs
from napari_medspike import create_model, load_model, save_checkpoint
from napari_medspike.data.dataset import find_pairs
from napari_medspike.data.synthetic import synthetic_lesion
from napari_medspike.engine.checkpoint import read_metadata
from napari_medspike.engine.finetune import finetune
from napari_medspike.engine.routing import (DOMAIN_SAMPLES, check_gate, domain_record, image_styles,
                                            recorded_styles, routed_model)
from napari_medspike.models.routed import RoutedSegmenter, style_feature_dim

TINY = {"widths": [8, 16, 32, 64]}


def lesion(seed: int, inverted: bool = False) -> np.ndarray:
    """A synthetic reddish lesion image, or its colour negative (another kind of image)."""
    image = synthetic_lesion((48, 64), seed=seed)[0]
    return 255 - image if inverted else image


def write_inverted_pairs(root, seeds):
    write_lesion_pairs(root, seeds, stem="n{:03d}")
    for path in (root / "images").glob("*.png"):
        io.imsave(path, 255 - io.imread(path), check_contrast=False)
    return root


@pytest.fixture
def start_file(tmp_path, calibrated):
    """A small model saved at input size 32 with a domain record of 24 reddish lesion images."""
    model = calibrated("medqkformer", size=(32, 32), **TINY)
    path = save_checkpoint(model, tmp_path / "start.safetensors", input_size=32)
    model = load_model(path)
    record = domain_record(model, [lesion(s) for s in range(24)], source="synthetic lesions")
    return save_checkpoint(model, path, **{**model.info.record(), "domain": record})


def test_gate_check_separates_two_kinds_and_refuses_one_kind():
    g = torch.Generator().manual_seed(0)
    start = torch.randn(64, 16, generator=g)
    same = torch.randn(20, 16, generator=g)
    other = torch.randn(20, 16, generator=g) + 3.0
    fit = check_gate(start, other)
    assert fit.separates and fit.start_misrouted == 0.0 and fit.new_routed == 1.0
    assert not check_gate(start, same).separates
    assert not check_gate(start, other[:1]).separates  # one correction: nothing to check it on


def test_domain_record_keeps_a_seeded_sample_of_style_vectors(start_file):
    model = load_model(start_file)
    record = read_metadata(start_file)["domain"]
    styles = recorded_styles(record and {"domain": record}, style_feature_dim(model))
    assert styles.shape == (24, 2 * TINY["widths"][0])
    fresh = image_styles(model, [lesion(s) for s in range(24)])
    assert torch.allclose(styles, fresh, rtol=1e-3, atol=1e-4)
    assert recorded_styles({"domain": {"styles": [[1.0, 2.0]]}}, 16) is None  # wrong length: ignored
    many = domain_record(model, [lesion(s % 3) for s in range(DOMAIN_SAMPLES + 5)], source="x")
    assert many["images"] == DOMAIN_SAMPLES


def test_routed_model_answers_each_image_with_the_expert_of_its_kind(start_file):
    start = load_model(start_file)
    other = create_model("medqkformer", **TINY).eval()  # a different "fine-tuned" expert
    kinds = [lesion(s) for s in range(20)], [lesion(s, inverted=True) for s in range(20)]
    routed = routed_model(start, other, image_styles(start, kinds[0]), image_styles(start, kinds[1]))
    x = torch.stack([torch.from_numpy(lesion(s, inverted=bool(s % 2))).permute(2, 0, 1).float() / 255
                     for s in range(30, 36)])
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True)
    want = torch.tensor([bool(s % 2) for s in range(30, 36)])
    assert torch.equal(routed.route(x), want)
    with torch.no_grad():
        out = routed(x)
        expected = torch.where(want[:, None, None, None], other(x), start(x))
    assert torch.allclose(out, expected, atol=1e-5)
    assert not torch.allclose(start(x), other(x), atol=1e-3)  # the experts really differ
    inside = routed.forward_intermediates(x)
    assert torch.equal(inside["routes"], want)
    assert torch.allclose(inside["logits"], expected, atol=1e-5)
    single = start.forward_intermediates(x[:1])
    assert torch.allclose(inside["stages"][0]["spikes"]["q"][:, :1], single["stages"][0]["spikes"]["q"], atol=1e-5)


def test_tiled_prediction_sends_every_tile_to_the_expert_chosen_for_the_whole_image(start_file):
    from napari_medspike.inference.predictor import _to_batch, predict
    from napari_medspike.data.resize import resize_image

    start = load_model(start_file)
    other = create_model("medqkformer", **TINY).eval()
    kinds = [lesion(s) for s in range(20)], [lesion(s, inverted=True) for s in range(20)]
    routed = routed_model(start, other, image_styles(start, kinds[0]), image_styles(start, kinds[1]))
    # mostly the start's kind of image, with a strip of the other kind on its right
    image = np.concatenate([lesion(50), lesion(51), lesion(52, inverted=True)[:, :40]], axis=1)
    whole = resize_image(_to_batch(image[None].astype(np.float32) / 255, torch.device("cpu")), 32)
    chosen = routed.expert_for(whole)
    assert chosen is routed.experts[0]
    tiles = torch.stack([torch.from_numpy(image[:32, x : x + 32].astype(np.float32) / 255).permute(2, 0, 1)
                         for x in range(0, image.shape[1] - 31, 24)])
    assert routed.route(tiles).any() and not routed.route(tiles).all()  # tiles alone would mix experts
    got = predict(routed, image, mode="tiled", flips=False)
    np.testing.assert_allclose(got, predict(chosen, image, mode="tiled", tile_size=32, flips=False), atol=1e-6)
    assert not np.allclose(got, predict(routed.experts[1], image, mode="tiled", tile_size=32, flips=False), atol=1e-3)
    with pytest.raises(ValueError, match="one image"):
        routed.expert_for(tiles)


def test_routed_checkpoint_round_trip(tmp_path, start_file):
    start = load_model(start_file)
    styles = image_styles(start, [lesion(s) for s in range(10)]), image_styles(start, [lesion(s, True) for s in range(10)])
    routed = routed_model(start, create_model("medqkformer", **TINY), *styles)
    path = save_checkpoint(routed, tmp_path / "routed.safetensors", input_size=32)
    again = load_model(path)
    assert isinstance(again, RoutedSegmenter) and again.expert_arch == "medqkformer"
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), routed(x))
    with pytest.raises(ValueError, match="routed"):
        RoutedSegmenter("routed", {})


def test_fine_tuning_on_another_kind_keeps_the_start_model_for_its_own(tmp_path, start_file):
    corrections = write_inverted_pairs(tmp_path / "negatives", range(10))
    result = finetune(start_file, corrections, tmp_path / "tuned.safetensors", epochs=2, device="cpu")
    assert result.routed and "starting model is kept" in result.describe()
    tuned = load_model(result.checkpoint)
    assert isinstance(tuned, RoutedSegmenter)
    meta = read_metadata(result.checkpoint)
    assert meta["routing"]["corrections"] == 10 and meta["routing"]["start"] == "start"
    assert meta["domain"] == read_metadata(start_file)["domain"]
    start = load_model(start_file)
    for s in range(40, 44):  # the start's kind: exactly the start model's answer
        x = torch.from_numpy(lesion(s)).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            assert torch.equal(tuned(x), start(x))
    x = torch.from_numpy(lesion(40, inverted=True)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        assert torch.allclose(tuned(x), tuned.experts[1](x), atol=1e-5)
        assert not torch.allclose(tuned(x), start(x), atol=1e-4)
    assert "Routed" in result.checkpoint.with_suffix(".md").read_text()

    # fine-tuning the routed model again trains its fine-tuned expert and keeps the first
    again = finetune(result.checkpoint, corrections, tmp_path / "again.safetensors", epochs=1, device="cpu")
    twice = load_model(again.checkpoint)
    assert again.routed and read_metadata(again.checkpoint)["routing"]["start"] == "start"
    for a, b in zip(twice.experts[0].state_dict().values(), start.state_dict().values()):
        assert torch.equal(a, b)


def test_fine_tuning_a_routed_model_on_its_first_kind_trains_that_expert_and_keeps_the_other(tmp_path, start_file):
    negatives = write_inverted_pairs(tmp_path / "negatives", range(10))
    first = finetune(start_file, negatives, tmp_path / "routed.safetensors", epochs=2, device="cpu")
    assert first.routed
    before = load_model(first.checkpoint)
    # new corrections of the start's own kind (reddish lesions): the gate sends them to expert 0
    same = write_lesion_pairs(tmp_path / "same", range(100, 110), stem="s{:03d}")
    again = finetune(first.checkpoint, same, tmp_path / "again.safetensors", epochs=2, lr=1e-3, device="cpu")
    assert again.routed and "fine-tuned before is kept" in again.describe()
    after = load_model(again.checkpoint)
    assert isinstance(after, RoutedSegmenter)
    for a, b in zip(after.experts[1].state_dict().values(), before.experts[1].state_dict().values()):
        assert torch.equal(a, b)  # the dermoscopy-like copy is untouched
    for name in ("mean0", "var0", "mean1", "var1"):
        assert torch.equal(getattr(after.gate, name), getattr(before.gate, name))
    changed = {k for k, v in after.experts[0].state_dict().items() if not torch.equal(v, before.experts[0].state_dict()[k])}
    assert changed and not any(k.startswith("stages.0.") for k in changed)  # the gate's stage is kept
    x = torch.stack([torch.from_numpy(lesion(s, inverted=bool(s % 2))).permute(2, 0, 1).float() / 255
                     for s in range(70, 76)])
    assert torch.equal(after.route(x), before.route(x))  # so every image goes where it went
    meta = read_metadata(again.checkpoint)
    assert meta["domain"] == read_metadata(start_file)["domain"] and "first_expert" in meta["routing"]
    assert "fine-tuned on corrections like its own kind" in again.checkpoint.with_suffix(".md").read_text()
    x = torch.from_numpy(lesion(60, inverted=True)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():  # the other kind is still answered by the copy fine-tuned before
        assert torch.equal(after(x), before.experts[1](x))


def test_fine_tuning_on_the_same_kind_or_without_routing_gives_a_plain_model(tmp_path, start_file):
    same = write_lesion_pairs(tmp_path / "same", range(100, 110), stem="s{:03d}")
    result = finetune(start_file, same, tmp_path / "same.safetensors", epochs=1, device="cpu")
    assert not result.routed and load_model(result.checkpoint).arch == "medqkformer"
    assert read_metadata(result.checkpoint)["domain"]["images"] == 10  # the corrections, for next time
    assert "style vectors of 10 corrections" in result.checkpoint.with_suffix(".md").read_text()
    negatives = write_inverted_pairs(tmp_path / "negatives", range(10))
    plain = finetune(start_file, negatives, tmp_path / "plain.safetensors", epochs=1, route=False, device="cpu")
    assert not plain.routed and load_model(plain.checkpoint).arch == "medqkformer"


def test_shipped_default_gate_tells_dermoscopy_from_its_polyps(shared_data):
    """On real images: the default's record (Kvasir-SEG training images) against 10 PH2 images;
    PH2 images it did not fit on go to the fine-tuned expert, Kvasir-SEG validation images not."""
    default = load_model("default")
    styles = recorded_styles(default.info.to_metadata(), style_feature_dim(default))
    assert styles is not None and len(styles) == DOMAIN_SAMPLES
    ph2 = find_pairs(shared_data / "ph2")[0]
    kvasir = {p.key: p for p in find_pairs(shared_data / "kvasir-seg")[0]}
    val = [kvasir[k] for k in default.info.training["val_keys"][:20]]
    new = image_styles(default, [p.image for p in ph2[:10]])
    assert check_gate(styles, new).separates
    routed = routed_model(default, default, styles, new)
    assert routed.routes(image_styles(default, [p.image for p in ph2[10:30]])).float().mean() >= 0.9
    assert not routed.routes(image_styles(default, [p.image for p in val])).any()


def test_a_spiking_model_can_be_routed(calibrated):
    """MedSpikeFormer's stages return (output, side features) over T timesteps: the gate reads
    the output's style averaged over time, and the routed model keeps the experts' timesteps."""
    snn = calibrated("medspikeformer", size=(32, 32), timesteps=2, **TINY)
    images = [lesion(s) for s in range(6)], [lesion(s, inverted=True) for s in range(6)]
    styles = image_styles(snn, images[0]), image_styles(snn, images[1])
    assert styles[0].shape == (6, style_feature_dim(snn))
    routed = routed_model(snn, snn, *styles)
    assert routed.timesteps == 2 and routed.spiking
    x = torch.rand(2, 3, 32, 32)
    inside = routed.forward_intermediates(x)
    assert inside["stages"][0]["spikes"]["q"].shape[0] == 2 and inside["firing_rates"]


def test_a_routed_model_is_not_trained_from_scratch(tmp_path):
    from napari_medspike.engine.config import TrainConfig
    from napari_medspike.engine.trainer import train

    data = write_lesion_pairs(tmp_path / "d", range(4))
    with pytest.raises(ValueError, match="fine-tuning makes routed models"):
        train(TrainConfig(data=[str(data)], out_dir=str(tmp_path / "run"), arch="routed", size=32, epochs=1,
                          device="cpu"))


def test_energy_of_a_routed_model_counts_the_experts_that_ran(start_file):
    from napari_medspike.analysis.energy import estimate_energy

    start = load_model(start_file)
    styles = image_styles(start, [lesion(s) for s in range(10)]), image_styles(start, [lesion(s, True) for s in range(10)])
    routed = routed_model(start, create_model("medqkformer", **TINY), *styles)
    own = torch.from_numpy(lesion(50)).permute(2, 0, 1)[None].float() / 255
    other = torch.from_numpy(lesion(50, inverted=True)).permute(2, 0, 1)[None].float() / 255
    alone = estimate_energy(start, own)
    kept = estimate_energy(routed, own)  # the gate's first stage, then the start model answers
    both = estimate_energy(routed, other)  # the gate's first stage, then the fine-tuned copy
    assert alone.energy_pj < kept.energy_pj < 1.6 * alone.energy_pj  # one first stage more, not a pass
    assert alone.energy_pj < both.energy_pj < 1.6 * alone.energy_pj
    assert len(both.stage_firing_rates) == 4


def test_the_inspector_says_which_expert_answered(start_file):
    from napari_medspike.analysis.maps import inspect_stage

    start = load_model(start_file)
    styles = image_styles(start, [lesion(s) for s in range(10)]), image_styles(start, [lesion(s, True) for s in range(10)])
    routed = routed_model(start, create_model("medqkformer", **TINY), *styles)
    assert inspect_stage(routed, lesion(60, inverted=True), 0, spike="q").expert == "the fine-tuned copy"
    assert inspect_stage(routed, lesion(60), 0, spike="q").expert == "the starting model"
    assert inspect_stage(start, lesion(60), 0, spike="q").expert is None


def test_a_float16_start_is_kept_in_float16_without_loss(tmp_path, start_file):
    from safetensors import safe_open

    model = load_model(start_file)
    half_start = save_checkpoint(model, tmp_path / "half.safetensors", half=True,
                                 **{**model.info.record(), "domain": read_metadata(start_file)["domain"]})
    corrections = write_inverted_pairs(tmp_path / "negatives", range(10))
    result = finetune(half_start, corrections, tmp_path / "tuned.safetensors", epochs=1, device="cpu")
    assert result.routed
    with safe_open(str(result.checkpoint), framework="pt") as f:
        dtypes = {name: f.get_slice(name).get_dtype() for name in f.keys()}
    assert dtypes["experts.0.head.weight"] == "F16" and dtypes["experts.1.head.weight"] == "F32"
    start = load_model(half_start)
    for a, b in zip(load_model(result.checkpoint).experts[0].state_dict().values(), start.state_dict().values()):
        assert torch.equal(a, b)


def test_styles_leave_out_unreadable_files_only_when_asked(tmp_path, start_file):
    from napari_medspike.data.io import ImageReadError

    model = load_model(start_file)
    good = tmp_path / "good.png"
    io.imsave(good, lesion(1), check_contrast=False)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ImageReadError):
        image_styles(model, [good, broken])
    styles = image_styles(model, [good, broken, good], skip_unreadable=True)
    assert styles.shape[0] == 2 and torch.allclose(styles[0], image_styles(model, [good])[0])
    assert domain_record(model, [broken, good], source="x")["images"] == 1


def test_a_model_says_where_its_weights_are():
    model = create_model("medqkformer", **TINY)
    assert model.device == torch.device("cpu")
    assert model.to("meta").device == torch.device("meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_inspect_and_fine_tune_after_segmenting_on_a_gpu(tmp_path, start_file):
    """Segment moves the plugin's shared model to the GPU; inspecting it and fine-tuning from it
    (styles for the gate, a routed start) must still work."""
    from napari_medspike.analysis.maps import inspect_steps
    from napari_medspike.common import run_job
    from napari_medspike.inference.predictor import predict

    start = load_model(start_file)
    predict(start, lesion(50), device="cuda")
    assert start.device.type == "cuda"
    maps, report = run_job(inspect_steps(start, lesion(50), 0, spike="q"))
    assert maps.firing_rate.size and report.energy_pj > 0
    corrections = write_inverted_pairs(tmp_path / "negatives", range(8))
    first = finetune(start, corrections, tmp_path / "tuned.safetensors", epochs=1, device="cuda")
    assert first.routed
    routed = load_model(first.checkpoint)
    predict(routed, lesion(51), device="cuda")
    again = finetune(routed, corrections, tmp_path / "again.safetensors", epochs=1, device="cuda")
    assert again.routed


def test_style_extraction_does_not_stop_another_threads_prediction():
    """Segment pressed while a fine-tune measures image styles on the same model: the hook that
    ends the style pass early must leave the other thread's pass alone (it failed with an empty
    "StyleFound" error)."""
    import threading

    from napari_medspike.inference.predictor import predict
    from napari_medspike.models.routed import style_features

    model = create_model("medqkformer", **TINY).eval()
    image = lesion(1)
    errors: list[BaseException] = []

    def segment_meanwhile() -> None:
        try:
            predict(model, image)
        except BaseException as err:  # noqa: BLE001 (what the test looks for)
            errors.append(err)

    with style_features(model, stop=True) as found:
        other = threading.Thread(target=segment_meanwhile)
        other.start()
        other.join(timeout=60)
    assert not other.is_alive() and not errors, errors
    assert found == []  # the other thread's pass added no style of its own
