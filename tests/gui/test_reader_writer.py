"""Reader and writer contributions through napari itself."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage import io

from napari_medspike._reader import napari_get_reader
from napari_medspike.data.io import read_mask


@pytest.mark.parametrize("name, array, metadata", [
    ("deep.tif", np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50, None),
    ("planar.tif", np.zeros((3, 30, 40), np.uint8), None),
    ("channels_first.tif", np.zeros((3, 30, 40), np.uint8), {"axes": "CYX"}),
])
def test_reader_opens_2d_tiffs(make_napari_viewer, tmp_path, name, array, metadata):
    path = tmp_path / name
    tifffile.imwrite(path, array, metadata=metadata)
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-medspike")
    assert len(layers) == 1 and layers[0].data.shape[:2] == (30, 40)
    assert layers[0].rgb == (array.ndim == 3)


def test_ordinary_images_are_left_to_napari_without_a_reader_choice(make_napari_viewer, tmp_path):
    """The plugin claims no PNG, JPEG or BMP: opening one never asks which reader to use."""
    from npe2 import PluginManager

    for name, array in (("grey.png", np.arange(1200, dtype=np.uint8).reshape(30, 40)),
                        ("rgb.jpg", np.full((30, 40, 3), 120, np.uint8)), ("pic.bmp", np.full((30, 40, 3), 7, np.uint8))):
        path = tmp_path / name
        io.imsave(path, array, check_contrast=False)
        readers = [r.plugin_name for r in PluginManager.instance().iter_compatible_readers([str(path)])]
        assert "napari-medspike" not in readers, (name, readers)
        viewer = make_napari_viewer()
        assert len(viewer.open(str(path))) == 1


def test_reader_refuses_stacks_with_a_message(make_napari_viewer, tmp_path, notes):
    from napari_medspike.data.io import ImageReadError

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((5, 30, 40), np.uint8))
    reader = napari_get_reader(str(path))
    # it raises with the reason (napari's dialog shows it and offers its own reader), once:
    # a notification said the same again
    with pytest.raises(ImageReadError, match="stack of 5 slices.*built-in reader"):
        reader(str(path))
    assert not notes
    zstack = tmp_path / "zstack.tif"  # three slices that could pass for RGB: the file's axes say Z
    tifffile.imwrite(zstack, np.zeros((3, 30, 40), np.uint8), metadata={"axes": "ZYX"})
    with pytest.raises(ImageReadError, match="z-stack of 3 slices"):
        reader(str(zstack))
    # through napari: an error that carries the reason, and no empty layer
    viewer = make_napari_viewer()
    with pytest.raises(ImageReadError, match="stack of 5 slices"):
        viewer.open(str(path), plugin="napari-medspike")
    assert len(viewer.layers) == 0
    assert napari_get_reader(str(tmp_path / "volume.nii")) is None


def test_open_files_as_stack_gives_one_stack(make_napari_viewer, tmp_path):
    """napari passes the reader a list of files only for File > Open Files as Stack: each file
    was opened as a layer of its own."""
    from napari_medspike.data.io import ImageReadError

    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"frame{i}.tif"))
        tifffile.imwrite(paths[-1], np.full((30, 40), 10 * i, np.uint8))
    viewer = make_napari_viewer()
    layers = viewer.open(paths, stack=True, plugin="napari-medspike")
    assert len(layers) == 1 and layers[0].data.shape == (3, 30, 40) and layers[0].name == "frame0 (stack of 3)"
    assert [int(frame.max()) for frame in layers[0].data] == [0, 10, 20]
    assert layers[0].metadata["paths"] == paths
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, np.zeros((31, 40), np.uint8))
    with pytest.raises(ImageReadError, match="different sizes cannot be stacked: frame0.tif 30 x 40, other.tif 31 x 40"):
        viewer.open([paths[0], str(other)], stack=True, plugin="napari-medspike")
    assert len(viewer.layers) == 1


def test_a_tiff_opens_with_the_pixel_size_it_records(make_napari_viewer, tmp_path):
    """A calibrated TIFF (ImageJ's, a scanner's in centimetres) opened with scale 1 and no units,
    so areas came out in pixels; dots per inch from photo software are no pixel size."""
    viewer = make_napari_viewer()
    imagej = tmp_path / "imagej.tif"
    tifffile.imwrite(imagej, np.zeros((30, 40), np.uint8), imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"unit": "micron"})
    layer = viewer.open(str(imagej), plugin="napari-medspike")[0]
    assert tuple(layer.scale) == pytest.approx((0.5, 0.25)) and [str(u) for u in layer.units] == ["micrometer"] * 2
    scanned = tmp_path / "scanned.tif"
    tifffile.imwrite(scanned, np.zeros((30, 40), np.uint8), resolution=(4000, 2000), resolutionunit="CENTIMETER")
    layer = viewer.open(str(scanned), plugin="napari-medspike")[0]
    assert tuple(layer.scale) == pytest.approx((5.0, 2.5)) and str(layer.units[0]) == "micrometer"
    escaped = tmp_path / "escaped.tif"  # ImageJ may write µ as the six characters \u00B5
    tifffile.imwrite(escaped, np.zeros((30, 40), np.uint8), imagej=True, resolution=(2, 2), metadata={"unit": r"\u00B5m"})
    layer = viewer.open(str(escaped), plugin="napari-medspike")[0]
    assert tuple(layer.scale) == pytest.approx((0.5, 0.5)) and str(layer.units[0]) == "micrometer"
    photo = tmp_path / "photo.tif"
    tifffile.imwrite(photo, np.zeros((30, 40, 3), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    layer = viewer.open(str(photo), plugin="napari-medspike")[0]
    assert tuple(layer.scale) == (1.0, 1.0) and str(layer.units[0]) == "pixel"


def test_writer_round_trip(make_napari_viewer, tmp_path, notes):
    viewer = make_napari_viewer()
    labels = np.zeros((30, 40), np.uint8)
    labels[5:15, 10:30] = 3
    viewer.add_labels(labels, name="mask", scale=(0.5, 0.25), units=("µm", "µm"))
    for suffix in (".png", ".tif"):
        path = tmp_path / f"mask{suffix}"
        written = viewer.layers.save(str(path), plugin="napari-medspike")
        assert written == [str(path)]
        np.testing.assert_array_equal(read_mask(path), labels > 0)
    assert not notes  # one label: nothing merged
    # the tif keeps the pixel size: it opens again with the layer's scale and units
    again = viewer.open(str(tmp_path / "mask.tif"), plugin="napari-medspike")[0]
    assert tuple(again.scale) == pytest.approx((0.5, 0.25)) and str(again.units[0]) == "micrometer"
    # a name typed without an extension in the dialog (which hands the writer the bare name)
    from napari_medspike._writer import write_mask

    assert write_mask(str(tmp_path / "bare"), labels, {}) == [str(tmp_path / "bare.png")]
    np.testing.assert_array_equal(read_mask(tmp_path / "bare.png"), labels > 0)


def test_the_writer_says_what_it_merges_and_writes_stacks_as_tif_pages(make_napari_viewer, tmp_path, notes):
    """Several labels were merged into one without a word; a stack of masks failed with napari's
    'no writer found', its reason dropped (napari takes a writer's ValueError for 'cannot write')."""
    from napari_medspike._writer import MaskFormatError

    viewer = make_napari_viewer()
    cells = np.zeros((30, 40), np.uint16)
    cells[2:8, 2:8], cells[10:20, 10:20], cells[22:28, 30:38] = 1, 2, 300
    layer = viewer.add_labels(cells, name="cells")
    assert layer.save(str(tmp_path / "cells.png"), plugin="napari-medspike") == [str(tmp_path / "cells.png")]
    np.testing.assert_array_equal(read_mask(tmp_path / "cells.png"), cells > 0)
    assert any("'cells' has 3 labels: written as one foreground" in n for n in notes), notes
    stack = np.zeros((3, 30, 40), np.uint8)
    stack[1, 5:10, 5:10] = 1
    masks = viewer.add_labels(stack, name="clip masks")
    with pytest.raises(MaskFormatError, match="'clip masks' is a stack of 3 masks: save it as .tif"):
        masks.save(str(tmp_path / "clip.png"), plugin="napari-medspike")
    assert masks.save(str(tmp_path / "clip.tif"), plugin="napari-medspike") == [str(tmp_path / "clip.tif")]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "clip.tif"), stack * 255)


