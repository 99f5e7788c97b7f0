"""What running in the Segment dock costs over calling the core function, in one process.

    xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/dock_overhead.py [--rounds 6]

Segments one stack of 8 RGB 256x256 frames with the default model (resize, no mirror TTA) three
ways, in shuffled order each round:

- ``core``: ``predict_stack_steps`` in a plain thread while napari's event loop runs;
- ``dock``: the same job through the dock's worker and napari progress bar, as Segment runs it
  (napari's "in progress" animation slowed while it runs);
- ``dock, spinner at full speed``: the same, with napari's animation left as it is.

Prints the median wall time and process CPU time of each, and their ratios to ``core``. On a
machine without a GPU for the window (a remote desktop, a virtual machine, Xvfb), every frame of
napari's animation re-composes the whole window, OpenGL canvas included.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--model", default="default")
    args = parser.parse_args()

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_medspike import load_model
    from napari_medspike.common import run_job
    from napari_medspike.demo import settle
    from napari_medspike.inference.predictor import predict_stack_steps
    from napari_medspike.widgets import jobs

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1920, 1080)
    stack = (np.random.default_rng(0).random((8, 256, 256, 3)) * 255).astype(np.uint8)
    viewer.add_image(stack, rgb=True, name="stack")
    model = load_model(args.model)
    app = QApplication.instance()

    def until(flag: list) -> None:
        while not flag:
            app.processEvents()
            time.sleep(0.005)

    def job():
        return (yield from predict_stack_steps(model, stack, rgb=True, mode="resize", device="cpu", flips=False))

    def core() -> None:
        done: list = []
        thread = threading.Thread(target=lambda: (run_job(job()), done.append(True)))
        thread.start()
        until(done)
        thread.join()

    def dock() -> None:
        done: list = []
        jobs.start_worker(job, "Segment", on_return=lambda _: done.append(True))
        until(done)

    def dock_full_speed() -> None:
        speed = jobs.SPINNER_SPEED
        jobs.SPINNER_SPEED = 100
        try:
            dock()
        finally:
            jobs.SPINNER_SPEED = speed

    ways = {"core": core, "dock": dock, "dock, spinner at full speed": dock_full_speed}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    core()  # warm-up
    for round_ in range(args.rounds):
        order = list(ways)
        random.Random(round_).shuffle(order)
        for name in order:
            settle(0.2)
            wall, cpu = time.perf_counter(), time.process_time()
            ways[name]()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    base_wall = statistics.median(w for w, _ in times["core"])
    base_cpu = statistics.median(c for _, c in times["core"])
    print(f"8 frames of 256x256, {args.model}, {args.rounds} rounds; medians:")
    for name, runs in times.items():
        wall, cpu = statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)
        print(f"  {name:28s} wall {wall:5.2f} s ({wall / base_wall:4.2f}x core)   CPU {cpu:5.2f} s ({cpu / base_cpu:4.2f}x)")
    viewer.close()


if __name__ == "__main__":
    main()
