"""Atomic file writes: a reader never sees a half-written file, a crash never corrupts the old one."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from rsqair_bench.errors import LockedError, OutputError

LOCK_FILE = ".lock"  # the runner's per-job lock file: `train --out DIR` takes the same one


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable; some filesystems refuse fsync on directories, which is harmless here."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def os_error_line(err: OSError, path: str | Path | None = None) -> str:
    """`PATH: cause` for an OSError, e.g. `results/x: Read-only file system`; the path is the one the
    error names, else `path`."""
    where = err.filename if err.filename is not None else path
    cause = err.strerror or str(err) or type(err).__name__
    return f"{where}: {cause}" if where is not None else cause


def _cause(err: OSError, path: Path) -> str:
    """The OSError's reason, with the path it names when that is neither `path` nor its temp file."""
    cause = err.strerror or str(err) or type(err).__name__
    named = err.filename
    if named is not None and str(named) != str(path) and not Path(str(named)).name.startswith(f".{path.name}."):
        cause = f"{named}: {cause}"
    return cause


def check_writable_dir(directory: str | Path, what: str) -> None:
    """Refuse early (before any work) when `directory`, or its first existing ancestor, cannot take new files.

    Why: a long evaluation or generation should not run for minutes and then fail on its output.
    """
    directory = Path(directory)
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(f"{probe}: is a file, expected a directory for {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{probe}: not writable (Permission denied), needed for {what}")


def _create_temp(path: Path) -> Path:
    """A new, empty temp file beside `path`, created with mode 0666 & ~umask (the same mode as a plain open()).

    Why not tempfile.mkstemp: it forces mode 0600 whatever the umask, so results were unreadable to a group.
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{path}: could not create a temporary file beside it")  # pragma: no cover


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, fsync it and rename it over `path`.

    For writers that want a file name (numpy, matplotlib, h5py). On an exception the temp file is removed
    and `path` is untouched. An OSError (read-only or full filesystem, no permission) becomes a one-line
    OutputError naming `path` and the cause.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _create_temp(path)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        _fsync_directory(path.parent)
    except OSError as err:
        raise OutputError(f"{path}: cannot write ({_cause(err, path)})") from None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Atomically write the bytes that `write(fileobj)` produces (e.g. `lambda fh: torch.save(obj, fh)`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def directory_lock(directory: str | Path, flag: str = "--out") -> Iterator[None]:
    """Hold DIRECTORY/.lock (the runner's per-job lock) for the block, or refuse at once if another process holds it.

    Why: two trainers on one directory both resume the same checkpoint and append every log row twice.
    The lock is an OS file lock, so it frees itself when its holder dies (SIGKILL included).
    """
    import filelock

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(directory / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise LockedError(
            f"{directory / LOCK_FILE}: held by another process training or running this job; "
            f"wait for it to finish or choose another {flag}"
        ) from None
    try:
        yield
    finally:
        lock.release()
