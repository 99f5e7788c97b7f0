"""``python -m napari_medspike``: napari with the three widgets docked on a bundled sample."""

from __future__ import annotations

import os
import sys

NO_DISPLAY = (
    "napari-medspike needs a display: no X11 or Wayland display was found (DISPLAY and WAYLAND_DISPLAY "
    "are unset). Run it from a desktop session, or, for scripted use on a headless machine, under a "
    "virtual display: xvfb-run -a python -m napari_medspike"
)


def display_problem(environ: dict[str, str] | None = None, platform: str = sys.platform) -> str | None:
    """Why napari cannot open a window here, or None. Qt's own message for a missing display
    on Linux ("libxcb-cursor0 is needed") sends people looking for the wrong fix."""
    env = os.environ if environ is None else environ
    if not platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return None
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    return NO_DISPLAY


def main(argv: list[str] | None = None) -> int:
    """Open napari with the plugin's docks on a bundled sample (``--sample``); the exit status."""
    import argparse

    from ._sample_data import SAMPLE_KEYS

    parser = argparse.ArgumentParser(
        prog="python -m napari_medspike",
        description="Open napari with the plugin's three docks (Segment, Spike inspector, Correct and fine-tune) "
        "on a bundled sample image.")
    parser.add_argument("--sample", default=SAMPLE_KEYS[0], choices=SAMPLE_KEYS,
                        help="the sample to open: a Kvasir-SEG polyp (default), a PH2 skin lesion, a BUSI "
                        "breast ultrasound, GlaS colon glands (histology), or a synthetic image")
    args = parser.parse_args(argv)
    problem = display_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from .runtime import reexec_with_huge_pages

    reexec_with_huge_pages()  # huge-page malloc for training from the GUI (napari_medspike.runtime)
    import napari

    from .demo import open_plugin

    viewer = napari.Viewer(title="napari-medspike")
    open_plugin(viewer, args.sample)
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
