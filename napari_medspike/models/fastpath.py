"""One switch for the inference fast paths, so tests and benchmarks can compare with the plain ones.

The fast paths are exact rewrites of eval-mode arithmetic (batch norm folded into the preceding
convolution, linear layers merged, averages over time taken before linear layers, an in-place
LIF loop); they differ from the plain path only by floating-point rounding. In float64 the two
give the same spikes; in float32, a membrane that lands within rounding of a threshold can fire on
one path and not the other, and such flips grow with depth (on the shipped spiking model at 128²:
none of stage 0's value spikes differ, about 2 % of stage 3's, up to 8 % at its last timestep;
logits by up to 0.8). On 12 validation images of each shipped model at the original resolution
(float32, no TTA), 0.02-0.55 % of the mask pixels differ, 0.4-5 % of those either mask marks
(``benchmarks/fast_path_agreement.py``; BENCHMARKS.md). Segment runs the fast paths; the spike inspector's maps and the energy
estimate run the plain path, so what the inspector shows comes from one kind of pass.
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
