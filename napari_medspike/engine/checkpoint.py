"""Self-describing, safe, atomically written checkpoints.

A checkpoint is one ``.safetensors`` file: the weights, plus a JSON ``"medspike"`` metadata entry
with everything needed to rebuild and use the model (architecture and config, input size and
normalisation, training data and split, metrics, package version). Loading never unpickles.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

from ..models import create_model
from ..models.base import Segmenter
from ..models.registry import model_class

METADATA_KEY = "medspike"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    An interruption leaves the previous file intact (rename is atomic on one file system).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def describe(model: Segmenter, **extra: Any) -> dict[str, Any]:
    """The metadata that makes a checkpoint self-describing."""
    from .. import __version__

    meta = {
        "format": 1,
        "arch": model.arch,
        "config": model.config,
        "input_size": 256,
        "normalisation": "RGB scaled to [0, 1]; grey replicated to 3 channels",
        "package_version": __version__,
    }
    meta.update(extra)
    return meta


def save_checkpoint(model: Segmenter, path: str | Path, half: bool = False, **metadata: Any) -> Path:
    """Write ``model``'s weights and metadata (see :func:`describe`) atomically to ``path``.

    ``half=True`` stores weights as float16 (half the size, for shipped models); batch-norm
    statistics stay float32. :func:`load_model` restores float32 either way.
    """
    meta = describe(model, **metadata)
    if half:
        meta["storage_dtype"] = "float16"

    def stored(name: str, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach().cpu().contiguous()
        keep = name.endswith(("running_mean", "running_var")) or not tensor.is_floating_point()
        return tensor if (keep or not half) else tensor.half()

    state = {k: stored(k, v) for k, v in model.state_dict().items()}
    header = {METADATA_KEY: json.dumps(meta, default=str)}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=header))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a checkpoint file, without loading its weights."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as err:
        raise ValueError(f"{path}: not a napari-medspike checkpoint ({err})") from err
    if raw is None:
        raise ValueError(f"{path}: safetensors file without napari-medspike metadata")
    return json.loads(raw)


def list_models() -> dict[str, Path]:
    """Shipped models by name (``"default"`` first when present)."""
    found = {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))}
    return dict(sorted(found.items(), key=lambda kv: (kv[0] != "default", kv[0])))


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A shipped model's name (e.g. ``"default"``) or a file path -> the checkpoint path."""
    shipped = list_models()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    names = ", ".join(shipped) or "none shipped"
    raise FileNotFoundError(f"no checkpoint file or shipped model named {str(name_or_path)!r} ({names})")


def load_model(name_or_path: str | Path = "default", device: str | torch.device = "cpu") -> Segmenter:
    """Rebuild a model from a checkpoint with no other argument; returned in eval mode.

    ``name_or_path`` is a shipped model's name (see :func:`list_models`) or a ``.safetensors``
    file written by :func:`save_checkpoint`. The metadata is kept on ``model.checkpoint_info``.
    """
    path = resolve_checkpoint(name_or_path)
    meta = read_metadata(path)
    model = create_model(meta["arch"], **model_class(meta["arch"]).upgrade_config(meta["config"]))
    state = load_file(str(path), device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit {meta['arch']} {meta['config']}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.checkpoint_info = {**meta, "path": str(path)}
    return model.to(device).eval()


def model_card_path(checkpoint: str | Path) -> Path:
    """Where the markdown model card of a checkpoint lives (beside it, ``NAME.md``)."""
    return Path(checkpoint).with_suffix(".md")
