"""Reading images and masks in every supported format, pairing folders, splits, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage import io

from napari_medspike.data.dataset import CachedPairs, find_pairs, split_pairs
from napari_medspike.data.io import ImageReadError, read_image, read_mask
from napari_medspike.data.resize import resize_mask


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, array)
    else:
        io.imsave(path, array, check_contrast=False)
    return path


FORMATS = [(s, c) for s in (".png", ".jpg", ".bmp", ".tif") for c in (1, 3, 4) if not (s in (".jpg", ".bmp") and c == 4)]


@pytest.mark.parametrize("suffix, channels", FORMATS)
def test_read_image_formats(tmp_path, suffix, channels):
    rng = np.random.default_rng(0)
    shape = (20, 30) if channels == 1 else (20, 30, channels)
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    image = read_image(_save(tmp_path / f"x{suffix}", array))
    assert image.shape == (20, 30, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    if suffix != ".jpg":  # lossless: exact values
        expected = array if channels == 1 else array[..., 0]
        np.testing.assert_allclose(image[..., 0], expected / 255.0, atol=1e-6)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_read_16_bit(tmp_path, suffix):
    array = np.linspace(0, 4095, 600, dtype=np.uint16).reshape(20, 30)  # 12-bit camera in 16 bits
    image = read_image(_save(tmp_path / f"x{suffix}", array))
    assert image.max() == pytest.approx(1.0) and image.min() == 0.0


def test_signed_images_keep_their_negative_values_apart():
    from napari_medspike.data.io import to_rgb_float

    grey = np.linspace(0, 255, 600).reshape(20, 30)
    signed = (8 * grey - 1024).astype(np.int16)  # e.g. a CT-like image: most values below 0
    image = to_rgb_float(signed)[..., 0]
    # mapped from its minimum to its maximum, as the same values in float are: nothing clipped to 0
    np.testing.assert_allclose(image, to_rgb_float(signed.astype(np.float32))[..., 0], atol=1e-6)
    assert image.min() == 0.0 and image.max() == pytest.approx(1.0) and (image == 0).sum() == 1
    with pytest.raises(ValueError, match="an empty image"):  # not an index error from deep inside
        to_rgb_float(np.zeros((5, 0, 3), np.uint8))
    # signed images without negative values are scaled by their maximum, like unsigned ones
    positive = (4 * grey).astype(np.int32)
    np.testing.assert_allclose(to_rgb_float(positive), to_rgb_float(positive.astype(np.uint16)), atol=1e-6)


# The mask rule (data.io.to_binary_mask): 0 is background, any value above 0 foreground; a
# mask without 0, such as 3/7, is all foreground (tests/test_reliability.py).
@pytest.mark.parametrize("values", [(0, 255), (0, 1), (0, 7)])
def test_masks_with_any_two_values(tmp_path, values):
    array = np.full((10, 12), values[0], np.uint8)
    array[2:5, 3:9] = values[1]
    mask = read_mask(_save(tmp_path / "m.png", array))
    assert mask.dtype == bool and mask.sum() == 18


def test_a_cut_out_mask_is_read_from_its_alpha(tmp_path, caplog):
    """White everywhere with the shape in alpha (a cut-out with a transparent background) was read
    as all foreground without a word; a mask with its shape in the colours keeps ignoring alpha."""
    shape = np.zeros((20, 30), np.uint8)
    shape[5:12, 8:20] = 255
    cut_out = np.dstack([np.full_like(shape, 255)] * 3 + [shape])
    grey_cut_out = np.dstack([np.full_like(shape, 255), shape])
    with caplog.at_level("WARNING"):
        for i, array in enumerate((cut_out, grey_cut_out)):
            path = _save(tmp_path / f"cut{i}.png", array)
            np.testing.assert_array_equal(read_mask(path), shape > 0)
    assert sum("alpha" in r.getMessage() for r in caplog.records) == 2
    coloured = np.dstack([shape] * 3 + [np.full_like(shape, 255)])  # opaque: the colours hold it
    np.testing.assert_array_equal(read_mask(_save(tmp_path / "opaque.png", coloured)), shape > 0)


def test_a_cmyk_jpeg_is_read_as_rgb(tmp_path):
    """Read as it is, a CMYK JPEG's ink channels were taken for RGBA: a colour-inverted picture."""
    from PIL import Image

    from napari_medspike.data.io import read_image

    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 60).astype(np.uint8)  # red rising left to right
    rgb[10:30, 20:40] = (30, 160, 90)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    read = read_image(tmp_path / "print.jpg")
    assert read.shape == (40, 60, 3)
    assert np.abs(read - rgb / 255).mean() < 0.02


