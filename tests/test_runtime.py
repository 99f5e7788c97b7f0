"""Allocator tuning: harmless in-process, and the command-line re-exec sets huge pages once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from napari_medspike.runtime import release_free_memory, reset_malloc, tune_malloc

linux_glibc = pytest.mark.skipif(
    sys.platform != "linux" or not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only"
)


def test_tune_malloc_is_idempotent_and_reversible():
    first = tune_malloc()
    assert tune_malloc() is first
    x = torch.ones(64, 1024, 1024)  # 256 MB: above glibc's mmap threshold
    assert float(x.sum()) == 64 * 1024 * 1024
    reset_malloc()
    y = torch.ones(64, 1024, 1024)
    assert float(y.sum()) == 64 * 1024 * 1024


KEEPS = (
    "import sys, torch\n"
    "from napari_medspike.runtime import reset_malloc, tune_malloc\n"
    "if sys.argv[1] in ('tuned', 'reset'): assert tune_malloc()\n"
    "if sys.argv[1] == 'reset': reset_malloc()\n"
    "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
    "before = rss(); x = torch.ones(64, 1024, 1024); del x; print(rss() - before)\n"
)


@linux_glibc
def test_tuned_malloc_keeps_large_freed_blocks_for_reuse():
    """The setting takes effect: a freed 256 MB block stays in the process for the next pass
    (glibc's default unmaps it at once)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MEDSPIKE_MALLOC")}
    kept = {mode: float(subprocess.run([sys.executable, "-c", KEEPS, mode], env=env, capture_output=True,
                                       text=True, check=True).stdout.strip().splitlines()[-1])
            for mode in ("default", "tuned", "reset")}
    assert kept["default"] < 64 and kept["tuned"] > 192, kept
    assert kept["reset"] < 64, kept  # reset_malloc gives glibc's own behaviour back


CHILD = (
    "import os\n"
    "from napari_medspike.runtime import reexec_with_huge_pages\n"
    "reexec_with_huge_pages()\n"
    "print(os.environ.get('GLIBC_TUNABLES', ''))\n"
)


@linux_glibc
def test_command_line_restarts_once_with_huge_pages():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MEDSPIKE_MALLOC")}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "glibc.malloc.hugetlb=1"


@linux_glibc
def test_help_is_not_restarted():
    """``--help`` prints and exits: restarting would only import torch twice (7.5 s instead of 3 s
    for ``medspike-train --help`` on a 2-core machine)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MEDSPIKE_MALLOC")}
    out = subprocess.run([sys.executable, "-c", CHILD, "--help"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@linux_glibc
def test_opting_out_keeps_glibc_defaults():
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["MEDSPIKE_MALLOC"] = "default"
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


HOLES = (
    "import ctypes, torch\n"
    "from napari_medspike.runtime import release_free_memory\n"
    "ctypes.CDLL('libc.so.6').mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: 4 MB blocks from the heap\n"
    "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
    "pairs = [(torch.ones(1 << 20), torch.ones(16 << 10)) for _ in range(100)]  # 4 MB blocks between 64 KB ones\n"
    "kept = [small for _, small in pairs]; del pairs  # 400 MB of holes the heap cannot shrink past\n"
    "before = rss(); released = release_free_memory(); print(released, before - rss())\n"
)


@linux_glibc
def test_release_free_memory_returns_heap_holes_to_the_system():
    """Freed blocks in the middle of the heap stay resident (what raises a training run's peak
    step after step) until released."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MEDSPIKE_MALLOC")}
    out = subprocess.run([sys.executable, "-c", HOLES], env=env, capture_output=True, text=True, check=True)
    released, freed_mb = out.stdout.split()
    assert released == "True" and float(freed_mb) > 300, out.stdout


def test_release_free_memory_leaves_tuned_malloc_alone():
    tune_malloc()
    try:
        assert release_free_memory() is False  # the heap is kept on purpose for inference
    finally:
        reset_malloc()


TUNED_HOLES = (
    "import torch\n"
    "from napari_medspike.runtime import release_free_memory, tune_malloc\n"
    "assert tune_malloc()\n"
    "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
    "pairs = [(torch.ones(1 << 20), torch.ones(16 << 10)) for _ in range(100)]  # 4 MB blocks between 64 KB ones\n"
    "kept = [small for _, small in pairs]; del pairs\n"
    "before = rss(); print(release_free_memory(), before - rss())\n"
    "before = rss(); print(release_free_memory(even_if_tuned=True), before - rss())\n"
)


@linux_glibc
def test_work_not_repeated_by_inference_gives_memory_back_in_a_tuned_process():
    """Loading a model tunes the allocator to keep freed memory for the next inference pass. A
    training step or an inspection leaves holes the next Segment does not refill: those go back
    to the system when asked, tuned or not."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MEDSPIKE_MALLOC")}
    out = subprocess.run([sys.executable, "-c", TUNED_HOLES], env=env, capture_output=True, text=True, check=True)
    (kept, kept_mb), (released, freed_mb) = (line.split() for line in out.stdout.strip().splitlines()[-2:])
    assert kept == "False" and abs(float(kept_mb)) < 16, out.stdout
    assert released == "True" and float(freed_mb) > 300, out.stdout


def test_bf16_autocast_is_the_cuda_default_except_for_multi_step_spiking_models():
    from napari_medspike import create_model
    from napari_medspike.runtime import bf16_autocast_pays

    assert not bf16_autocast_pays(create_model("medspikeformer", timesteps=4))
    assert bf16_autocast_pays(create_model("medspikeformer", timesteps=1))
    assert bf16_autocast_pays(create_model("medqkformer", widths=[8, 16, 32, 64]))
    assert bf16_autocast_pays(create_model("ann_twin"))
