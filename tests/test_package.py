"""The installed plugin: npe2 manifest, sample data, and napari loading it headless."""

from __future__ import annotations

import subprocess
import sys

import numpy as np


def test_manifest_validates_from_the_installed_package():
    out = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-medspike"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout.lower()


def test_synthetic_sample_is_an_rgb_image_with_a_mask():
    from napari_medspike._sample_data import synthetic_sample

    (image, image_meta, kind), (mask, _, mask_kind) = synthetic_sample()
    assert kind == "image" and mask_kind == "labels" and image_meta["rgb"]
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    assert 0.02 < mask.mean() < 0.5


def test_napari_opens_the_plugin_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medspike", "synthetic")
    assert [layer.name for layer in viewer.layers] == [
        "synthetic lesion",
        "synthetic lesion ground truth",
    ]
    assert viewer.layers[0].rgb