def test_unreadable_and_3d_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="broken.png"):
        read_image(bad)
    stack = _save(tmp_path / "stack.tif", np.zeros((5, 20, 30), np.uint8))
    with pytest.raises(ImageReadError, match=r"stack.tif.*(shape|stack of 5 slices)"):
        read_image(stack)
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_a_tiff_of_two_channels_is_refused_but_grey_and_alpha_is_read(tmp_path):
    """An ImageJ two-channel image (axes CYX) was read as grey and alpha: its second channel,
    where the object was, was dropped without a word."""
    from napari_medspike.data.io import read_pixels

    channels = np.zeros((2, 20, 30), np.uint16)
    channels[1, 5:15, 5:15] = 4000
    tifffile.imwrite(tmp_path / "two.tif", channels, imagej=True, metadata={"axes": "CYX"})
    with pytest.raises(ImageReadError, match=r"two.tif: 2 channels \(axes CYX\).*a file of its own"):
        read_pixels(tmp_path / "two.tif")
    grey_alpha = np.dstack([np.full((20, 30), 90, np.uint8), np.full((20, 30), 255, np.uint8)])
    tifffile.imwrite(tmp_path / "la.tif", grey_alpha, photometric="minisblack", extrasamples=["unassalpha"])
    assert read_pixels(tmp_path / "la.tif").shape[:2] == (20, 30)


