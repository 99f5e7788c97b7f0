"""Long work off the GUI thread: a napari thread worker with a progress bar, its errors shown
as notifications, cancelled at its next step."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from napari.utils import progress
from napari.utils.notifications import show_error, show_info


class JobFailed(Exception):
    """A job's RuntimeError, passed on as an ordinary error (see :func:`start_worker`)."""


#: How fast napari's "in progress" animation plays while one of this plugin's jobs runs, in per
#: cent of its own speed (see :func:`calm_activity_spinners`).
SPINNER_SPEED = 10


_jobs_running = 0


def _activity_spinners() -> list[Any]:
    """The "in progress" animations (a 90-frame GIF) of napari's windows' status bars; empty
    where napari's window is laid out otherwise (they are not public)."""
    from qtpy.QtWidgets import QApplication

    movies = []
    for window in QApplication.topLevelWidgets():
        try:
            movie = window._activity_dialog._toggleButton._inProgressIndicator.movie()
        except (AttributeError, RuntimeError):
            continue
        if movie is not None and hasattr(movie, "setSpeed"):
            movies.append(movie)
    return movies


def calm_activity_spinners(running: bool) -> None:
    """Slow napari's "in progress" animation while a job of this plugin runs (``running``), and
    give it back its speed when the last one ends. Without a GPU for the window (a remote
    desktop, a virtual machine, Xvfb) every frame of it re-composes the whole window, OpenGL
    canvas included: segmenting 8 frames in the Segment dock took 2.0 s with it at full speed,
    1.0 s at a tenth, 0.8 s from Python, on 2 CPU cores (``benchmarks/dock_overhead.py``). It
    keeps turning, a tenth as fast."""
    global _jobs_running
    _jobs_running = max(0, _jobs_running + (1 if running else -1))
    speed = SPINNER_SPEED if _jobs_running else 100
    for movie in _activity_spinners():
        movie.setSpeed(speed)


def start_worker(
    job: Callable[[], Generator[Any, None, Any]],
    description: str,
    on_yield: Callable[[Any], None] | None = None,
    on_return: Callable[[Any], None] | None = None,
    on_finish: Callable[[], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
) -> Any:
    """Run a generator function in a napari thread worker with a progress bar.

    Yielded objects with ``done``/``total`` (or ``step``/``steps``) move the bar; errors become
    notifications (and go to ``on_error``, e.g. for the dock's status line); ``worker.quit()``
    stops the job at its next yield.
    """
    from napari.qt.threading import create_worker

    def guarded() -> Generator[Any, None, Any]:
        try:
            return (yield from job())
        except RuntimeError as err:
            # superqt treats a RuntimeError from a job as a deleted worker: it would emit neither
            # `errored` nor `finished`, and the dock would wait forever (torch raises these)
            raise JobFailed(f"{type(err).__name__}: {err}") from err

    def alive(callback: Callable[..., None] | None) -> Callable[..., None] | None:
        """``callback``, quiet when its dock was closed (with napari) while the job ran: Qt has
        deleted the widgets it would update, which is no error of the user's."""
        if callback is None:
            return None

        def call(*args: Any) -> None:
            try:
                callback(*args)
            except RuntimeError as err:
                if "has been deleted" not in str(err):
                    raise
        return call

    on_yield, on_return, on_finish, on_error = alive(on_yield), alive(on_return), alive(on_finish), alive(on_error)
    worker = create_worker(guarded, _ignore_errors=True)  # errors are shown by `errored` below, once
    bar = progress(total=0, desc=description)

    def yielded(event: Any) -> None:
        done = getattr(event, "done", None)
        total = getattr(event, "total", None)
        if done is None and hasattr(event, "step"):
            total = event.steps * event.epochs
            done = (event.epoch - 1) * event.steps + event.step
        if total:
            bar.total = total
            bar.n = done
            bar.set_description(f"{description}: {getattr(event, 'message', '')}".rstrip(": "))
            bar.refresh()
        if on_yield is not None:
            on_yield(event)

    def errored(err: Exception) -> None:
        show_error(f"{description} failed: {err}")
        if on_error is not None:
            on_error(err)

    def finished() -> None:
        try:
            bar.close()
        finally:  # (napari closed meanwhile: the bar's widget may be gone; the count goes down anyway)
            calm_activity_spinners(False)
        if on_finish is not None:
            on_finish()

    worker.yielded.connect(yielded)
    worker.errored.connect(errored)
    worker.aborted.connect(lambda: show_info(f"{description} cancelled"))
    if on_return is not None:
        worker.returned.connect(on_return)
    worker.finished.connect(finished)
    worker.start()
    calm_activity_spinners(True)  # (once it started: its `finished` brings the count down)
    return worker
