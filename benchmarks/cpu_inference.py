"""CPU inference of the shipped spiking model: neurons band by band or in one piece, fp32 or bf16,
against MONAI's BasicUNet, all alternated in one process (A B C ... A B C ...).

    python benchmarks/cpu_inference.py [--model spiking [CHECKPOINT ...]] [--size 256] [--threads 2]
                                       [--repeats 7] [--train] [--json OUT]

"one piece" sets :data:`napari_medspike.models.neurons.BAND_BYTES` so large that every neuron
loop runs over whole tensors (as before the bands); "bands" is the default. bf16 is autocast,
as prediction runs the integer-spike model on CPUs with native bf16
(:func:`napari_medspike.runtime.bf16_inference`). ``--train`` adds one full-BPTT training step
at 128², batch 8, each way. Correctness is tested (tests/test_neuron_bands.py,
tests/test_precision.py); this script only times.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable

import torch

from napari_medspike import load_model
from napari_medspike.models import neurons, segmentation_loss
from napari_medspike.runtime import cpu_computes_bf16, tune_malloc

from fast_paths import compare  # this folder's script: cases alternated, median seconds each

ONE_PIECE = 1 << 40


def with_bands(band_bytes: int, fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        saved, neurons.BAND_BYTES = neurons.BAND_BYTES, band_bytes
        try:
            return fn()
        finally:
            neurons.BAND_BYTES = saved
    return run


def training_step(model: torch.nn.Module) -> Callable[[], None]:
    """One full-BPTT training step at 128², batch 8 (Adam at a negligible learning rate)."""
    xb, yb = torch.rand(8, 3, 128, 128), (torch.rand(8, 1, 128, 128) > 0.5).float()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-6)

    def step() -> None:
        model.train()
        loss = segmentation_loss(model(xb), yb)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        model.eval()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["spiking"],
                        help="shipped model names or checkpoint paths (several: all alternated in one process)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--train", action="store_true", help="also time a training step (128², batch 8)")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_malloc()  # as prediction runs
    from monai.networks.nets import BasicUNet

    models = {name: load_model(name).eval() for name in args.model}
    unet = BasicUNet(spatial_dims=2, in_channels=3, out_channels=1).eval()
    x = torch.rand(1, 3, args.size, args.size)

    def forward(net: torch.nn.Module, bf16: bool) -> Callable[[], object]:
        def run() -> object:
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with torch.inference_mode(), autocast:
                return net(x)
        return run

    cases = {
        "basicunet fp32": forward(unet, False),
        "basicunet bf16": forward(unet, True),
    }
    for name, model in models.items():
        cases.update({
            f"{name} fp32, one piece": with_bands(ONE_PIECE, forward(model, False)),
            f"{name} fp32, bands": forward(model, False),
            f"{name} bf16, one piece": with_bands(ONE_PIECE, forward(model, True)),
            f"{name} bf16, bands": forward(model, True),
        })
        if args.train:
            cases[f"{name} train step, one piece"] = with_bands(ONE_PIECE, training_step(model))
            cases[f"{name} train step, bands"] = training_step(model)
    results = compare(cases, args.repeats)
    base = results["basicunet fp32"]
    print(f"{args.size}², batch 1, {args.threads} threads, native bf16: {cpu_computes_bf16()}")
    for name, seconds in results.items():
        ratio = f"{seconds / base:5.2f}x BasicUNet fp32" if "train" not in name else ""
        print(f"{name:48s} {seconds * 1e3:8.1f} ms  {ratio}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": args.size, "threads": args.threads, "native_bf16": cpu_computes_bf16(),
                       "seconds": results}, f, indent=1)


if __name__ == "__main__":
    main()
