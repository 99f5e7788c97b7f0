"""``medspike-bench``: speed, memory and cost of the segmenters side by side.

Forward passes run in one process with models alternated (A B C A B C ...) after a warm-up, so
that drift of the machine hits all of them alike. On the CPU each model's training steps run in
a fresh process of its own, with the allocator as the command-line trainer has it (the in-process
malloc tuning used for inference would fix glibc's mmap threshold and slow training down); on
CUDA they alternate in-process. Each figure is the median (min-max) over the repeats. MONAI's ``BasicUNet`` is the
outside baseline when MONAI is installed (``pip install .[bench]``). Results go to JSON and a
markdown table. Benchmarks are not tests: correctness of fast paths is tested in ``tests/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..common import DEBUG_HELP, check_writable, run_command
from ..models import create_model
from ..models.registry import model_class
from ..runtime import huge_pages_requested, reexec_with_huge_pages, tune_malloc

#: Bench names for the paper's layout of MedSpikeFormer and its twin (``layout="reference"``).
REFERENCE_SUFFIX = "-reference"
INTEGER_SUFFIX = "-integer"


def bench_names() -> list[str]:
    """The names :func:`build_models` takes."""
    from ..models.registry import TRAINABLE_ARCHITECTURES

    reference = [f"{arch}{REFERENCE_SUFFIX}" for arch in ("medspikeformer", "ann_twin")]
    return [*TRAINABLE_ARCHITECTURES, *reference, f"medspikeformer{INTEGER_SUFFIX}", "basicunet"]


def build_models(names: list[str], timesteps: int) -> dict[str, torch.nn.Module]:
    """Untrained models by bench name: an architecture, ``basicunet``, or
    ``medspikeformer-reference`` / ``ann_twin-reference`` for the paper's layout,
    ``medspikeformer-integer`` for integer spikes (up to 4 per timestep)."""
    models: dict[str, torch.nn.Module] = {}
    for name in names:
        arch, layout = name, {}
        if name.endswith(REFERENCE_SUFFIX):
            arch, layout = name[: -len(REFERENCE_SUFFIX)], {"layout": "reference"}
        elif name == "medspikeformer" + INTEGER_SUFFIX:
            arch, layout = "medspikeformer", {"spike_levels": 4, "threshold": 0.5}
        if name == "basicunet":
            try:
                from monai.networks.nets import BasicUNet
            except ImportError:
                print("MONAI not installed: skipping the BasicUNet baseline (pip install .[bench])", file=sys.stderr)
                continue
            models[name] = BasicUNet(spatial_dims=2, in_channels=3, out_channels=1)
        else:
            options = {"timesteps": timesteps} if model_class(arch).configurable_timesteps else {}
            models[name] = create_model(arch, **options, **layout)
    return models


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Floating-point operations of one forward pass of ``model`` on ``x`` (torch's FLOP counter)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, int]:
    """Seconds and (CUDA) peak allocated memory of one call; CPU memory comes from
    :func:`probe_peak_rss`."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0, torch.cuda.max_memory_allocated() if device.type == "cuda" else 0


