"""Process-level tuning for CPU work: keep large freed buffers instead of returning them.

glibc's ``malloc`` serves every block above 32 MB with a fresh ``mmap`` and unmaps it on free,
so each large activation tensor (a ``[4, 1, 128, 256, 256]`` spike map is 134 MB) costs page
faults and zeroing of all its pages, on every forward pass. MedSpikeFormer at 256² on two cores
spends about 40 % of its time there (BENCHMARKS.md). :func:`tune_malloc` makes glibc take large
blocks from its heap and keep up to ``keep_mb`` of freed memory for reuse, the effect of
``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...``.

The cost is memory: the process keeps its peak heap (up to ``keep_mb`` beyond what is in use).
Set the environment variable ``MEDSPIKE_MALLOC=default`` to leave glibc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_tuned: bool | None = None


def tune_malloc(keep_mb: int = 1024) -> bool:
    """Tune glibc's allocator once per process (Linux only); return whether it is tuned."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if sys.platform != "linux" or os.environ.get("MEDSPIKE_MALLOC", "").lower() == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt  # absent from musl
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    keep = min(int(keep_mb) << 20, 2**31 - 1)
    _tuned = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, keep))
    log.debug("glibc malloc tuned: %s", _tuned)
    return _tuned
