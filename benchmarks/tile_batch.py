"""Tiled prediction on the CPU: tiles per batch against total time and the longest wait
between progress events (a Cancel waits that long at most).

    python benchmarks/tile_batch.py [--model spiking] [--size 600 800] [--batches 4 1 2]

Batch sizes alternate in one process, twice each, on a random 8-bit image (mirror TTA on).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="spiking")
    parser.add_argument("--size", type=int, nargs=2, default=(600, 800))
    parser.add_argument("--batches", type=int, nargs="+", default=(4, 1, 2))
    args = parser.parse_args()

    from napari_medspike import load_model
    from napari_medspike.inference.predictor import predict_steps

    model = load_model(args.model)
    image = (np.random.default_rng(0).random((*args.size, 3)) * 255).astype(np.uint8)
    for batch in [*args.batches, *args.batches]:
        start = last = time.perf_counter()
        gaps = []
        for _ in predict_steps(model, image, mode="tiled", batch_size=batch, flips=True, device="cpu"):
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
        print(f"{args.model}, {batch} tile(s) per batch: {time.perf_counter() - start:.1f} s, "
              f"longest wait between progress events {max(gaps):.1f} s", flush=True)


if __name__ == "__main__":
    main()
