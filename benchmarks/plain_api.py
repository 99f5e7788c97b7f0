"""What a Python user gets: a plain ``create_model(...)(x)`` forward against the same forward
after ``napari_medspike.tune_malloc()`` (what ``load_model``, ``predict`` and the plugin do).

    python benchmarks/plain_api.py [--arch medspikeformer] [--size 256] [--repeats 5]

Both run in this process, alternated, minimum of ``--repeats`` each (one warm-up pass each);
prints the times and their ratio.
"""

from __future__ import annotations

import argparse
import time

import torch

from napari_medspike import create_model
from napari_medspike.runtime import reset_malloc, tune_malloc


def forward_ms(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model(x)
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="medspikeformer")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_model(args.arch).eval()
    x = torch.rand(1, 3, args.size, args.size)
    times: dict[str, list[float]] = {"plain create_model": [], "after tune_malloc()": []}
    for name in times:  # warm-up
        (tune_malloc if "tune" in name else reset_malloc)()
        forward_ms(model, x)
    for _ in range(args.repeats):
        for name in times:
            (tune_malloc if "tune" in name else reset_malloc)()
            times[name].append(forward_ms(model, x))
    reset_malloc()
    best = {name: min(t) for name, t in times.items()}
    for name, ms in best.items():
        print(f"{args.arch} {args.size}² batch 1, {name}: {ms:.0f} ms (min of {args.repeats})")
    print(f"ratio plain / tuned: {best['plain create_model'] / best['after tune_malloc()']:.2f}")


if __name__ == "__main__":
    main()
