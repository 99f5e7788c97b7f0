"""Size, cost and CPU latency of the three architectures, and firing rates on a real image.

Run: ``python benchmarks/model_summary.py [--image PATH] [--threads 2] [--repeats 7]``.
Untrained models: batch-norm statistics are first estimated on the image itself (eval-mode BN
with its initial 0/1 statistics leaves an untrained SNN silent).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_medspike import create_model
from napari_medspike.analysis.energy import count_macs, estimate_energy
from napari_medspike.data.io import image_to_tensor, read_image

# the Kvasir-SEG photo of the figures in BENCHMARKS.md; without the datasets beside the repository,
# the bundled sample made from it (the same photo downscaled to 384 px)
DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared/data/kvasir-seg/images/cju0qkwl35piu0993l0dewei2.jpg"
if not DEFAULT_IMAGE.is_file():
    DEFAULT_IMAGE = Path(__file__).resolve().parents[1] / "napari_medspike/samples/kvasir.jpg"


def calibrate_bn(model: torch.nn.Module, x: torch.Tensor, passes: int = 2) -> torch.nn.Module:
    """Estimate BN running statistics on ``x`` (cumulative average), then switch to eval."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model(x)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    image = image_to_tensor(read_image(args.image))
    x = torch.nn.functional.interpolate(image, size=(args.size, args.size), mode="bilinear", antialias=True)
    results = {}
    for arch in ("medspikeformer", "medqkformer", "ann_twin"):
        model = calibrate_bn(create_model(arch), x)
        params = sum(p.numel() for p in model.parameters())
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        counts = counter.get_flop_counts()["Global"]
        conv_macs = counts.get(torch.ops.aten.convolution, 0) // 2
        total_macs = counter.get_total_flops() // 2
        times = []
        with torch.inference_mode():
            model(x)  # warm-up
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
        report = estimate_energy(model, x)
        results[arch] = {
            "parameters": params,
            "conv_gmacs": conv_macs / 1e9,
            # as the energy estimate counts: the attention heads' products inside each head only
            "gmacs": count_macs(model, x) / 1e9,
            # as the kernels run them: block-diagonal head products with their zeros
            "kernel_gmacs": total_macs / 1e9,
            "cpu_forward_s_median": statistics.median(times),
            "cpu_forward_s_min": min(times),
            "cpu_forward_s_max": max(times),
            "stage_firing_rates": report.stage_firing_rates,
            "mean_firing_rate": report.mean_firing_rate,
            "energy_mj": report.energy_pj / 1e9,
            "dense_ann_energy_mj": report.ann_energy_pj / 1e9,
        }
        r = results[arch]
        print(
            f"{arch:15s} params {params:>10,d}  conv {r['conv_gmacs']:6.2f} GMAC  all {r['gmacs']:6.2f} GMAC"
            f" ({r['kernel_gmacs']:.2f} as run, zeros between heads included)"
            f"  CPU {r['cpu_forward_s_median'] * 1e3:7.0f} ms (min {r['cpu_forward_s_min'] * 1e3:.0f},"
            f" max {r['cpu_forward_s_max'] * 1e3:.0f})"
        )
        print("   ", report.summary().replace("\n", "\n    "))
    print(f"image {args.image} resized to {args.size}x{args.size}, {args.threads} threads, torch {torch.__version__}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
