"""Small helpers every layer of the package uses, with no dependency of their own (no torch).

The bottom of the package: ``models``, ``data``, ``engine``, ``inference``, the widgets and the
napari reader/writer may import from here; this module imports nothing from them.
"""

from __future__ import annotations

import errno as errno_codes
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Temporary files of :func:`atomic_write` are named ``.<final name>.<random>.tmp``.
TEMP_FILE_PATTERN = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")
#: Temporary files older than this (seconds) belong to a writer that died (see
#: :func:`remove_stale_temp_files`); a live writer keeps its file for well under a minute.
STALE_TEMP_AGE_S = 3600.0


class InputError(ValueError):
    """An input the network or the reading of an image cannot take; the message says what to
    change (:class:`~napari_medspike.data.io.ImageReadError` is one)."""


class WriteError(OSError):
    """Writing a file failed (a full disk, a quota, a write error). The message names the final
    file and says what happened; the file that was there before, if any, is unchanged.

    ``path`` is the final file; ``errno`` is set when the cause had one (e.g. ``ENOSPC``)."""

    def __init__(self, message: str, path: str | Path | None = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None
        if errno is not None:
            self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _error_chain(err: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        chain.append(err)
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return chain


def _is_write_failure(err: BaseException) -> bool:
    """OSError, RuntimeError (torch.save: "unexpected pos", "file write failed") and
    safetensors' SafetensorError are what a failing write raises; other errors are bugs or
    interruptions and pass through unchanged."""
    if isinstance(err, (NotImplementedError, RecursionError)):
        return False
    return isinstance(err, (OSError, RuntimeError)) or type(err).__name__ == "SafetensorError"


def _free_space(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    for unit in ("bytes", "KB", "MB", "GB"):
        if free < 1024 or unit == "GB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    return "unknown"  # pragma: no cover


def describe_write_failure(path: Path, err: BaseException) -> tuple[str, int | None]:
    """A sentence for people about why writing ``path`` failed, and the errno if any."""
    codes = [getattr(e, "errno", None) for e in _error_chain(err)]
    text = " ".join(str(e) for e in _error_chain(err))
    code = next((c for c in codes if c), None)
    free = _free_space(path.parent)
    if code == errno_codes.ENOSPC or "No space left" in text or "os error 28" in text or "StorageFull" in text:
        return f"no space left on the device ({free} free in {path.parent})", errno_codes.ENOSPC
    if code == getattr(errno_codes, "EDQUOT", -1) or "quota exceeded" in text.lower():
        return f"disk quota exceeded ({free} free in {path.parent})", code
    if "unexpected pos" in text or "file write failed" in text:
        # torch.save's zip writer checks its position after each record: a short write, which
        # almost always means the device filled up.
        return (f"the data could not be written completely, most likely because the device is full "
                f"({free} free in {path.parent}; {text.strip()[:200]})"), code
    if code == errno_codes.EACCES or code == errno_codes.EPERM or code == errno_codes.EROFS:
        return f"permission denied or read-only file system ({type(err).__name__}: {err})", code
    if code == errno_codes.ENOTDIR:
        return f"a part of the path is a file, not a folder ({type(err).__name__}: {err})", code
    return f"{type(err).__name__}: {err}", code


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    An interruption leaves the previous file intact (rename is atomic on one file system).
    A failing write (a full disk, a quota, an I/O error: ``OSError``, ``RuntimeError`` from
    ``torch.save``, ``SafetensorError``) raises :class:`WriteError`, which names ``path`` and
    says what happened; the temporary file is removed. Other exceptions pass through unchanged.
    A symbolic link stays a link: the file it points to is replaced (the link was replaced by a
    file, and the file it pointed to kept its old contents).
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        reason, code = describe_write_failure(path, err)
        raise WriteError(f"could not write {path}: {reason}", path, code) from err
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except WriteError:
        raise
    except BaseException as err:
        if not _is_write_failure(err):
            raise
        reason, code = describe_write_failure(path, err)
        kept = "the previous file is unchanged" if existed else "no file was written"
        raise WriteError(f"could not write {path}: {reason}; {kept}", path, code) from err
    finally:
        if os.path.exists(tmp):
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and write (then delete) a file in it: a check to run before
    minutes of work whose result goes there. Raises :class:`WriteError` saying why not."""
    folder = Path(folder)
    probe = folder / ".write-test"
    if folder.exists() and not folder.is_dir():
        raise WriteError(f"cannot write in {folder}: it is a file, not a folder", folder, errno_codes.EEXIST)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=probe.name, suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        reason, code = describe_write_failure(probe, err)
        raise WriteError(f"cannot write in {folder}: {reason}", folder, code) from err
    return folder


def remove_stale_temp_files(folder: str | Path, max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` left in ``folder`` (not recursive)
    when its process died mid-write, if they are older than ``max_age_s`` seconds; younger ones
    may belong to a writer at work and are kept. Returns the files removed; files that cannot
    be removed are skipped."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        if not TEMP_FILE_PATTERN.match(p.name):
            continue
        try:
            if not p.is_file() or now - p.stat().st_mtime < max_age_s:
                continue
            p.unlink()
        except OSError:
            continue
        removed.append(p)
    return removed


#: Errors a command-line tool reports in one line: bad input, missing or unreadable files, run
#: folder conflicts, failed writes (ImageReadError, RunFolderError and ValueError from checkpoint
#: checks are ValueErrors; FileNotFoundError and WriteError are OSErrors).
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


#: Help of the command-line tools' ``--debug`` option (see :func:`run_command`).
DEBUG_HELP = "on an error, show the full Python traceback instead of a one-line message"


def run_command(prog: str, body: Callable[[], int], debug: bool = False) -> int:
    """Run a command-line tool's ``body`` and return its exit status.

    An expected error (:data:`EXPECTED_ERRORS`) prints one line ``<prog>: error: <message>``
    on stderr and returns 2, like argparse's own errors; with ``debug`` it propagates with its
    full traceback. Ctrl-C prints ``<prog>: interrupted`` and returns 130. Other exceptions
    (bugs) always propagate.

    Characters the terminal's encoding lacks (``²`` in a Japanese Windows code page, any
    non-ASCII in a C locale) print as escapes instead of failing the command.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):  # not a text stream of its own (captured, replaced)
            pass
    try:
        return body()
    except KeyboardInterrupt:  # Ctrl-C: what was written stays; no traceback
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as err:
        if debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


@dataclass
class Progress:
    """``done`` of ``total`` steps of a job, with a short description: the event that
    prediction and inspection yield (training yields its richer ``TrainProgress``)."""

    done: int
    total: int
    message: str = ""


def run_job(steps: Generator[Any, None, Any], on_event: Callable[[Any], None] | None = None) -> Any:
    """Drive a job to its end. Every long job (training, fine-tuning, prediction, inspection) is
    a generator that yields progress events and returns its result; the plugin runs it in a
    napari worker, Python callers and the command-line tools run it here. ``on_event`` sees
    each event; an exception it raises (e.g. to cancel) closes the job first."""
    try:
        while True:
            try:
                event = next(steps)
            except StopIteration as stop:
                return stop.value
            if on_event is not None:
                on_event(event)
    finally:
        steps.close()
