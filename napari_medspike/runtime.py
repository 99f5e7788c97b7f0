"""The machine: which device to compute on, and process-level tuning of glibc's allocator for
CPU work with large activation tensors.

glibc's ``malloc`` serves every block above 32 MB with a fresh ``mmap`` and unmaps it on free,
so each large activation (a ``[4, 1, 128, 256, 256]`` spike map is 134 MB) costs a page fault
and the zeroing of every 4 KB page, on every pass. On these machines that was 40 % of
MedSpikeFormer's CPU inference time (BENCHMARKS.md). Two remedies, used where each is best:

- :func:`tune_malloc` (in-process, inference): large blocks come from the heap and up to
  ``keep_mb`` of freed memory is kept for reuse. Fastest for the repeated, identical
  allocations of inference; the prediction functions call it. Costs memory when allocation
  sizes vary (training), because freed heap blocks fragment.
- :func:`reexec_with_huge_pages` (command-line tools): restarts the process once with
  ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, so large blocks are still returned to the system
  but are backed by transparent huge pages (512x fewer faults). Must be set before start-up,
  hence the re-exec; ``tools/run.sh`` sets it for napari too.
- :func:`release_free_memory` (training, after every CPU step; one-off jobs such as an
  inspection, once at their end): returns the heap's free memory to the system, so that the
  holes freed tensors leave do not raise the peak step after step, nor stay resident after a job.

Set ``MEDSPIKE_MALLOC=default`` to leave glibc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

log = logging.getLogger(__name__)

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_tuned: bool | None = None


def _opted_out() -> bool:
    return sys.platform != "linux" or os.environ.get("MEDSPIKE_MALLOC", "").lower() == "default"


@functools.lru_cache(maxsize=None)
def _libc_function(name: str, argtypes: tuple, restype: type):
    """A glibc function (``None`` where absent, e.g. musl or not Linux)."""
    try:
        function = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = list(argtypes), restype
    return function


def _mallopt():
    return _libc_function("mallopt", (ctypes.c_int, ctypes.c_int), ctypes.c_int)


def tune_malloc(keep_mb: int = 1024) -> bool:
    """Serve large blocks from glibc's heap and keep freed memory (once per process, Linux);
    return whether it is tuned."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    mallopt = None if _opted_out() else _mallopt()
    if mallopt is not None:
        keep = min(int(keep_mb) << 20, 2**31 - 1)
        _tuned = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, keep))
        log.debug("glibc malloc tuned: %s", _tuned)
    return _tuned


def reset_malloc() -> None:
    """Undo :func:`tune_malloc` (glibc's defaults: mmap for large blocks, trim at 128 KB)."""
    global _tuned
    mallopt = _mallopt() if _tuned else None
    if mallopt is not None:
        mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
    _tuned = None


def _malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)``: every arena's free pages back to the system."""
    trim = _libc_function("malloc_trim", (ctypes.c_size_t,), ctypes.c_int)
    return bool(trim(0)) if trim is not None else False


def release_free_memory(even_if_tuned: bool = False) -> bool:
    """Give the heap's free memory back to the system (glibc ``malloc_trim(0)``; Linux only).
    Returns whether anything was released. While :func:`tune_malloc` keeps freed memory on
    purpose for the next inference pass, only ``even_if_tuned`` releases it: for work whose
    allocations the next pass will not repeat.

    A training step frees tensors of many sizes; glibc keeps the holes they leave resident, and
    the next steps' allocations rarely fit them, so the process's peak memory creeps up step after
    step. The trainer calls this after every CPU step, also in a process tuned for inference (the
    plugin, or any run that loads a starting model): on a 2-core machine, the spike-driven
    MedSpikeFormer with SLTT-1 at 128², batch 8, peaked at 3.4-3.6 GB instead of 4.9-5.0 GB for
    about 6 % more time per step (BENCHMARKS.md).
    """
    if (_tuned and not even_if_tuned) or _opted_out():
        return False
    return _malloc_trim()


def huge_pages_requested() -> bool:
    """Whether this process started with glibc's huge-page tunable."""
    return "glibc.malloc.hugetlb=" in os.environ.get("GLIBC_TUNABLES", "")


