"""Atomic file writes and file locks, each through one path.

Every file the package writes whole goes through `atomic_path` (temp file beside the target, then
rename): a reader never sees a half-written file, a crash never corrupts the old one. `fsync`
(default on) makes the new content durable before the rename; only the ephemeral, frequent
status.json turns it off. Every lock is `hold_lock` (an OS file lock via `filelock`, freed when its
holder dies, SIGKILL included): `directory_lock` (one writer per job directory), `owned_directory`
(one report writer, which then removes orphaned temp files) and the data file's generation lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
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


def dangling_link(directory: str | Path) -> Path | None:
    """The first symbolic link on the way to `directory` (itself included) whose target does not exist, else None.

    Why: mkdir cannot follow such a link and fails with a bare "File exists" (`results: rdang`, or a
    checkout's `data` link to another machine's disk), after the suite validated and data was generated."""
    directory = Path(directory)
    for candidate in [*reversed(directory.parents), directory]:
        if candidate.is_symlink() and not candidate.exists():
            return candidate
    return None


REGULAR_FILE_LIMIT = 64 * 2**20  # bytes: a result file (metrics.json, status.json) is kilobytes; refuse a huge one


def read_regular_file(path: str | Path, limit: int = REGULAR_FILE_LIMIT) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes; OSError otherwise.

    Why: `Path.read_text` on a FIFO (or a character device) blocks until a writer appears, which
    hung `run`'s display on a `status.json` FIFO and `report` on a `metrics.json` one. The file is
    opened non-blocking (an open FIFO returns at once) and fstat decides before any read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if info.st_size > limit:
            raise OSError(errno.EFBIG, f"{info.st_size} bytes, more than the {limit} a result file may have", str(path))
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            if sum(map(len, chunks)) > limit:  # grew while we read
                raise OSError(errno.EFBIG, f"more than the {limit} bytes a result file may have", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: the same inode when both exist (hard and symbolic links
    included), else the same absolute path once symbolic links are resolved."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_outputs(inputs: dict[str, str | Path], outputs: dict[str, str | Path], force: bool | None = None) -> None:
    """Refuse, before any work, an output that would replace an input of the same command, or two
    outputs that are one file; with `force` given (a command's `--force` flag), also an existing
    output unless it is True.

    Why: `eval CK --out CK` replaced the checkpoint it had just read with JSON, and `eval --rollout
    F.h5 --data F.h5` the data file with an .npz, both with exit status 0. `inputs` and `outputs`
    map what the user typed (`--data`, `--out`) to a path; the message names both.
    """
    named = list(outputs.items())
    for i, (flag, out) in enumerate(named):
        for what, src in inputs.items():
            if same_file(out, src):
                raise OutputError(f"{out}: {flag} is the same file as {what} ({src}); refusing to write over an input "
                                  f"of this command, choose another {flag}")
        for other_flag, other in named[:i]:
            if same_file(out, other):
                raise OutputError(f"{out}: {flag} and {other_flag} are the same file; expected two different paths")
        if Path(out).is_dir():
            raise OutputError(f"{out}: is a directory, expected a file path for {flag}")
        if force is False and os.path.lexists(out):
            raise OutputError(f"{out}: already exists; pass --force to overwrite it, or choose another {flag}")


TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp(\.[A-Za-z0-9]+)?$")  # what _create_temp (and the GIF writer) names


def remove_orphan_temps(directory: str | Path) -> list[Path]:
    """Remove the temp files that atomic writes left in `directory` (not below it) when their process
    was killed (SIGKILL cannot be cleaned up after); returns what was removed.

    Only for a directory whose writer holds a lock on it (`report/`): any temp file there is then an
    orphan, never a live writer's.
    """
    removed = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if TEMP_NAME.match(entry.name) and entry.is_file() and not entry.is_symlink():
            try:
                entry.unlink()
                removed.append(entry)
            except OSError:
                pass
    return removed


@contextlib.contextmanager
def owned_directory(directory: str | Path, wait_s: float = 600.0, subdirectories: tuple[str, ...] = ()) -> Iterator[Path]:
    """Hold DIRECTORY/.lock for the block (waiting up to `wait_s` for another writer), and first remove
    the temp files a killed writer left in it and in `subdirectories`.

    Why: `kill -9` during `report` left `report/.*.tmp` files that no later run removed. Under the lock
    no other writer of the directory is running, so every temp file in it is an orphan.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with hold_lock(directory / LOCK_FILE, wait_s,
                   f"held by another process writing {directory} for over {wait_s:.0f} s; wait for it to finish"):
        for sub in ("", *subdirectories):
            remove_orphan_temps(directory / sub)
        yield directory


def _temp_name(path: Path, suffix: str = "") -> str:
    """`.NAME.<8 hex>.tmp`, or `.STEM.<8 hex>.tmp<suffix>` for writers that pick a format from the
    extension (the GIF writer): the names TEMP_NAME recognises as orphans."""
    if suffix:
        return f".{path.stem}.{secrets.token_hex(4)}.tmp{suffix}"
    return f".{path.name}.{secrets.token_hex(4)}.tmp"


def _create_temp(path: Path, name: Callable[[Path], str]) -> Path:
    """A new, empty temp file beside `path`, created with mode 0666 & ~umask (the same mode as a plain open()).

    Why not tempfile.mkstemp: it forces mode 0600 whatever the umask, so results were unreadable to a group.
    """
    for _ in range(100):
        tmp = path.with_name(name(path))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{path}: could not create a temporary file beside it")  # pragma: no cover


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = True, suffix: str = "",
                temp_name: Callable[[Path], str] | None = None, errors: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, fsync it and rename it over `path`.

    For writers that want a file name (numpy, matplotlib, h5py). On an exception the temp file is removed
    and `path` is untouched. An OSError (read-only or full filesystem, no permission) becomes a one-line
    OutputError naming `path` and the cause.

    `fsync=False` skips both fsyncs (file and directory): for a file rewritten every second whose loss
    in a crash costs nothing (status.json). `suffix` ends the temp name (writers that choose the format
    from it); `temp_name` replaces the naming altogether (the data generator's `.NAME.tmp-PID`, whose
    PID tells a killed generator's leftover from a live one's file). `errors=False` lets an OSError
    through unchanged, for a caller that words it itself.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _create_temp(path, temp_name or (lambda p: _temp_name(p, suffix)))
        yield tmp_path
        if fsync:
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        if fsync:
            _fsync_directory(path.parent)
    except OSError as err:
        if not errors:
            raise
        raise OutputError(f"{path}: cannot write ({_cause(err, path)})") from None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], fsync: bool = True) -> None:
    """Atomically write the bytes that `write(fileobj)` produces (e.g. `lambda fh: torch.save(obj, fh)`)."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as fh:
        write(fh)


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    atomic_write(path, lambda fh: fh.write(data), fsync=fsync)


def atomic_write_text(path: str | Path, text: str, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode(), fsync=fsync)


@contextlib.contextmanager
def directory_lock(directory: str | Path, flag: str = "--out") -> Iterator[None]:
    """Hold DIRECTORY/.lock (the runner's per-job lock) for the block, or refuse at once if another process holds it.

    Why: two trainers on one directory both resume the same checkpoint and append every log row twice.
    The lock is an OS file lock, so it frees itself when its holder dies (SIGKILL included).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with hold_lock(directory / LOCK_FILE, 0, "held by another process training or running this job; "
                   f"wait for it to finish or choose another {flag}"):
        yield


@contextlib.contextmanager
def hold_lock(lock_file: str | Path, wait_s: float | None = None, busy: str = "held by another process") -> Iterator[None]:
    """Hold the OS file lock `lock_file` for the block, waiting up to `wait_s` seconds for it (0: refuse at
    once; None: as long as it takes); when that runs out, LockedError `LOCK_FILE: busy`.

    The one place the package takes a lock: an OS lock (`filelock`), so it frees itself when its holder
    dies, SIGKILL included, and a stale lock file never blocks anyone."""
    import filelock

    lock = filelock.FileLock(str(lock_file), timeout=-1 if wait_s is None else wait_s)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise LockedError(f"{lock_file}: {busy}") from None
    try:
        yield
    finally:
        lock.release()
