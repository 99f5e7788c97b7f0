"""A corpus of broken and awkward inputs, generated on demand (nothing binary is committed).

``image_cases(folder)`` writes image files a user might hand the plugin; ``checkpoint_cases``
writes crafted checkpoints. Each case says what must happen: read (with the expected shape) or
be refused with a message containing given words. tests/test_corpus.py runs the matrix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from skimage import io


@dataclass
class Case:
    name: str
    path: Path
    shape: tuple[int, ...] | None = None  # expected 2D/RGB shape when it must be read
    refused: tuple[str, ...] = ()  # words the refusal must contain (case-insensitive)


def image_cases(folder: Path) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cases: list[Case] = []

    def add(name: str, write, **expect) -> None:
        path = folder / name
        write(path)
        cases.append(Case(name, path, **expect))

    add("one_pixel.png", lambda p: io.imsave(p, np.full((1, 1, 3), 200, np.uint8), check_contrast=False), shape=(1, 1, 3))
    add("thin.png", lambda p: io.imsave(p, np.zeros((1, 37), np.uint8), check_contrast=False), shape=(1, 37, 3))
    add("grey16.tif", lambda p: tifffile.imwrite(p, (rng.random((20, 30)) * 65535).astype(np.uint16)), shape=(20, 30, 3))
    add("rgba.png", lambda p: io.imsave(p, np.full((10, 12, 4), 90, np.uint8), check_contrast=False), shape=(10, 12, 3))
    add("float.tif", lambda p: tifffile.imwrite(p, rng.random((8, 9)).astype(np.float32)), shape=(8, 9, 3))
    add("channels_first.tif", lambda p: tifffile.imwrite(p, np.zeros((3, 16, 20), np.uint8), metadata={"axes": "CYX"}),
        shape=(16, 20, 3))
    add("empty.png", lambda p: p.write_bytes(b""), refused=("not an image", "empty"))
    add("text.jpg", lambda p: p.write_text("this is not a picture\n"), refused=("not an image",))
    add("truncated.png", lambda p: p.write_bytes(_png_bytes()[:30]), refused=())
    add("zstack.tif", lambda p: tifffile.imwrite(p, np.zeros((3, 16, 20), np.uint8), metadata={"axes": "ZYX"}),
        refused=("z-stack", "3 slices"))
    add("volume.tif", lambda p: tifffile.imwrite(p, np.zeros((5, 16, 20), np.uint8)), refused=("5 slices",))
    add("nan.tif", lambda p: tifffile.imwrite(p, np.full((6, 6), np.nan, np.float32)), refused=("nan",))
    # a link left by a moved dataset or an unmounted drive
    add("moved.png", lambda p: p.symlink_to(folder / "gone" / "moved.png"), refused=("a link to", "does not exist"))
    return cases


def _png_bytes() -> bytes:
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", np.zeros((32, 32), np.uint8), extension=".png")


def checkpoint_cases(folder: Path) -> list[Case]:
    """Crafted checkpoints: each must be refused by ``load_model`` with the file named."""
    import torch
    from safetensors.torch import save_file

    from napari_medspike import create_model

    folder.mkdir(parents=True, exist_ok=True)
    good = create_model("medqkformer", widths=(8, 16, 32, 64))
    state = {k: v.contiguous() for k, v in good.state_dict().items()}
    base = {"format": 1, "arch": "medqkformer", "config": {"in_channels": 3, "widths": [8, 16, 32, 64], "heads": 4},
            "input_size": 32}
    cases = []

    def add(name: str, meta, tensors=None, *words: str) -> None:
        path = folder / name
        header = {"medspike": meta if isinstance(meta, str) else json.dumps(meta)}
        save_file(tensors if tensors is not None else state, str(path), metadata=header)
        cases.append(Case(name, path, refused=(name, *words)))

    add("huge_widths.safetensors", {**base, "config": {**base["config"], "widths": [1024, 2048, 4096, 8192]}})
    add("input_size_40000.safetensors", {**base, "input_size": 40000}, None, "input_size")
    add("input_size_text.safetensors", {**base, "input_size": "abc"}, None, "input_size")
    add("not_json.safetensors", "{arch: medqkformer", None, "json")
    add("a_list.safetensors", [1, 2, 3], None, "object")
    add("unknown_option.safetensors", {**base, "config": {**base["config"], "depth": 3}}, None, "depth")
    add("unknown_arch.safetensors", {**base, "arch": "resnet"}, None, "resnet")
    nan_state = dict(state)
    first = next(k for k, v in nan_state.items() if v.is_floating_point() and v.numel() > 1)
    nan_state[first] = torch.full_like(nan_state[first], float("nan"))
    add("nan_weights.safetensors", base, nan_state, "nan")
    junk = folder / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    cases.append(Case("junk.safetensors", junk, refused=("junk.safetensors",)))
    return cases