def make_folder(root: Path, n: int, size=(32, 40)) -> Path:
    rng = np.random.default_rng(1)
    for i in range(n):
        _save(root / "images" / f"s{i}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        mask = np.zeros(size, np.uint8)
        mask[4:20, 5 + i : 25] = 255
        _save(root / "masks" / f"s{i}.png", mask)
    return root


def test_bad_pairs_are_reported_and_the_rest_stays_usable(tmp_path):
    root = make_folder(tmp_path / "set", 5)
    _save(root / "images" / "nomask.png", np.zeros((32, 40, 3), np.uint8))
    _save(root / "images" / "wrongsize.png", np.zeros((32, 40, 3), np.uint8))
    _save(root / "masks" / "wrongsize.png", np.zeros((16, 16), np.uint8))
    (root / "images" / "garbage.jpg").write_bytes(b"\x00\x01")
    _save(root / "masks" / "garbage.png", np.zeros((32, 40), np.uint8))
    (root / "images" / "moved.png").symlink_to(tmp_path / "elsewhere" / "moved.png")  # its target gone
    _save(root / "masks" / "moved.png", np.zeros((32, 40), np.uint8))
    pairs, problems = find_pairs(root)
    assert any("nomask.png" in p and "no mask" in p for p in problems)
    assert any("moved.png" in p and "does not exist" in p for p in problems), problems
    assert any("masks/moved.png" in p and "without an image" in p for p in problems), problems
    assert len(pairs) == 7
    data = CachedPairs(pairs, size=32)
    assert len(data) == 5
    assert any("wrongsize" in p and "differs" in p for p in data.problems)
    assert any("garbage.jpg" in p for p in data.problems)
    x, y = data[0]
    assert x.shape == (3, 32, 32) and y.shape == (1, 32, 32) and set(y.unique().tolist()) <= {0.0, 1.0}


def test_soft_masks_hold_the_fraction_of_foreground_each_pixel_covers(tmp_path):
    root = tmp_path / "soft"
    _save(root / "images" / "a.png", np.zeros((90, 90, 3), np.uint8))
    truth = np.zeros((90, 90), np.uint8)
    truth[10:55, 20:71] = 255  # edges that fall inside the small pixels (90 / 32 = 2.8125)
    _save(root / "masks" / "a.png", truth)
    pairs, _ = find_pairs(root)
    hard = CachedPairs(pairs, size=32)[0][1]
    soft = CachedPairs(pairs, size=32, soft_masks=True)[0][1]
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    assert 0.0 <= float(soft.min()) and float(soft.max()) <= 1.0
    assert ((soft > 0.02) & (soft < 0.98)).sum() >= 40  # the outline is fractional
    assert float((soft == 1.0).sum()) > 0.0 and float(soft[0, 0, 0]) == 0.0
    area = (truth > 0).mean()
    assert abs(float(soft.mean()) - area) < abs(float(hard.mean()) - area)
    assert abs(float(soft.mean()) - area) < 0.005


def test_a_shrunk_mask_stays_on_its_image(tmp_path):
    """The training mask covers the object where the shrunk image shows it: PyTorch's plain
    nearest neighbour took each box's top-left pixel, half a pixel down and right of it."""
    root = tmp_path / "aligned"
    truth = np.zeros((120, 120), np.uint8)
    truth[30:90, 33:87] = 255
    _save(root / "images" / "a.png", np.repeat(truth[..., None], 3, axis=2))  # the object is the image
    _save(root / "masks" / "a.png", truth)
    image, mask = CachedPairs(find_pairs(root)[0], size=32)[0]

    def centroid(a) -> np.ndarray:
        a = np.asarray(a, np.float64)
        ys, xs = np.indices(a.shape)
        return np.array([(a * ys).sum(), (a * xs).sum()]) / a.sum()

    offset = centroid(mask[0]) - centroid(image[0])
    assert np.abs(offset).max() < 0.15, offset  # 0.5 px with the top-left pixel of each box


def test_a_large_16_bit_image_with_alpha_is_scaled_by_its_colours_as_in_training():
    """Resize mode box-averages large images first: it took their intensity range from all four
    channels, so an opaque alpha (65535) over 12-bit colours made the model's input 16 times darker
    than training's."""
    from napari_medspike.data.io import box_shrink, rgb_for_resize, to_rgb_float

    rng = np.random.default_rng(0)
    image = np.zeros((600, 700, 4), np.uint16)
    image[..., :3] = rng.integers(0, 4096, (600, 700, 3))
    image[..., 3] = 65535
    assert box_shrink(600, 700, 128) >= 2  # the box-averaged path
    trained = float(to_rgb_float(image).mean())
    assert float(rgb_for_resize(image, 128).mean()) == pytest.approx(trained, rel=1e-3)
    grey = image[..., [0, 3]]  # grey + alpha likewise
    assert float(rgb_for_resize(grey, 128).mean()) == pytest.approx(float(to_rgb_float(grey).mean()), rel=1e-3)


def test_training_sees_a_large_image_as_prediction_does(tmp_path):
    """Prediction box-averages a large image before the resize (over whole boxes only); training
    resized it straight from full size: inputs up to 40/255 apart along edges."""
    import torch

    from napari_medspike.data.io import box_shrink, read_pixels, resize_extent, rgb_for_resize
    from napari_medspike.data.resize import resize_image

    rng = np.random.default_rng(4)
    picture = (rng.random((99, 131, 3)) * 255).astype(np.uint8)
    picture[30:60, 40:90] = 255  # sharp edges, where the two ways differ most
    mask = np.zeros((99, 131), np.uint8)
    mask[:, 125:] = 255  # only in the columns the box-averaged input leaves out
    _save(tmp_path / "big" / "images" / "a.png", picture)
    _save(tmp_path / "big" / "masks" / "a.png", mask)
    size = 16
    assert box_shrink(99, 131, size) == 3 and resize_extent(99, 131, size) == (99, 129)
    trained, target = CachedPairs(find_pairs(tmp_path / "big")[0], size=size)[0]
    pixels = read_pixels(tmp_path / "big" / "images" / "a.png")
    predicted = resize_image(torch.from_numpy(rgb_for_resize(pixels, size).transpose(2, 0, 1).copy())[None], size)[0]
    assert float((trained - predicted).abs().max()) <= 0.6 / 255  # the uint8 cache's rounding only
    expected = resize_mask(torch.from_numpy(mask[:, :129] > 0)[None, None].float(), size)[0]
    torch.testing.assert_close(target, expected)


def test_two_images_of_one_name_are_reported_not_dropped_silently(tmp_path):
    root = make_folder(tmp_path / "set", 2)
    _save(root / "images" / "s0.jpg", np.zeros((32, 40, 3), np.uint8))
    pairs, problems = find_pairs(root)
    assert len(pairs) == 2 and any("s0.jpg" in p and "same name" in p for p in problems), problems


def test_missing_folders_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="images/ and masks/"):
        find_pairs(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):  # a typo in the path: said as such
        find_pairs(tmp_path / "kvasir-sge")
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        find_pairs(tmp_path / "notes.txt")


