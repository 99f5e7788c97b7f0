"""``medspike-segment``: segment every image and video of a folder; masks, optional probabilities,
measurements."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from ..common import DEBUG_HELP, run_command
from ..runtime import PRECISION_HELP, PRECISIONS, reexec_with_huge_pages


def _segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..common import check_writable, run_job
    from ..engine.checkpoint import load_model
    from ..inference.folder import list_inputs, segment_folder_steps
    from ..inference.predictor import resolve_mode
    from ..runtime import pick_device

    inputs = list_inputs(args.input)  # says what is wrong before a model is loaded
    check_writable(args.out)  # (as is an output folder that cannot be written)
    model = load_model(args.model)
    device, note = pick_device(args.device)
    mode = resolve_mode(model, args.mode)
    print(f"{len(inputs)} files, model {args.model}, mode {mode}, {note}", file=sys.stderr)
    flips = {"auto": None, "on": True, "off": False}[args.flips]
    with tqdm(total=len(inputs), unit="file", file=sys.stderr) as bar, _warnings_above(bar):
        def on_event(event) -> None:
            bar.n = event.done
            bar.set_postfix_str(event.message, refresh=False)
            bar.refresh()

        result = run_job(segment_folder_steps(
            model, args.input, args.out, threshold=args.threshold, mode=mode, device=device, flips=flips,
            precision=args.precision, probabilities=args.probabilities, every=args.every), on_event)
    if result.earlier is not None:
        print(f"the earlier run's masks and table in {args.out} were moved to {result.earlier}", file=sys.stderr)
    for problem in result.skipped:
        print(f"skipped: {problem}", file=sys.stderr)
    for problem in result.incomplete:
        print(f"incomplete: {problem}", file=sys.stderr)
    print(f"{len(result.masks)} masks in {args.out / 'masks'}, {len(result.rows)} regions in {result.csv}",
          file=sys.stderr)
    if not result.masks:
        return 1
    return PARTLY if result.skipped or result.incomplete else 0


#: Exit status when some inputs were skipped or some videos ended early (their masks are written).
PARTLY = 3


@contextlib.contextmanager
def _warnings_above(bar) -> Iterator[None]:
    """The package's warnings on lines of their own above the progress bar (they were written
    after it, on its line)."""
    class Above(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                bar.write(self.format(record), file=sys.stderr)
            except Exception:
                self.handleError(record)

    # (a handler here also keeps Python's last-resort one from printing each warning again; a
    # program's own handlers, a log file, still get them)
    logger, handler = logging.getLogger("napari_medspike"), Above(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def main(argv: list[str] | None = None) -> int:
    """``medspike-segment``: segment images, videos or folders into mask files; the exit status."""
    if argv is None:  # a real command line (not a call from Python): huge-page malloc
        reexec_with_huge_pages()
    parser = argparse.ArgumentParser(
        prog="medspike-segment",
        description="Segment every image and video in a folder (or one file): writes OUT/masks/<name>.png "
        "(0/255; video frames as <video>_f<frame>.png), optionally OUT/probabilities/<name>.tif, and "
        "OUT/measurements.csv (one row per connected region: area in pixels, mean probability, centroid).",
        epilog=f"Exit status: 0 every input segmented; {PARTLY} some inputs skipped (unreadable) or videos cut "
        "short, the rest written; 1 nothing segmented; 2 an error before any work.",
    )
    parser.add_argument("input", type=Path, help="folder of images (png, jpg, bmp, tif) and videos (mp4, avi, "
                        "mov, mkv, webm), or one such file")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; an earlier "
                        "run's masks and table in it are moved to OUT/earlier/<time>/)")
    parser.add_argument("--model", default="default", help="shipped model name or checkpoint path")
    parser.add_argument("--mode", choices=["auto", "resize", "tiled"], default="auto",
                        help="resize: the whole image at the model's input size; tiled: overlapping tiles at full "
                        "resolution; auto (default): as the model was trained (tiled after random crops)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--flips", choices=["auto", "on", "off"], default="auto",
                        help="mirror test-time augmentation (auto: as the model recommends)")
    parser.add_argument("--probabilities", action="store_true", help="also write float32 probability maps")
    parser.add_argument("--every", type=int, default=1, metavar="K", help="videos: segment every K-th frame")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="auto", help=PRECISION_HELP)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    if not 0.0 < args.threshold < 1.0:
        parser.error(f"--threshold must lie in (0, 1), got {args.threshold}")
    if args.every < 1:
        parser.error(f"--every must be at least 1, got {args.every}")
    return run_command(parser.prog, lambda: _segment(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
