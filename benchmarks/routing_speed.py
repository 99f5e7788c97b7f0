"""What the gate of a routed model costs: a routed model against its starting model alone.

    python benchmarks/routing_speed.py [--model default] [--repeats 7]

Builds a routed model from a shipped model and a copy of it (the gate fitted between the model's
recorded training images and the bundled skin-lesion sample with its mirror images, so nothing
outside the package is needed), then times ``predict`` (the model's recommended inference
setting) on each bundled sample with both models, alternating, in one process. Prints the
median times, which expert answered, and the ratio routed / alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from napari_medspike._sample_data import SAMPLES as SAMPLES_DIR
from napari_medspike.analysis.maps import model_input
from napari_medspike.data.io import read_pixels
from napari_medspike.engine.checkpoint import load_model
from napari_medspike.engine.routing import image_styles, recorded_styles, routed_model
from napari_medspike.inference.predictor import predict
from napari_medspike.models.routed import style_feature_dim


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    alone = load_model(args.model)
    recorded = recorded_styles(alone.info.to_metadata(), style_feature_dim(alone))
    if recorded is None:
        raise SystemExit(f"{args.model} has no domain record (training/record_domain.py adds one)")
    lesion = read_pixels(SAMPLES_DIR / "ph2.jpg")
    new = image_styles(alone, [lesion, lesion[:, ::-1], lesion[::-1], lesion[::-1, ::-1]])
    routed = routed_model(alone, alone, recorded, new)
    print(f"{args.model}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in ("kvasir", "ph2", "busi"):
        image = read_pixels(SAMPLES_DIR / f"{name}.jpg")
        for model in (alone, routed, alone, routed):  # warm-up
            predict(model, image)
        times = {"alone": [], "routed": []}
        for _ in range(args.repeats):
            for key, model in (("alone", alone), ("routed", routed)):
                start = time.perf_counter()
                predict(model, image)
                times[key].append(time.perf_counter() - start)
        chosen = bool(routed.route(model_input(image, alone.input_size))[0])
        expert = "fine-tuned copy" if chosen else "starting model"
        a, r = (statistics.median(times[k]) * 1000 for k in ("alone", "routed"))
        print(f"{name}: alone {a:.0f} ms, routed {r:.0f} ms (answered by the {expert}): ratio {r / a:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