def reexec_with_huge_pages() -> None:
    """Restart this command once with huge-page backed ``malloc`` (Linux/glibc; no-op otherwise,
    when already set, with ``MEDSPIKE_MALLOC=default``, or for ``-h``/``--help``, which would only
    pay for the imports twice). Call first thing in a ``main()``."""
    if _opted_out() or huge_pages_requested() or _mallopt() is None or not getattr(sys, "orig_argv", None):
        return
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        return
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    env = dict(os.environ, GLIBC_TUNABLES=f"{tunables}:{HUGE_PAGES_TUNABLE}" if tunables else HUGE_PAGES_TUNABLE)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError as err:  # keep going without it
        log.debug("re-exec with huge pages failed: %s", err)


def pick_device(requested: str = "auto") -> tuple["torch.device", str]:  # noqa: F821 (torch imported inside)
    """``"auto"`` -> cuda, then mps, then cpu. Returns the device and a note for the user.

    An unavailable explicit request falls back to the CPU and says so in the note.
    """
    import torch

    requested = (requested or "auto").lower()
    cuda, mps = torch.cuda.is_available(), bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if requested == "auto":
        if cuda:
            return torch.device("cuda"), f"using CUDA ({torch.cuda.get_device_name(0)})"
        if mps:
            return torch.device("mps"), "using Apple MPS"
        return torch.device("cpu"), "using the CPU (no GPU found)"
    if requested.startswith("cuda"):
        if cuda:
            return torch.device(requested), f"using {requested}"
        return torch.device("cpu"), "CUDA requested but not available: using the CPU"
    if requested == "mps":
        if mps:
            return torch.device("mps"), "using Apple MPS"
        return torch.device("cpu"), "MPS requested but not available: using the CPU"
    if requested == "cpu":
        return torch.device("cpu"), "using the CPU"
    raise ValueError(f"unknown device {requested!r}; use auto, cuda, mps or cpu")


def requested_device(requested: "str | torch.device") -> tuple["torch.device", str | None]:  # noqa: F821
    """A name or a ``torch.device`` as :func:`pick_device` chooses it (devices of other kinds as
    they are). The second value is its note when the request could not be met (a GPU that is not
    there: the CPU), else None."""
    import torch

    if isinstance(requested, torch.device):
        if requested.type not in ("cuda", "mps", "cpu"):
            return requested, None
        requested = str(requested)  # a GPU that is not there falls back to the CPU, as a name does
    device, note = pick_device(requested)
    asked = (requested or "auto").lower().split(":")[0]
    return device, (note if asked not in ("auto", device.type) else None)


PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
#: What the command-line tools say about ``--precision``.
PRECISION_HELP = ("arithmetic: auto (bf16 where it was measured to pay: the integer-spike spiking model on "
                  "CPUs with native bf16, most models on CUDA; fp32 otherwise), fp32 or bf16")


@functools.lru_cache(maxsize=None)
def cpu_computes_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where oneDNN's bf16
    convolutions and matrix products run about twice as fast as fp32 ones; elsewhere bf16 is
    emulated and slower than fp32."""
    import torch

    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(check() for check in checks if check is not None)
    except Exception:  # a private check that changed: assume no
        return False


def bf16_inference(model: object, device: "torch.device", precision: str = "auto") -> bool:  # noqa: F821
    """Whether prediction runs ``model`` on ``device`` under bf16 autocast.

    ``"fp32"``/``"bf16"`` force it. ``"auto"``: on CUDA where :func:`bf16_autocast_pays`; on a
    CPU with native bf16 (:func:`cpu_computes_bf16`) for models that say it pays
    (``model.bf16_on_cpu_pays``: the integer-spike MedSpikeFormer, whose convolutions read spike
    counts that bf16 holds exactly; BENCHMARKS.md, "bf16 on the CPU"). Elsewhere fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {list(PRECISIONS)}")
    if precision != "auto" or device.type not in ("cuda", "cpu"):
        return precision == "bf16"
    if device.type == "cuda":
        return bf16_autocast_pays(model)
    return bool(getattr(model, "bf16_on_cpu_pays", False)) and cpu_computes_bf16()


def bf16_autocast_pays(model: object) -> bool:
    """Whether bf16 autocast is the default on CUDA for ``model`` (prediction and training).

    Not for multi-step spiking models (LIF over T timesteps): on an NVIDIA H100 at 256² their
    forward pass took 2.4× (batch 1) and 1.7× (batch 32) its fp32 time and a training step twice
    as long (casts around neurons that compute in fp32; BENCHMARKS.md, "GPU"). Yes for the rest."""
    return not (getattr(model, "spiking", False) and getattr(model, "timesteps", 1) > 1)
