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
    # it raises (napari then offers its own reader), and the notification says why
    with pytest.raises(ImageReadError, match="stack of 5 slices"):
        reader(str(path))
    assert any("stack of 5 slices" in n and "built-in reader" in n for n in notes)
    zstack = tmp_path / "zstack.tif"  # three slices that could pass for RGB: the file's axes say Z
    tifffile.imwrite(zstack, np.zeros((3, 30, 40), np.uint8), metadata={"axes": "ZYX"})
    with pytest.raises(ImageReadError, match="z-stack of 3 slices"):
        reader(str(zstack))
    # with readable files among them, those are opened and the stack is named
    image = tmp_path / "flat.tif"
    tifffile.imwrite(image, np.zeros((30, 40), np.uint8))
    assert [data.shape for data, _, _ in reader([str(image), str(path)])] == [(30, 40)]
    assert "stack of 5 slices" in notes[-1]
    # through napari: an error (its reader dialog then offers the other readers), no empty layer
    viewer = make_napari_viewer()
    with pytest.raises(ImageReadError):
        viewer.open(str(path), plugin="napari-medspike")
    assert len(viewer.layers) == 0
    assert napari_get_reader(str(tmp_path / "volume.nii")) is None


def test_writer_round_trip(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = np.zeros((30, 40), np.uint8)
    labels[5:15, 10:30] = 3
    viewer.add_labels(labels, name="mask")
    for suffix in (".png", ".tif"):
        path = tmp_path / f"mask{suffix}"
        written = viewer.layers.save(str(path), plugin="napari-medspike")
        assert written == [str(path)]
        np.testing.assert_array_equal(read_mask(path), labels > 0)


def test_samples_open(make_napari_viewer):
    viewer = make_napari_viewer()
    for key in ("kvasir", "ph2", "busi", "synthetic"):
        viewer.open_sample("napari-medspike", key)
    images = [layer for layer in viewer.layers if layer._type_string == "image"]
    assert len(images) == 4 and all(layer.rgb for layer in images)
    truths = [layer for layer in viewer.layers if layer.name.endswith("ground truth")]
    assert len(truths) == 4 and all(layer.data.any() for layer in truths)


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
