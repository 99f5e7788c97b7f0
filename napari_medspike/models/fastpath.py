"""One switch for the inference fast paths, so tests and benchmarks can compare with the plain ones.

The fast paths are exact rewrites of eval-mode arithmetic (batch norm folded into the preceding
convolution, linear layers merged, averages over time taken before linear layers, an in-place
LIF loop); they differ from the plain path only by floating-point rounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_enabled = True


def enabled() -> bool:
    """Whether eval-mode fast paths are on (the default)."""
    return _enabled


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the plain modules inside this block (for comparisons)."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous
