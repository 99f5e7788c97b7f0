"""The bad-input matrix: every awkward file is read correctly or refused with a message that
names it (tests/corpus.py generates the files)."""

from __future__ import annotations

import numpy as np
import pytest

from corpus import checkpoint_cases, image_cases
from napari_medspike.data.io import ImageReadError, read_image


def test_every_image_case_is_read_or_refused_by_name(tmp_path):
    for case in image_cases(tmp_path / "images"):
        if case.shape is not None:
            image = read_image(case.path)
            assert image.shape == case.shape and np.isfinite(image).all(), case.name
            assert image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1, case.name
        else:
            with pytest.raises(ImageReadError) as caught:
                read_image(case.path)
            message = str(caught.value).lower()
            assert case.path.name.lower() in message, (case.name, message)
            assert all(word.lower() in message for word in case.refused), (case.name, message)
            assert "pip install" not in message, (case.name, message)


def test_every_crafted_checkpoint_is_refused_by_name(tmp_path):
    from napari_medspike import load_model

    for case in checkpoint_cases(tmp_path / "checkpoints"):
        with pytest.raises(ValueError) as caught:
            load_model(case.path)
        message = str(caught.value).lower()
        assert all(word.lower() in message for word in case.refused), (case.name, message)


def test_the_whole_folder_can_be_segmented_skipping_what_is_not_an_image(tmp_path, capsys):
    from napari_medspike import create_model, save_checkpoint
    from napari_medspike.cli.segment import main

    cases = image_cases(tmp_path / "images")
    ckpt = save_checkpoint(create_model("medqkformer", widths=(8, 16, 32, 64)), tmp_path / "m.safetensors",
                           input_size=32)
    from napari_medspike.cli.segment import PARTLY

    # the rest written, and the exit status says some inputs were skipped
    assert main([str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--model", str(ckpt),
                 "--device", "cpu"]) == PARTLY
    written = {p.stem for p in (tmp_path / "out" / "masks").iterdir()}
    assert written == {c.path.stem for c in cases if c.shape is not None}
    said = capsys.readouterr().err
    for case in cases:  # each one skipped is named (a broken link too, not silently left out)
        if case.shape is None:
            assert case.path.name in said, case.name
