"""Before/after of each CPU fast path, measured side by side in one process (A B A B ...).

    python benchmarks/fast_paths.py [--threads 2] [--repeats 5] [--json OUT]

``fastpath.disabled()`` gives the plain path (spikingjelly's LIF, BN as separate layers, the
interaction blocks' grouped convs and sums, averaging over time at the head); ``tune_malloc`` /
``reset_malloc`` switch glibc between heap reuse and its default. Correctness of every fast
path is tested in tests/test_fast_paths.py; this script only times them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from spikingjelly.activation_based import functional

from napari_medspike import create_model
from napari_medspike.models import fastpath, segmentation_loss
from napari_medspike.models.attention import SDSA
from napari_medspike.models.neurons import make_lif
from napari_medspike.runtime import reset_malloc, tune_malloc

from model_summary import calibrate_bn  # this folder's script (run as python benchmarks/...)


def compare(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each case, alternating them after one warm-up each."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        fn()
    for _ in range(repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def plain(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with fastpath.disabled():
            return fn()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results: dict[str, dict[str, float]] = {}

    # 1. The LIF neuron alone, inference and training (forward + backward).
    lif = make_lif()
    x = torch.randn(4, 1, 128, 256, 256) * 1.5 + 0.5

    def lif_forward() -> object:
        functional.reset_net(lif)
        with torch.inference_mode():
            return lif(x)

    xg = x[:, :, :32].clone().requires_grad_()

    def lif_train() -> object:
        functional.reset_net(lif)
        lif(xg).sum().backward()
        return xg.grad

    tune_malloc()
    results["LIF [4,1,128,256,256] inference"] = compare({"plain": plain(lif_forward), "fast": lif_forward}, args.repeats)
    results["LIF [4,1,32,256,256] forward+backward"] = compare({"plain": plain(lif_train), "fast": lif_train}, args.repeats)

    # 2. One SDSA block at stage 0 resolution (C = 32, 256², T = 4), eval.
    sdsa = SDSA(32, "lif", timesteps=4)
    xs = torch.randn(1, 1, 32, 256, 256)
    with torch.no_grad():
        sdsa.train()(xs.expand(4, -1, -1, -1, -1))
    sdsa.eval()

    def sdsa_forward() -> object:
        functional.reset_net(sdsa)
        with torch.inference_mode():
            return sdsa(xs)

    results["SDSA block, stage 0, eval"] = compare({"plain": plain(sdsa_forward), "fast": sdsa_forward}, args.repeats)

    # 3. Whole MedSpikeFormer forward, 256², batch 1: fast paths x allocator.
    image = torch.rand(1, 3, 256, 256)
    model = calibrate_bn(create_model("medspikeformer"), image)

    def forward() -> object:
        with torch.inference_mode():
            return model(image)

    whole: dict[str, float] = {}
    for malloc in ("default", "tuned"):
        (reset_malloc if malloc == "default" else tune_malloc)()
        for name, sec in compare({"plain": plain(forward), "fast": forward}, args.repeats).items():
            whole[f"{name}, malloc {malloc}"] = sec
    results["MedSpikeFormer forward 256² batch 1"] = whole

    # 4. Training step, batch 2 (glibc default allocator, as the in-process trainer runs).
    reset_malloc()
    net = create_model("medspikeformer").train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    xb, yb = torch.rand(2, 3, 256, 256), (torch.rand(2, 1, 256, 256) > 0.5).float()

    def step() -> object:
        loss = segmentation_loss(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def step_checkpointed() -> object:
        net.gradient_checkpointing = True
        try:
            return step()
        finally:
            net.gradient_checkpointing = False

    results["MedSpikeFormer training step 256² batch 2"] = compare(
        {"plain": plain(step), "fast": step, "fast + checkpointing": step_checkpointed}, max(2, args.repeats // 2)
    )

    for title, row in results.items():
        base = row.get("plain") or row.get("plain, malloc default")
        cells = ", ".join(f"{k} {v * 1e3:.0f} ms ({base / v:.2f}x)" for k, v in row.items())
        print(f"{title}: {cells}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