def test_split_is_seeded_and_disjoint(tmp_path):
    pairs, _ = find_pairs([make_folder(tmp_path / "a", 10), make_folder(tmp_path / "b", 10)])
    train, val = split_pairs(pairs, 0.2, seed=3)
    assert len(val) == 4 and len(train) == 16
    assert not {p.key for p in train} & {p.key for p in val}
    assert split_pairs(pairs, 0.2, seed=3) == (train, val)
    assert split_pairs(pairs, 0.2, seed=4)[1] != val


def test_one_picture_saved_twice_stays_on_one_side_of_the_split(tmp_path):
    """Copies of a picture under other names, in one folder or two, or in two correction stores,
    were split apart: held-out pictures were trained on. Folders without copies split as before."""
    import shutil

    from napari_medspike.data.corrections import CorrectionStore

    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 255, (24, 24, 3), dtype=np.uint8) for _ in range(10)]
    mask = np.zeros((24, 24), np.uint8)
    mask[6:18, 6:18] = 255
    for i, picture in enumerate(pictures):
        _save(tmp_path / "a" / "images" / f"p{i}.png", picture)
        _save(tmp_path / "a" / "masks" / f"p{i}.png", mask)
    plain, _ = find_pairs(tmp_path / "a")
    assert not any(p.group for p in plain)  # no copies: each pair is its own unit, as before
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for i in range(5):  # and copies under other names in the first folder itself
        shutil.copy(tmp_path / "a" / "images" / f"p{i}.png", tmp_path / "a" / "images" / f"copy{i}.png")
        shutil.copy(tmp_path / "a" / "masks" / f"p{i}.png", tmp_path / "a" / "masks" / f"copy{i}.png")
    for name in ("s1", "s2"):
        store = CorrectionStore(tmp_path / name)
        for i, picture in enumerate(pictures):
            store.save(picture, mask > 0, name=f"p{i}")

    def picture_of(pair) -> bytes:
        return np.asarray(read_image(pair.image)).tobytes()

    for folders in ([tmp_path / "a", tmp_path / "b"], [tmp_path / "s1", tmp_path / "s2"]):
        for seed in range(5):
            train, val = split_pairs(find_pairs(folders)[0], 0.3, seed)
            assert val and not {picture_of(p) for p in train} & {picture_of(p) for p in val}, (folders, seed)


def test_crop_mode_serves_crops_of_large_images(tmp_path):
    pairs, _ = find_pairs(make_folder(tmp_path / "h", 2, size=(64, 80)))
    data = CachedPairs(pairs, size=32, mode="crop")
    x, y = data[0]
    assert x.shape == (3, 32, 32) and y.shape == (1, 32, 32)


