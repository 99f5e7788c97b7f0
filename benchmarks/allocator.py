"""Cost of allocating and filling a large tensor under glibc's allocator settings.

    python benchmarks/allocator.py

A [4, 128, 256, 256] float32 tensor (134 MB, one MedSpikeFormer stage-0 activation) is allocated,
filled and freed; minimum of 5. Settings: glibc default (fresh mmap + page faults per block),
``tune_malloc`` (heap reuse, as the predictor does), and huge pages
(``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, as the command-line tools restart with), the last
in a child process because the tunable is read at start-up.
"""

from __future__ import annotations

import os
import subprocess
import sys

from napari_medspike.runtime import HUGE_PAGES_TUNABLE, reset_malloc, tune_malloc


TIMING = """
import time, torch
torch.set_num_threads(2)
times = []
for _ in range(5):
    t0 = time.perf_counter()
    x = torch.empty(4, 128, 256, 256)
    x.fill_(1.0)
    del x
    times.append(time.perf_counter() - t0)
seconds = min(times)
"""


def alloc_fill_seconds() -> float:
    scope: dict = {}
    exec(TIMING, scope)
    return scope["seconds"]


def main() -> None:
    reset_malloc()
    print(f"glibc default: {alloc_fill_seconds() * 1e3:6.1f} ms")
    tune_malloc()
    print(f"heap reuse   : {alloc_fill_seconds() * 1e3:6.1f} ms")
    reset_malloc()
    env = dict(os.environ, GLIBC_TUNABLES=HUGE_PAGES_TUNABLE)
    child = TIMING + "print(seconds)\n"
    out = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, check=True)
    print(f"huge pages   : {float(out.stdout.split()[-1]) * 1e3:6.1f} ms")


if __name__ == "__main__":
    main()
