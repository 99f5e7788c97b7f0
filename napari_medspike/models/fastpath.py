"""One switch for the inference fast paths, so tests and benchmarks can compare with the plain ones.

The fast paths are exact rewrites of eval-mode arithmetic (batch norm folded into the preceding
convolution, linear layers merged, averages over time taken before linear layers, an in-place
LIF loop); they differ from the plain path only by floating-point rounding.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

# Per thread: the energy estimate turns the fast paths off in a worker thread while another
# thread may be segmenting with them on.
_state = threading.local()


def enabled() -> bool:
    """Whether eval-mode fast paths are on in this thread (the default)."""
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the plain modules inside this block, in this thread only (for comparisons)."""
    previous = enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = previous
