"""What mirror test-time augmentation costs: prediction time with flips off and on, one process.

    python benchmarks/tta_cost.py [--model default] [--repeats 7] [--mode resize|tiled]

Runs the bundled Kvasir sample through :func:`napari_medspike.inference.predictor.predict`
alternating flips off and on (so both see the same machine state) and prints the median of
each and their ratio. The four flips go through the network as one batch of four, so the ratio
is below 4 where a batch of four runs more efficiently than four single images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import napari_medspike
from napari_medspike import load_model
from napari_medspike.data.io import read_image
from napari_medspike.inference.predictor import predict

SAMPLE = Path(napari_medspike.__file__).parent / "samples" / "kvasir.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--mode", choices=["resize", "tiled"], default="resize")
    args = parser.parse_args()

    model = load_model(args.model)
    image = read_image(SAMPLE)
    times: dict[bool, list[float]] = {False: [], True: []}
    for flips in (False, True):  # warm-up
        predict(model, image, mode=args.mode, flips=flips)
    for _ in range(args.repeats):
        for flips in (False, True):
            t0 = time.perf_counter()
            predict(model, image, mode=args.mode, flips=flips)
            times[flips].append(time.perf_counter() - t0)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(json.dumps({"model": args.model, "mode": args.mode, "image": list(image.shape),
                      "flips_off_ms": round(off * 1e3, 1), "flips_on_ms": round(on * 1e3, 1),
                      "ratio": round(on / off, 2)}))


if __name__ == "__main__":
    main()