def test_empty_and_non_image_files_are_called_so_without_install_hints(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("patient list\nnot a picture\n")
    page = tmp_path / "download.png"
    page.write_text("<!DOCTYPE html><html><body>404</body></html>")
    cut = tmp_path / "cut.png"
    cut.write_bytes(_save(tmp_path / "whole.png", np.zeros((8, 8), np.uint8)).read_bytes()[:40])
    cases = [(empty, r"empty\.png: not an image \(empty file\)"),
             (text, r"notes\.jpg: not an image file \(text: 'patient list not a picture'\)"),
             (page, r"download\.png: not an image file \(an HTML page"),
             (tmp_path / "none.tif", "no such file"),
             (cut, r"cut\.png: cannot read image \(a damaged or unsupported PNG file")]
    (tmp_path / "blank.tif").write_bytes(b"")
    cases.append((tmp_path / "blank.tif", r"blank\.tif: not an image \(empty file\)"))
    for path, message in cases:
        for read in (read_image, read_mask):
            with pytest.raises(ImageReadError, match=message) as info:
                read(path)
            assert "pip install" not in str(info.value) and "backend" not in str(info.value)


def test_an_8_bit_image_stored_as_floats_is_read_as_8_bit():
    """``image.astype(np.float32)`` of an 8-bit image gives the same model input (it was
    stretched between its own darkest and brightest pixel); other floats map from 0 like wider
    integers do."""
    from napari_medspike.data.io import to_rgb_float

    dark = (np.linspace(10, 120, 600).reshape(20, 30, 1) * np.ones(3)).astype(np.uint8)
    np.testing.assert_array_equal(to_rgb_float(dark.astype(np.float32)), to_rgb_float(dark))
    measured = dark.astype(np.float32) * 3.7  # e.g. physical units: from 0 to the maximum
    image = to_rgb_float(measured)
    assert image.max() == pytest.approx(1.0) and image.min() == pytest.approx(10 / 120, abs=1e-3)


def test_masks_named_as_public_datasets_name_them_pair_with_their_images(tmp_path):
    """ISIC names the mask of ISIC_0000000.jpg ISIC_0000000_segmentation.png, GlaS testA_1_anno,
    BUSI as published 'benign (1)_mask': every image was "without a mask" and the folder unusable."""
    root = tmp_path / "isic"
    for stem, mask in (("ISIC_0000000", "ISIC_0000000_segmentation"), ("testA_1", "testA_1_anno"),
                       ("benign (1)", "benign (1)_Mask"), ("same", "same"), ("two", "two_mask")):
        _save(root / "images" / f"{stem}.jpg", np.zeros((8, 8, 3), np.uint8))
        _save(root / "masks" / f"{mask}.png", np.zeros((8, 8), np.uint8))
    _save(root / "masks" / "two_gt.png", np.zeros((8, 8), np.uint8))  # two candidates: which one?
    _save(root / "images" / "lonely.jpg", np.zeros((8, 8, 3), np.uint8))
    pairs, problems = find_pairs(root)
    assert {(p.key, p.mask.name) for p in pairs} == {
        ("isic/ISIC_0000000", "ISIC_0000000_segmentation.png"), ("isic/testA_1", "testA_1_anno.png"),
        ("isic/benign (1)", "benign (1)_Mask.png"), ("isic/same", "same.png")}
    assert any("two.jpg" in p and "two_gt.png and two_mask.png" in p and "could each be its mask" in p
               for p in problems), problems
    assert any("lonely.jpg" in p for p in problems)
    assert {p for p in problems if "mask without an image" in p} == {
        f"{root / 'masks' / 'two_mask.png'}: mask without an image", f"{root / 'masks' / 'two_gt.png'}: mask without an image"}


def test_a_photo_that_asks_to_be_turned_is_read_as_stored_and_says_so_once(tmp_path, caplog):
    """A phone photo's EXIF orientation was ignored without a word: its mask fits the stored
    pixels, not the picture photo viewers show."""
    import logging

    from PIL import Image

    from napari_medspike.data.io import read_pixels

    pixels = np.zeros((30, 40, 3), np.uint8)
    pixels[:, :10] = 200
    exif = Image.Exif()
    exif[274] = 6
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif)
    Image.fromarray(pixels).save(tmp_path / "plain.jpg")
    with caplog.at_level(logging.WARNING):
        assert read_pixels(tmp_path / "phone.jpg").shape == (30, 40, 3)  # as stored
        read_pixels(tmp_path / "phone.jpg")  # (a training run reads it every epoch)
        read_pixels(tmp_path / "plain.jpg")
    said = [r.getMessage() for r in caplog.records if "EXIF" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("phone.jpg:") and "turned 90° clockwise" in said[0]


def test_a_path_that_is_no_file_is_named_for_what_it_is(tmp_path):
    from napari_medspike.data.io import ImageReadError, read_image

    (tmp_path / "folder.png").mkdir()
    (tmp_path / "to-folder.png").symlink_to(tmp_path / "folder.png")
    (tmp_path / "moved.png").symlink_to(tmp_path / "gone.png")
    for name, said in (("folder.png", "not a file"), ("to-folder.png", "not a file"),  # (not "does not exist")
                       ("moved.png", "which does not exist"), ("never.png", "no such file")):
        with pytest.raises(ImageReadError, match=said):
            read_image(tmp_path / name)
