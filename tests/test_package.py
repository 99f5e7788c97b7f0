"""The installed plugin: npe2 manifest, sample data, and napari loading it headless."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


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


def test_no_display_is_said_plainly():
    from napari_medspike.__main__ import display_problem

    assert "xvfb-run" in display_problem({}, "linux")
    assert display_problem({"DISPLAY": ":0"}, "linux") is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert display_problem({}, "darwin") is None


def test_the_main_command_answers_help_without_opening_a_window(capsys):
    from napari_medspike.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0 and "--sample" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(["--sample", "nosuch"])
    assert stop.value.code == 2


def test_every_sample_of_the_manifest_can_be_asked_for_by_name():
    """The GlaS sample was in napari's Open Sample menu but not among the choices of
    ``python -m napari_medspike --sample`` and the demo."""
    import yaml

    from napari_medspike._sample_data import SAMPLE_KEYS

    manifest = yaml.safe_load((Path(__file__).parents[1] / "napari_medspike" / "napari.yaml").read_text())
    assert [entry["key"] for entry in manifest["contributions"]["sample_data"]] == list(SAMPLE_KEYS)
    from napari_medspike.__main__ import main

    for key in SAMPLE_KEYS:  # (a choice argparse refuses exits 2 before --help is reached)
        with pytest.raises(SystemExit) as stop:
            main(["--sample", key, "--help"])
        assert stop.value.code == 0, key


def test_run_script_stops_early_without_a_display(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "tools" / "run.sh"
    if not script.is_file():
        import pytest

        pytest.skip("tools/run.sh is not beside the installed tests")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "needs a display" in done.stderr and "xvfb-run" in done.stderr


def test_importing_the_package_does_not_load_torch():
    import subprocess
    import sys

    code = ("import sys, napari_medspike, napari_medspike._reader, napari_medspike._writer, "
            "napari_medspike._sample_data; print('torch' in sys.modules, 'spikingjelly' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_dependencies_point_down():
    """The layers contract in setup.cfg (import-linter): no upward imports, no cycles."""
    import shutil

    root = Path(__file__).resolve().parents[1]
    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert linter, "import-linter is part of the [testing] extra"
    result = subprocess.run([linter, "--config", str(root / "setup.cfg")], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
