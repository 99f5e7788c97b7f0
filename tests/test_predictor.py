"""Prediction: resize and tiled modes, blending, progress, cancel, device choice, segment()."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch

from napari_medspike import create_model, load_model, save_checkpoint, segment
from napari_medspike.inference.predictor import (
    Cancelled,
    flip_averaged_logits,
    pick_device,
    predict,
    predict_steps,
    tile_starts,
)
from napari_medspike.models.base import Segmenter
from napari_medspike.data.io import box_shrink

TINY = {"widths": (8, 16, 32, 64)}


class ConstantLogit(Segmenter):
    """A stand-in network whose logit is 0.7 at every pixel (tests blending, not learning)."""

    arch = "constant"

    def __init__(self):
        super().__init__(3)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    @property
    def config(self):
        return {}

    def attention_modules(self):
        return []

    def _forward(self, x):
        return torch.full_like(x[:, :1], 0.7)


def test_tiled_equals_whole_image_when_one_tile_covers_it():
    model = create_model("medqkformer", **TINY).eval()
    image = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    whole = predict(model, image, mode="resize", tile_size=64)
    tiled = predict(model, image, mode="tiled", tile_size=64)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_tiles_blend_to_a_seamless_map():
    image = np.random.default_rng(1).random((150, 230, 3)).astype(np.float32)
    prob = predict(ConstantLogit(), image, mode="tiled", tile_size=64, overlap=0.25)
    assert prob.shape == (150, 230)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-0.7)), rtol=1e-5)

    class Ramp(ConstantLogit):  # an answer that depends on where in its tile a pixel lies
        def _forward(self, x):
            return torch.linspace(-2, 2, x.shape[-1]).expand_as(x[:, :1]).clone()

    # a constant answer cannot show a seam; this one jumps at tile borders unless the tiles taper
    # into each other (untapered: steps of 0.30 between neighbouring pixels; tapered: 0.05)
    ramp = predict(Ramp(), np.zeros((64, 230, 3), np.float32), mode="tiled", tile_size=64, overlap=0.25, flips=False)
    assert np.abs(np.diff(ramp, axis=1)).max() < 0.1


def test_tile_starts_cover_the_image():
    for length in (64, 65, 100, 257):
        starts = tile_starts(length, 64, 48)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + 64] = True
        assert covered.all() and starts[-1] + 64 == max(length, 64)


def test_progress_and_cancel():
    image = np.random.default_rng(2).random((200, 200, 3)).astype(np.float32)
    events = list(predict_steps(ConstantLogit(), image, mode="tiled", tile_size=64, batch_size=2))
    assert events[-1].done == events[-1].total > 1
    cancel = threading.Event()

    def stop_after_first(event):
        if event.done >= 2:
            cancel.set()

    with pytest.raises(Cancelled):
        predict(ConstantLogit(), image, mode="tiled", tile_size=64, batch_size=2, progress=stop_after_first, cancel=cancel)
    # on a CPU the tiles go one at a time by default: a cancel waits for one tile, not four
    steps = [e.done for e in predict_steps(ConstantLogit(), image, mode="tiled", tile_size=64, device="cpu")]
    assert steps == list(range(steps[-1] + 1)) and steps[-1] > 4


def test_segment_accepts_grey_and_rgba_and_checks_threshold(tmp_path):
    ckpt = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "m.safetensors", input_size=32)
    for image in (np.zeros((40, 50), np.uint8), np.zeros((40, 50, 4), np.uint16)):
        prob, mask = segment(image, ckpt, device="cpu")
        assert prob.shape == mask.shape == (40, 50) and set(np.unique(mask)) <= {0, 1}
    with pytest.raises(ValueError, match="threshold"):
        segment(np.zeros((40, 50)), ckpt, threshold=1.5)


def test_pick_device_falls_back_honestly():
    device, note = pick_device("auto")
    assert device.type in ("cpu", "cuda", "mps") and note
    if not torch.cuda.is_available():
        device, note = pick_device("cuda")
        assert device.type == "cpu" and "not available" in note
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu")


def test_mirror_tta_is_exactly_flip_equivariant():
    torch.manual_seed(0)
    model = create_model("medqkformer", **TINY).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        for dims in ((-1,), (-2,)):
            plain, plain_flipped = model(x), model(x.flip(dims)).flip(dims)
            assert not torch.allclose(plain, plain_flipped, atol=1e-3)  # the network alone is not
            tta = flip_averaged_logits(model, x)
            torch.testing.assert_close(flip_averaged_logits(model, x.flip(dims)).flip(dims), tta, atol=1e-5, rtol=0)
        torch.testing.assert_close(flip_averaged_logits(model, x, flips=False), plain)


def test_flips_follow_the_checkpoint_unless_told(tmp_path):
    net = create_model("medqkformer", **TINY)
    image = np.random.default_rng(2).random((40, 50, 3)).astype(np.float32)
    plain = save_checkpoint(net, tmp_path / "plain.safetensors", input_size=32)
    tta = save_checkpoint(net, tmp_path / "tta.safetensors", input_size=32, inference={"flips": True})
    off, on = (predict(load_model(plain), image, flips=f) for f in (False, True))
    assert not np.allclose(off, on, atol=1e-4)
    np.testing.assert_allclose(predict(load_model(plain), image), off, atol=1e-6)
    np.testing.assert_allclose(predict(load_model(tta), image), on, atol=1e-6)
    np.testing.assert_allclose(segment(image, tta, flips=False, device="cpu")[0], off, atol=1e-6)


def test_prediction_leaves_the_models_mode_and_no_membranes_behind():
    """A training loop that predicts to watch its progress keeps train mode; and no neuron keeps
    its membrane (as large as the activations) in memory after a call."""
    model = create_model("medspikeformer", timesteps=2, **TINY)
    model.train()
    predict(model, np.zeros((40, 50, 3), np.uint8))
    assert model.training
    model.eval()
    predict(model, np.zeros((40, 50, 3), np.uint8))
    assert not model.training
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    held = [name for name, m in model.named_modules() if isinstance(getattr(m, "v", None), torch.Tensor)]
    assert not held, held


def test_a_batch_of_another_dtype_is_refused_with_the_fix():
    from napari_medspike.models.base import InputError

    model = create_model("medqkformer", **TINY).eval()
    with pytest.raises(InputError, match=r"float64.*x.to\(torch.float32\)"):
        model(torch.rand(1, 3, 32, 32, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast mixes dtypes on purpose
        assert model(torch.rand(1, 3, 32, 32).bfloat16()).shape == (1, 1, 32, 32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the fallback on a machine without CUDA")
def test_a_gpu_that_is_not_there_falls_back_to_the_cpu_and_says_so(caplog, tmp_path):
    """predict() and segment() take device names as the CLI and the dock do ("auto", "cuda"):
    before, predict raised torch's "Torch not compiled with CUDA enabled" and segment fell back
    without a word."""
    image = np.zeros((40, 50, 3), np.uint8)
    model = create_model("medqkformer", **TINY)
    assert predict(model, image, device="auto").shape == (40, 50)
    with caplog.at_level("WARNING"):
        assert predict(model, image, device="cuda").shape == (40, 50)
    assert "CUDA requested but not available" in caplog.text
    with pytest.warns(RuntimeWarning, match="CUDA requested but not available"):
        segment(image, model=model, device="cuda")
    with pytest.warns(RuntimeWarning, match="CUDA requested but not available"):  # a torch.device too
        segment(image, model=model, device=torch.device("cuda"))
    with caplog.at_level("WARNING"):
        assert predict(model, image, device=torch.device("cuda:0")).shape == (40, 50)
    path = save_checkpoint(model, tmp_path / "m.safetensors", input_size=32)
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert load_model(path, device="cuda").device.type == "cpu"
    assert "CUDA requested but not available" in caplog.text
    assert load_model(path, device="auto").device.type == "cpu"


def test_segment_loads_a_model_given_by_path_once_until_its_file_changes(tmp_path):
    from napari_medspike.inference import segment as segment_module

    path = save_checkpoint(create_model("medqkformer", **TINY), tmp_path / "m.safetensors", input_size=32)
    image = np.zeros((40, 50, 3), np.uint8)
    segment_module._loaded.cache_clear()
    segment(image, model=path)
    segment(image, model=str(path))
    assert segment_module._loaded.cache_info().misses == 1  # the second call reused it
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # the file changes
    segment(image, model=path)
    assert segment_module._loaded.cache_info().misses == 2


@pytest.mark.parametrize("shape, hint", [
    ((2, 40, 50, 3), "stack of images"),  # a video's frames: a false "squeezed" warning came first
    ((6, 40, 50), "stack of images"),
    ((120,), ""),  # a bare IndexError before
])
def test_an_array_that_is_no_2d_image_is_refused_before_any_work(caplog, shape, hint):
    from napari_medspike.data.io import ImageReadError

    model = create_model("medqkformer", **TINY)
    with caplog.at_level("WARNING"), pytest.raises(ImageReadError, match=r"expected a 2D grey, RGB or RGBA image") as err:
        segment(np.zeros(shape, np.uint8), model=model)
    assert hint in str(err.value) and str(shape) in str(err.value)
    assert not caplog.records, caplog.text



class RedLogit(ConstantLogit):
    """A stand-in network whose logit is positive exactly where the image is red (tests geometry)."""

    default_input_size = 32

    def _forward(self, x):
        return (x[:, :1] - 0.5) * 40.0


@pytest.mark.parametrize("side", [1100, 1088])  # boxes of 17 pixels: 12 left over, and none
def test_a_large_images_mask_lies_where_its_object_is_in_resize_mode(side):
    """A large image is box-averaged before the resize; the last partial boxes are dropped, and
    the map was stretched back over the whole image: edges drifted by up to the box width."""
    model = RedLogit()
    edge = side - 300
    image = np.zeros((side, side, 3), np.uint8)
    image[:, edge:, 0] = 255
    image[edge:, :, 0] = 255
    mask = predict(model, image, mode="resize", flips=False) >= 0.5
    shrink = box_shrink(side, side, 32)
    assert shrink == 17
    col, row = int(np.argmax(mask[side // 4])), int(np.argmax(mask[:, side // 4]))
    # within one model pixel's reach of the true edge, and not drifted towards the far side
    assert abs(col - edge) <= shrink and abs(row - edge) <= shrink, (col, row, edge)
    assert abs(col - edge) <= 4 and abs(row - edge) <= 4, (col, row, edge)


def test_an_array_taken_as_channels_first_says_so_and_a_stack_of_frames_is_pointed_elsewhere(caplog):
    """Three grey frames [3, H, W] were segmented as one colour picture without a word."""
    import logging

    model = ConstantLogit()
    frames = np.random.default_rng(0).random((3, 40, 50)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        prob = predict(model, frames, flips=False)
    assert prob.shape == (40, 50)  # one picture, as documented
    assert "taken as one RGB image with its channels first" in caplog.text and "one by one" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        predict(model, np.moveaxis(frames, 0, -1), flips=False)  # channels last: nothing to say
    assert "channels first" not in caplog.text


def test_every_input_the_api_refuses_is_an_input_error():
    """segment() refused NaN images and stacks with an ImageReadError that `except InputError`,
    as the README advises, did not catch."""
    import napari_medspike
    from napari_medspike import ImageReadError, InputError

    model = ConstantLogit()
    for bad in (np.full((40, 40), np.nan, np.float32), np.zeros((5, 40, 40), np.float32)):
        with pytest.raises(InputError) as caught:
            segment(bad, model)
        assert isinstance(caught.value, ImageReadError) and isinstance(caught.value, ValueError)
    assert "ImageReadError" in napari_medspike.__all__


def test_the_frames_of_a_16_bit_stack_are_scaled_alike():
    """Each frame was scaled by its own maximum: one saturated pixel darkened its whole frame
    (three identical 12-bit frames gave masks of 14297, 3092 and 14297 pixels)."""
    from napari_medspike.common import run_job
    from napari_medspike.inference.predictor import predict_stack_steps

    class Brightness(ConstantLogit):  # a "model" whose logit is the input's brightness: what it was given
        def _forward(self, x):
            return (x.mean(dim=1, keepdim=True) - 0.25) * 20

    frame = (np.random.default_rng(3).random((40, 48)) * 4095).astype(np.uint16)
    frames = np.stack([frame, frame, frame])
    frames[1, 0, 0] = 65535  # one hot pixel
    prob = run_job(predict_stack_steps(Brightness().eval(), frames, flips=False), None)
    np.testing.assert_allclose(prob[0], prob[2])
    # the hot pixel's frame as bright as the others, apart from that pixel's surroundings
    assert np.abs(prob[1] - prob[0])[8:, 8:].max() < 1e-4
    # a range given (the docks pass napari's contrast limits) is used as it is
    shown = run_job(predict_stack_steps(Brightness().eval(), frames, flips=False, value_range=(0, 4095)), None)
    assert shown[0].mean() > prob[0].mean()


def test_a_16_bit_rgba_stack_is_scaled_by_its_colours_not_its_alpha():
    from napari_medspike.common import run_job
    from napari_medspike.inference.predictor import predict_stack_steps

    class Brightness(ConstantLogit):
        def _forward(self, x):
            return (x.mean(dim=1, keepdim=True) - 0.5) * 20

    frames = np.zeros((2, 32, 40, 4), np.uint16)
    frames[..., :3], frames[..., 3] = 4000, 65535  # bright pixels, opaque
    prob = run_job(predict_stack_steps(Brightness().eval(), frames, rgb=True, flips=False), None)
    assert prob.min() > 0.99  # (scaled by the alpha's 65535, the colours came in at 0.06: dark)