def test_samples_open(make_napari_viewer):
    viewer = make_napari_viewer()
    for key in ("kvasir", "ph2", "busi", "glas", "synthetic"):
        viewer.open_sample("napari-medspike", key)
    images = [layer for layer in viewer.layers if layer._type_string == "image"]
    assert len(images) == 5 and all(layer.rgb for layer in images)
    truths = [layer for layer in viewer.layers if layer.name.endswith("ground truth")]
    assert len(truths) == 5 and all(layer.data.any() for layer in truths)
    # a sample opened again: its ground truth goes with its own copy of the image (it was taken for
    # the first copy's, and Save correction refused it as "the mask of 'polyp (Kvasir-SEG)'")
    from napari_medspike.widgets.layers import image_made_for, made_for_another_image

    viewer.open_sample("napari-medspike", "kvasir")
    again, truth = viewer.layers["polyp (Kvasir-SEG) [1]"], viewer.layers["polyp (Kvasir-SEG) ground truth [1]"]
    assert image_made_for(truth, viewer) is again and not made_for_another_image(truth, again, viewer)
    assert image_made_for(viewer.layers["polyp (Kvasir-SEG) ground truth"], viewer) is viewer.layers["polyp (Kvasir-SEG)"]


def test_a_video_opens_as_a_stack_of_frames_and_segments_frame_by_frame(make_napari_viewer, tmp_path, qtbot,
                                                                        tiny_checkpoint):
    from napari_medspike.data.synthetic import synthetic_lesion
    from napari_medspike.data.video import write_video

    frames = np.stack([synthetic_lesion((48, 64), seed=i)[0] for i in range(4)])
    path = write_video(tmp_path / "colonoscopy.mp4", frames)
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-medspike")
    assert len(layers) == 1 and layers[0].rgb and layers[0].data.shape == (4, 48, 64, 3)
    assert layers[0].metadata["frames"] == [0, 1, 2, 3] and layers[0].metadata["fps"] == pytest.approx(10)
    _, segment = viewer.window.add_plugin_dock_widget("napari-medspike", "Segment")
    segment.model_choice.value = segment.model_choice.choices[-1]
    segment.checkpoint.value = str(tiny_checkpoint)
    segment.reset_choices()
    segment.image.value = layers[0]
    segment.run()
    qtbot.waitUntil(lambda: segment.worker is None, timeout=120_000)
    mask = viewer.layers["colonoscopy mask"]
    assert mask.data.shape == (4, 48, 64)
    assert "4 images" in segment.status.value


def test_a_long_video_opens_every_kth_frame_and_says_so(tmp_path):
    from napari_medspike._reader import read_video_layer
    from napari_medspike.data.video import write_video

    path = write_video(tmp_path / "long.avi", np.zeros((9, 32, 32, 3), np.uint8))
    [(data, meta, kind)] = read_video_layer(path, max_bytes=4 * 32 * 32 * 3)
    assert kind == "image" and data.shape == (3, 32, 32, 3)
    assert meta["name"] == "long (every 3rd frame)" and meta["metadata"]["frames"] == [0, 3, 6]


def test_a_video_cut_off_opens_with_the_frames_it_has_and_says_it_ends_early(make_napari_viewer, tmp_path, notes):
    from napari_medspike.data.synthetic import synthetic_lesion
    from napari_medspike.data.video import write_video

    path = write_video(tmp_path / "cut.mkv", np.stack([synthetic_lesion((48, 64), seed=i)[0] for i in range(30)]))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-medspike")
    assert 0 < layer.data.shape[0] < 30
    assert any("cut.mkv" in n and "30 frames its header announces" in n and f"the {layer.data.shape[0]} frames read" in n
               for n in notes), notes