def _fresh_process(code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh Python (same environment: huge-page malloc, no in-process malloc
    tuning); it prints one JSON line, which is returned with the process's own peak RSS (MB)."""
    import subprocess

    code += (
        # VmHWM is this process's own peak; ru_maxrss can carry the parent's peak over exec (it
        # does on Linux), so it is only the fallback where there is no /proc (macOS: bytes;
        # Windows: none, NaN)
        "\ntry:\n    out['peak_mb'] = next(int(l.split()[1]) for l in open('/proc/self/status')"
        " if l.startswith('VmHWM')) / 1024"
        "\nexcept OSError:\n    try:\n        import resource, sys"
        "\n        out['peak_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss"
        " / (2 ** 20 if sys.platform == 'darwin' else 1024)"
        "\n    except ImportError:\n        out['peak_mb'] = float('nan')"
        "\nimport json; print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"benchmark subprocess failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def probe_peak_rss(name: str, timesteps: int, size: int, batch: int, threads: int) -> float:
    """Peak RSS (MB) of a fresh process that builds one model and runs one forward pass: in a
    shared process freed memory is reused, so only a fresh process tells."""
    return _fresh_process(
        "import torch\n"
        f"torch.set_num_threads({threads})\n"
        "from napari_medspike.cli.bench import build_models\n"
        f"m = build_models([{name!r}], {timesteps})[{name!r}]\n"
        "with torch.inference_mode(): m.eval()(torch.rand({batch}, 3, {size}, {size}))\n".format(batch=batch, size=size)
        + "out = {}"
    )["peak_mb"]


def probe_training(
    name: str, timesteps: int, size: int, batch: int, threads: int, repeats: int,
    checkpointing: bool = False, sltt: int = 0,
) -> dict[str, Any]:
    """Seconds per training step (after one warm-up step) and peak RSS (MB) of a fresh process
    that trains one model as the trainer does: the allocator as the command-line trainer leaves
    it (in-process malloc tuning would slow training down), optimiser state included."""
    return _fresh_process(
        "import time, torch\n"
        f"torch.set_num_threads({threads})\n"
        "from napari_medspike.cli.bench import build_models, train_forward\n"
        "from napari_medspike.models import segmentation_loss\n"
        "from napari_medspike.runtime import release_free_memory\n"
        f"m = build_models([{name!r}], {timesteps})[{name!r}].train()\n"
        f"m.gradient_checkpointing = {checkpointing} and getattr(m, 'supports_checkpointing', False)\n"
        "m.check_inputs = False\n"
        f"x = torch.rand({batch}, 3, {size}, {size}); y = (torch.rand({batch}, 1, {size}, {size}) > 0.5).float()\n"
        "opt = torch.optim.Adam(m.parameters(), lr=1e-4)\n"
        "times = []\n"
        f"for i in range({repeats} + 1):\n"
        "    t0 = time.perf_counter()\n"
        f"    loss = segmentation_loss(train_forward(m, x, {sltt}).float(), y)\n"
        "    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()\n"
        "    del loss; release_free_memory()  # as the trainer does after each CPU step\n"
        "    times.append(time.perf_counter() - t0)\n"
        "out = {'seconds': times[1:]}"
    )


def uses_sltt(model: torch.nn.Module, sltt: int) -> bool:
    """Whether a training step of ``model`` runs SLTT-``sltt`` (LIF models with T > 1 only)."""
    return bool(sltt) and getattr(model, "neuron_kind", "") == "lif" and getattr(model, "timesteps", 1) > 1


def train_forward(model: torch.nn.Module, x: torch.Tensor, sltt: int = 0) -> torch.Tensor:
    """The forward of a training step: SLTT-``sltt`` where it applies, else plain."""
    if uses_sltt(model, sltt):
        from ..models.sltt import sltt_forward

        return sltt_forward(model, x, k=sltt)
    return model(x)


def spread(values: list[float]) -> dict[str, float]:
    """The median, minimum and maximum of repeated timings."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark the parsed command line asks for; the results as one JSON-ready record
    (machine, then per model: parameters, FLOPs, forward and training-step times, peak memory)."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    # forward passes as the plugin runs them (heap-tuned malloc); training as the trainer does
    malloc_tuned = tune_malloc() if args.malloc == "tuned" else False
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    models = {k: m.to(device) for k, m in build_models(args.models, args.timesteps).items()}
    for model in models.values():
        model.gradient_checkpointing = args.checkpointing and getattr(model, "supports_checkpointing", False)
    bf16 = args.bf16 if device.type == "cuda" else device.type == "cpu" and args.cpu_bf16
    dtypes = ["fp32"] + (["bf16"] if bf16 else [])
    size = args.size
    results: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "malloc": {"inference_heap_tuned": malloc_tuned, "huge_pages": huge_pages_requested()},
        },
        "size": size,
        "models": {},
    }
    for name, model in models.items():
        x1 = torch.rand(1, 3, size, size, device=device)
        results["models"][name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "gflops": count_flops(model.eval(), x1) / 1e9,
        }
    for dtype in dtypes:
        if args.malloc == "tuned":
            tune_malloc()
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
        for batch in args.batches:
            x = torch.rand(batch, 3, size, size, device=device)
            times: dict[str, list[float]] = {n: [] for n in models}
            mems: dict[str, list[int]] = {n: [] for n in models}
            with torch.inference_mode(), autocast:
                for model in models.values():
                    model.eval()(x)  # warm-up
                for _ in range(args.repeats):
                    for name, model in models.items():
                        dt, mem = timed(lambda: model(x), device)
                        times[name].append(dt)
                        mems[name].append(mem)
            for name in models:
                entry = results["models"][name].setdefault(f"forward_{dtype}", {})
                entry[f"batch{batch}"] = {
                    "seconds": spread(times[name]),
                    "images_per_s": batch / statistics.median(times[name]),
                    "peak_mem_mb": (max(mems[name]) / 2**20 if device.type == "cuda"
                                    else probe_peak_rss(name, args.timesteps, size, batch, args.threads)),
                }
                print(f"{name:15s} forward {dtype} batch {batch}: {statistics.median(times[name]) * 1e3:8.1f} ms "
                      f"({batch / statistics.median(times[name]):.1f} img/s)", file=sys.stderr)
        if args.train_repeats > 0 and (dtype == "fp32" or device.type == "cuda"):  # CPU training: fp32
            b = args.train_batch
            x = torch.rand(b, 3, size, size, device=device)
            y = (torch.rand(b, 1, size, size, device=device) > 0.5).float()
            from ..models import segmentation_loss

            optimisers = {n: torch.optim.Adam(m.parameters(), lr=1e-4) for n, m in models.items()}

            def step(name: str) -> None:
                model, opt = models[name].train(), optimisers[name]
                with autocast:
                    loss = segmentation_loss(train_forward(model, x, args.sltt).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            times: dict[str, list[float]] = {n: [] for n in models}
            peaks: dict[str, float] = {}
            if device.type == "cuda":
                for name in models:
                    step(name)  # warm-up (allocates optimiser state)
                for _ in range(args.train_repeats):
                    for name in models:
                        dt, mem = timed(lambda: step(name), device)
                        times[name].append(dt)
                        peaks[name] = max(peaks.get(name, 0.0), mem / 2**20)
            else:  # one fresh process per model: the allocator state of a real training run
                for name in models:
                    probe = probe_training(name, args.timesteps, size, b, args.threads, args.train_repeats,
                                           args.checkpointing, args.sltt)
                    times[name], peaks[name] = probe["seconds"], probe["peak_mb"]
            for name in models:
                peak = peaks[name]
                results["models"][name][f"train_{dtype}"] = {
                    "batch": b,
                    "checkpointing": bool(getattr(models[name], "gradient_checkpointing", False)),
                    "sltt": args.sltt if uses_sltt(models[name], args.sltt) else 0,
                    "seconds": spread(times[name]),
                    "seconds_per_image": statistics.median(times[name]) / b,
                    "peak_mem_mb": peak,
                }
                print(f"{name:15s} train {dtype} batch {b}: {statistics.median(times[name]):8.2f} s/step", file=sys.stderr)
    return results


def markdown(results: dict[str, Any]) -> str:
    """The results as a markdown table (one row per model and precision)."""
    m = results["machine"]
    batches = {int(key[len("batch"):]) for r in results["models"].values() for k, fwd in r.items()
               if k.startswith("forward_") for key in fwd}
    big = max(batches - {1}, default=8)  # the second column: the largest batch that ran
    lines = [
        f"Machine: {m['device']} ({m['processor']}, {m['cpus']} CPUs, {m['threads']} threads), torch {m['torch']}, "
        f"input {results['size']}², median (min-max) over repeats, models alternated in one process.",
        "",
        f"| model | params | GFLOP | precision | fwd b1 ms | fwd b{big} ms | img/s (b{big}) | train s/img | train peak MB "
        "| train batch |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    def ms(entry: dict | None) -> str:
        if not entry:
            return "–"
        t = entry["seconds"]
        return f"{t['median'] * 1e3:.0f} ({t['min'] * 1e3:.0f}–{t['max'] * 1e3:.0f})"

    for name, r in results["models"].items():
        for dtype in ("fp32", "bf16"):
            fwd = r.get(f"forward_{dtype}")
            if not fwd:
                continue
            b1, bb, tr = fwd.get("batch1"), fwd.get(f"batch{big}"), r.get(f"train_{dtype}")
            rate = f"{bb['images_per_s']:.1f}" if bb else "–"
            notes = [n for n, on in (("checkpointed", tr and tr.get("checkpointing")),
                                     (f"SLTT-{tr and tr.get('sltt')}", tr and tr.get("sltt"))) if on]
            train = (f"{tr['seconds_per_image']:.3g} | {tr['peak_mem_mb']:.0f} | {tr['batch']}"
                     + (f" ({', '.join(notes)})" if notes else "")) if tr else "– | – | –"
            lines.append(
                f"| {name} | {r['parameters'] / 1e6:.2f} M | {r['gflops']:.1f} | {dtype} | {ms(b1)} | {ms(bb)} "
                f"| {rate} | {train} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``medspike-bench``: parse ``argv`` (default: the command line), run, print and save; the exit status."""
    if argv is None:  # a real command line (not a call from Python): huge-page malloc
        reexec_with_huge_pages()
    parser = argparse.ArgumentParser(prog="medspike-bench", description=__doc__.splitlines()[0])
    names = bench_names()
    parser.add_argument("--models", nargs="+", default=["medspikeformer", "medqkformer", "ann_twin", "basicunet"],
                        metavar="NAME", help=f"models to time, side by side: {', '.join(names)}")
    parser.add_argument("--timesteps", type=int, default=4, help="MedSpikeFormer T")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-repeats", type=int, default=2, help="0 skips the training step")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="CUDA: skip the bf16 runs")
    parser.add_argument("--cpu-bf16", action="store_true",
                        help="CPU: also time forward passes under bf16 autocast (how prediction runs the "
                        "integer-spike spiking model on CPUs with native bf16)")
    parser.add_argument("--sltt", type=int, default=0, metavar="K",
                        help="train MedSpikeFormer with SLTT-K (K random timesteps, spatial gradients; 0: BPTT)")
    parser.add_argument("--checkpointing", action="store_true",
                        help="train with activation checkpointing where a model supports it")
    parser.add_argument("--malloc", choices=["tuned", "default"], default="tuned",
                        help="glibc allocator: keep freed large buffers (tuned, as the plugin does) or not")
    parser.add_argument("--out", type=Path, default=Path("bench"), help="folder for bench.json and bench.md")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    unknown = [name for name in args.models if name not in names]
    if unknown:
        parser.error(f"unknown model {', '.join(unknown)}; choose from {', '.join(names)}")
    # checked before minutes of timing, each with one line instead of a traceback after them
    for option, value, least in (("--size", args.size, 16), ("--repeats", args.repeats, 1),
                                 ("--train-repeats", args.train_repeats, 0), ("--train-batch", args.train_batch, 1),
                                 ("--threads", args.threads, 1), ("--timesteps", args.timesteps, 1),
                                 ("--batches", min(args.batches), 1)):
        if value < least:
            parser.error(f"{option} must be at least {least}, got {value}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this PyTorch sees no CUDA GPU; use --device cpu")

    def timed() -> int:
        check_writable(args.out)
        results = run(args)
        (args.out / "bench.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
        table = markdown(results)
        (args.out / "bench.md").write_text(table, encoding="utf-8")
        print(table)
        return 0

    return run_command(parser.prog, timed, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
