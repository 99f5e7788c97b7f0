"""Peak memory and time of tiled inference against image size (each size in a fresh process).

    python benchmarks/tiled_memory.py [--sizes 1024 2048 4096] [--model default] [--batch 4]

Prints, per size, the process's peak resident memory before predicting (model and image
loaded) and after, their difference, and the time. The model's working set is that of one tile
batch, whatever the image size; what grows with the image are its own buffers (the uint8 input,
its float32 copy, the blending accumulators and the output map: about 25 bytes per pixel).
Mirror test-time augmentation is off here (with it, each tile batch is four times larger and the
time about 3.8 times longer: ``benchmarks/tta_cost.py --mode tiled``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads({threads})
from napari_medspike import load_model
from napari_medspike.inference.predictor import predict

def peak_mb():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024

size, batch = {size}, {batch}
model = load_model({model!r})
rng = np.random.default_rng(0)
image = (rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
with torch.inference_mode():
    predict(model, image[:256, :256], mode="tiled", batch_size=batch, flips=False)  # warm-up
before = peak_mb()
t0 = time.perf_counter()
prob = predict(model, image, mode="tiled", batch_size=batch, flips=False)
seconds = time.perf_counter() - t0
print(json.dumps(dict(size=size, before_mb=before, peak_mb=peak_mb(), seconds=seconds, shape=list(prob.shape))))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--model", default="default")
    parser.add_argument("--batch", type=int, default=4, help="tiles per forward pass")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        code = CHILD.format(size=size, batch=args.batch, model=args.model, threads=args.threads)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["growth_mb"] = row["peak_mb"] - row["before_mb"]
        row["bytes_per_pixel"] = row["growth_mb"] * 2**20 / size**2
        rows.append(row)
        print(f"{size:5d}²: peak {row['peak_mb']:7.0f} MB (before predicting {row['before_mb']:6.0f} MB, "
              f"+{row['growth_mb']:5.0f} MB = {row['bytes_per_pixel']:4.1f} B/pixel), {row['seconds']:6.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
