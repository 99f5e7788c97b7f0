"""Self-describing, safe, atomically written checkpoints.

A checkpoint is one ``.safetensors`` file: the weights, plus a JSON ``"medspike"`` metadata entry
with everything needed to rebuild and use the model (architecture and config, input size and
normalisation, training data and split, metrics, package version). Loading never unpickles.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

from ..common import atomic_write
from ..models import create_model
from ..models.base import Segmenter
from ..models.info import ModelInfo
from ..models.registry import model_class
from ..runtime import requested_device

log = logging.getLogger(__name__)

METADATA_KEY = "medspike"
#: The range of a checkpoint's ``input_size`` (model input side, pixels).
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 16, 4096
_FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
_INT_DTYPES = frozenset({"I8", "U8", "I16", "I32", "I64", "BOOL"})
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def describe(model: Segmenter, **extra: Any) -> dict[str, Any]:
    """The metadata that makes a checkpoint self-describing."""
    from .. import __version__

    clash = sorted({"format", "arch", "config", "normalisation", "package_version"} & set(extra))
    if clash:  # a file whose metadata contradicts its weights could not be loaded again
        raise ValueError(f"{', '.join(clash)} describe the model itself and are taken from it: "
                         "leave them out of the metadata")
    # what the model is, not how a model it was loaded from was trained: callers pass that
    meta = ModelInfo(arch=model.arch, config=model.config, input_size=model.input_size,
                     normalisation=model.info.normalisation, package_version=__version__).to_metadata()
    meta.update(extra)
    return meta


def save_checkpoint(model: Segmenter, path: str | Path, half: bool | Callable[[str], bool] = False,
                    **metadata: Any) -> Path:
    """Write ``model``'s weights and metadata (see :func:`describe`) atomically to ``path``.

    ``half=True`` stores weights as float16 (half the size, for shipped models); a function of
    the tensor name stores only the weights it picks so (e.g. a routed model's copy of a
    float16-stored starting model: lossless). Batch-norm statistics stay float32.
    :func:`load_model` restores float32 either way.
    """
    meta = describe(model, **metadata)
    if half is True:
        meta["storage_dtype"] = "float16"
    halve = half if callable(half) else (lambda _name: bool(half))

    def stored(name: str, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach().cpu().contiguous()
        keep = name.endswith(("running_mean", "running_var")) or not tensor.is_floating_point()
        return tensor if (keep or not halve(name)) else tensor.half()

    state = {k: stored(k, v) for k, v in model.state_dict().items()}
    header = {METADATA_KEY: json.dumps(meta, default=str)}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=header))


def _config_errors(cls: type[Segmenter], config: dict[str, Any]) -> list[str]:
    """What is wrong with ``config`` as keyword arguments of ``cls`` (names and basic types,
    judged by the defaults of its constructor); empty if nothing."""
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    errors = []
    for key, value in config.items():
        if key not in params or params[key].kind is inspect.Parameter.VAR_POSITIONAL:
            errors.append(f"unknown option {key!r} for {cls.arch} (options: {', '.join(params)})")
            continue
        default = params[key].default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        elif isinstance(default, (tuple, list)):
            ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            errors.append(f"{key!r} = {json.dumps(value)[:80]} is not a valid value (like {json.dumps(default)})")
    return errors


def validate_metadata(meta: Any, path: str | Path = "checkpoint") -> dict[str, Any]:
    """Check checkpoint metadata before anything trusts it; return it unchanged.

    It must be a JSON object with ``arch`` (a known architecture) and ``config`` (an object
    whose keys and value types the architecture's constructor accepts, after
    ``upgrade_config``); ``input_size``, when present, an integer in
    [:data:`MIN_INPUT_SIZE`, :data:`MAX_INPUT_SIZE`]. Other top-level keys are free. Raises
    ``ValueError`` naming ``path`` otherwise.
    """
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: napari-medspike metadata must be a JSON object, got {type(meta).__name__}")
    for key in ("arch", "config"):
        if key not in meta:
            raise ValueError(f"{path}: napari-medspike metadata lacks {key!r}")
    arch, config = meta["arch"], meta["config"]
    if not isinstance(arch, str):
        raise ValueError(f"{path}: metadata 'arch' must be a string, got {type(arch).__name__}")
    try:
        cls = model_class(arch)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: metadata 'config' must be a JSON object, got {type(config).__name__}")
    errors = _config_errors(cls, cls.upgrade_config(config))
    if errors:
        raise ValueError(f"{path}: bad {arch} config: " + "; ".join(errors))
    if "input_size" in meta:
        size = meta["input_size"]
        if not (isinstance(size, int) and not isinstance(size, bool) and MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE):
            raise ValueError(f"{path}: metadata 'input_size' must be an integer in "
                             f"[{MIN_INPUT_SIZE}, {MAX_INPUT_SIZE}], got {json.dumps(size)[:80]}")
    return meta


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a checkpoint file, without loading its weights.

    Raises ``ValueError`` naming the file if it is not a checkpoint or its metadata is malformed
    (see :func:`validate_metadata`).
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as err:
        raise ValueError(f"{path}: not a napari-medspike checkpoint ({err})") from err
    if raw is None:
        raise ValueError(f"{path}: safetensors file without napari-medspike metadata")
    try:
        meta = json.loads(raw)
    except ValueError as err:
        raise ValueError(f"{path}: napari-medspike metadata is not valid JSON ({err})") from None
    return validate_metadata(meta, path)


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


def _check_tensors_fit(path: Path, model: Segmenter) -> None:
    """Compare the names, shapes and kinds of ``model``'s state (on any device, e.g. meta)
    with the tensors stored in ``path``, reading only the file's header."""
    expected = model.state_dict()
    with safe_open(str(path), framework="pt") as f:
        stored = {name: (tuple(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype()) for name in f.keys()}
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit {model.arch} {model.config}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, tensor in expected.items():
        shape, dtype = stored[name]
        if shape != tuple(tensor.shape):
            raise ValueError(f"{path}: weights do not fit {model.arch} {model.config}: tensor {name!r} "
                             f"has shape {list(shape)} in the file, the model needs {list(tensor.shape)}")
        kinds = _FLOAT_DTYPES if tensor.is_floating_point() else _INT_DTYPES
        if dtype not in kinds:
            raise ValueError(f"{path}: tensor {name!r} is stored as {dtype}, the model needs "
                             f"{'floating-point' if tensor.is_floating_point() else 'integer'} values")


def load_model(name_or_path: str | Path = "default", device: str | torch.device = "cpu") -> Segmenter:
    """Rebuild a model from a checkpoint with no other argument; returned in eval mode.

    ``name_or_path`` is a shipped model's name (see :func:`list_models`) or a ``.safetensors``
    file written by :func:`save_checkpoint`; ``device`` a ``torch.device`` or ``"auto"``,
    ``"cuda"``, ``"mps"``, ``"cpu"`` (a GPU that is not there: the CPU, with a warning). The metadata is kept on ``model.info`` (a
    :class:`~napari_medspike.models.info.ModelInfo`).

    Nothing in the file is trusted before it is checked: the metadata is validated
    (:func:`validate_metadata`), the model is first built on the ``meta`` device (no memory)
    and every weight's name and shape compared with the file's header, and only then built for
    real and loaded; weights with NaN or infinite values are refused. Every refusal is a
    ``ValueError`` naming the file.

    Loading a model for inference also tunes the CPU allocator as the plugin does
    (:func:`napari_medspike.runtime.tune_malloc`: large freed blocks are reused instead of
    being page-faulted in again on every pass; ``MEDSPIKE_MALLOC=default`` leaves glibc alone).
    """
    from ..runtime import tune_malloc

    tune_malloc()
    path = resolve_checkpoint(name_or_path)
    meta = read_metadata(path)
    arch = meta["arch"]
    config = model_class(arch).upgrade_config(meta["config"])
    try:
        with torch.device("meta"):
            skeleton = create_model(arch, **config)
    except Exception as err:  # any failure to build from the stored config means a bad config
        raise ValueError(f"{path}: cannot build {arch} from the stored config {config}: {err}") from None
    _check_tensors_fit(path, skeleton)
    del skeleton
    state = load_file(str(path), device="cpu")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{path}: tensor {name!r} contains NaN or infinite values")
    with torch.random.fork_rng(devices=[]):  # its random first weights leave the caller's generator be
        model = create_model(arch, **config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit {arch} {meta['config']}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.info = ModelInfo.from_metadata(meta, path=str(path))
    device, fallback = requested_device(device)
    if fallback:
        log.warning(fallback)
    return model.to(device).eval()


def model_card_path(checkpoint: str | Path) -> Path:
    """Where the markdown model card of a checkpoint lives (beside it, ``NAME.md``)."""
    return Path(checkpoint).with_suffix(".md")


#: How the plugin names a fine-tuned model: ``finetuned_<YYYYmmdd-HHMMSS>[-n].safetensors``.
_FINETUNED_NAME = re.compile(r"finetuned_(\d{8}-\d{6})(?:-\d+)?")


def finetuned_model_path(folder: Path, when: datetime | None = None) -> Path:
    """A new file for a model fine-tuned at ``when`` (default: now, local time) in ``folder``:
    ``finetuned_<YYYYmmdd-HHMMSS>.safetensors``, or ``..._<stamp>-2`` and so on when a model (or
    its card) of that name exists: two fine-tunes ended within one second must not share a file."""
    stamp = (when or datetime.now()).strftime("%Y%m%d-%H%M%S")
    out, n = folder / f"finetuned_{stamp}.safetensors", 1
    while out.exists() or model_card_path(out).exists():
        n += 1
        out = folder / f"finetuned_{stamp}-{n}.safetensors"
    return out


def finetuned_time(path: str | Path) -> datetime | None:
    """When the model at ``path`` was fine-tuned, read from the name :func:`finetuned_model_path`
    gives; None for a file named otherwise."""
    found = _FINETUNED_NAME.fullmatch(Path(path).stem)
    if found is None:
        return None
    try:
        return datetime.strptime(found.group(1), "%Y%m%d-%H%M%S")
    except ValueError:  # (digits that are no date)
        return None
