"""HDF5 files in R-NEM's layout: writing (chunk by chunk, atomic), validation, checksums.

Layout (details and dtypes in docs/data.md): groups `training` / `validation` / `test`, each with
time-first datasets `features`, `groups`, `collisions` [T, N, H, W, 1], `events` [T, N, 1],
`positions`, `velocities` [T, N, n, 2] and `masses` [N, n].

Why direct chunk writes: each image dataset is chunked one sequence per chunk ([T, 1, H, W, 1]),
which is exactly one sequence of our sequence-major render buffer, so we deflate it ourselves
(zlib, the same format as HDF5's gzip filter) and hand HDF5 the bytes. Readers see an ordinary
gzip-compressed dataset.

Checksums: one sha256 per dataset over its bytes in sequence-major order (sequence 0's block
first), which does not depend on how the file is chunked; stored as the dataset attribute
`sha256`, and the file attribute `checksum` is the sha256 of the sorted "split/dataset:digest"
lines. `verify_checksums` recomputes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rsqair_bench import __version__
from rsqair_bench.core.io import atomic_path
from rsqair_bench.core.progress import progress_enabled
from rsqair_bench.data import limits
from rsqair_bench.data.physics import PhysicsParams, Trajectories, parse_balls, simulate_random
from rsqair_bench.data.render import CONTACT_TOLERANCE_PX, Frames, RenderBuffers, render
from rsqair_bench.errors import ConfigError, DataError, OutputError

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
SPLIT_NAMES = ("training", "validation", "test")  # index = child-seed key: a split's data never depends on the others
IMAGE_DATASETS = ("features", "groups", "collisions")
CHUNK_SEQUENCES = 256  # sequences simulated and rendered at once (part of the seed contract)
COMPRESSION_LEVEL = 1
PIPELINE = True  # write chunk k in a thread while chunk k+1 is simulated (same bytes either way)
# dataset -> index of its sequence axis (all but masses are time-first)
SEQUENCE_AXIS = {
    "features": 1, "groups": 1, "collisions": 1, "events": 1,
    "positions": 1, "velocities": 1, "masses": 0,
}
FEATURE_KINDS = "buif"  # bool, unsigned, signed, float: R-NEM's files use float/bool, ours uint8
GROUP_KINDS = "uif"
COLLISION_KINDS = "buif"


def import_h5py():  # noqa: ANN201 - module type
    """h5py imported lazily so `--help` stays fast."""
    import h5py

    return h5py


# ----------------------------------------------------------------------------- writing
@dataclass
class _Writer:
    """Streams one split's chunks into its datasets and hashes them on the way."""

    group: Any  # h5py.Group
    hashes: dict[str, Any]

    def write_images(self, name: str, data: np.ndarray, start: int, level: int) -> None:
        """data [C, T, H, W] uint8, sequence-major; one HDF5 chunk per sequence."""
        dset_id = self.group[name].id
        for c in range(data.shape[0]):
            block = data[c]  # [T, H, W] contiguous == chunk [T, 1, H, W, 1]
            dset_id.write_direct_chunk((0, start + c, 0, 0, 0), zlib.compress(block, level))
        self.hashes[name].update(data)

    def write_chunk(self, traj: Trajectories, fr: Frames, start: int) -> None:
        """Write one simulated and rendered chunk at sequence offset `start`."""
        self.write_images("features", fr.features, start, COMPRESSION_LEVEL)
        self.write_images("groups", fr.groups, start, COMPRESSION_LEVEL)
        self.write_images("collisions", fr.collisions, start, COMPRESSION_LEVEL)
        self.write_small("events", fr.events[..., None], start)
        self.write_small("positions", traj.positions.astype(np.float32), start)
        self.write_small("velocities", traj.velocities.astype(np.float32), start)
        self.write_small("masses", traj.masses.astype(np.float32), start)

    def write_small(self, name: str, data: np.ndarray, start: int) -> None:
        """data sequence-major [C, ...]; stored with the sequence axis SEQUENCE_AXIS[name]."""
        data = np.ascontiguousarray(data)
        stop = start + data.shape[0]
        if SEQUENCE_AXIS[name] == 0:
            self.group[name][start:stop] = data
        else:
            self.group[name][:, start:stop] = np.moveaxis(data, 0, 1)
        self.hashes[name].update(data)


def _create_split(f: Any, split: str, num: int, frames: int, size: int, n_max: int) -> Any:
    """Create a split group with empty, chunked, gzip-compressed datasets."""
    g = f.create_group(split)
    for name in IMAGE_DATASETS:
        g.create_dataset(name, shape=(frames, num, size, size, 1), dtype=np.uint8,
                         chunks=(frames, 1, size, size, 1), compression="gzip",
                         compression_opts=COMPRESSION_LEVEL)
    small = min(num, 1024)
    gz = {"compression": "gzip", "compression_opts": COMPRESSION_LEVEL}
    g.create_dataset("events", shape=(frames, num, 1), dtype=np.uint8, chunks=(frames, small, 1), **gz)
    for name in ("positions", "velocities"):
        g.create_dataset(name, shape=(frames, num, n_max, 2), dtype=np.float32,
                         chunks=(frames, small, n_max, 2), **gz)
    g.create_dataset("masses", shape=(num, n_max), dtype=np.float32, chunks=(small, n_max), **gz)
    g.attrs["sequences"] = num
    return g


def _validate_request(path: Path, balls: str, splits: dict[str, int], frames: int, size: int) -> None:
    parse_balls(balls)
    if not splits:
        raise ConfigError(f"{path}: splits: found none, expected at least one of {list(SPLIT_NAMES)}")
    for name, count in splits.items():
        if name not in SPLIT_NAMES:
            raise ConfigError(f"{path}: split {name!r}: unknown, expected one of {list(SPLIT_NAMES)}")
        if not isinstance(count, (int, np.integer)) or count < 1:
            raise ConfigError(f"{path}: split {name!r}: found {count!r} sequences, expected a positive integer")
        if count > limits.MAX_SEQUENCES:
            raise ConfigError(f"{path}: split {name!r}: found {count} sequences, expected at most {limits.MAX_SEQUENCES}")
    if not 1 <= frames <= limits.MAX_FRAMES:
        raise ConfigError(f"{path}: frames: found {frames}, expected an integer between 1 and {limits.MAX_FRAMES}")
    if not limits.MIN_SIZE <= size <= limits.MAX_SIZE:
        raise ConfigError(
            f"{path}: size: found {size}, expected an integer between {limits.MIN_SIZE} and {limits.MAX_SIZE} (pixels)"
        )
    parent = path.parent
    if not parent.is_dir():
        raise DataError(f"{path}: output directory {str(parent)!r} does not exist; expected an existing directory")


def _check_resources(path: Path, balls: str, splits: dict[str, int], frames: int, size: int, chunk: int,
                     params: PhysicsParams) -> None:
    """Refuse, before allocating anything, a request that needs more memory or disk than this machine has."""
    _, n_max = parse_balls(balls)
    biggest = min(chunk, max(int(v) for v in splits.values()))
    need = limits.generate_memory_bytes(biggest, frames, size, n_max, params.radius)
    what = f"{path}: {biggest} sequences x {frames} frames of {size}x{size} pixels per chunk"
    limits.check_memory(need, what, "use a smaller --size or --frames")
    total = sum(int(v) for v in splits.values())
    limits.check_disk(limits.generate_file_bytes(total, frames, n_max), path.parent, f"{path}: {total} sequences")


def check_request(path: str | Path, balls: str, splits: dict[str, int], frames: int, size: int) -> None:
    """The refusals `generate_file` makes before it allocates or writes anything (ranges, the output's
    directory, memory and disk), for a caller that must refuse before it takes the output's lock
    (`data generate`: a refused request leaves no lock file behind)."""
    path = Path(path)
    _validate_request(path, balls, splits, frames, size)
    _check_resources(path, balls, splits, frames, size, CHUNK_SEQUENCES, PhysicsParams())


def generate_file(
    path: str | Path,
    balls: str,
    splits: dict[str, int],
    frames: int = 51,
    size: int = 64,
    seed: int = 0,
    progress: bool = True,
    params: PhysicsParams | None = None,
    chunk: int = CHUNK_SEQUENCES,
) -> Path:
    """Simulate, render and write a data set; returns the final path.

    Deterministic in (balls, splits, frames, size, seed, params, chunk): chunk k of split s uses
    the child seed SeedSequence(seed, spawn_key=(s, k)). Written to a temp file in the same
    directory and renamed at the end, so an interrupted run leaves no complete-looking file.
    """
    h5py = import_h5py()
    path = Path(path)
    _validate_request(path, balls, splits, frames, size)
    params = params or PhysicsParams()
    _check_resources(path, balls, splits, frames, size, chunk, params)
    parameters = {
        "balls": balls, "splits": {k: int(v) for k, v in splits.items()}, "frames": int(frames),
        "size": int(size), "seed": int(seed), "chunk": int(chunk), "physics": asdict(params),
        "contact_tolerance_px": CONTACT_TOLERANCE_PX, "compression": f"gzip-{COMPRESSION_LEVEL}",
    }
    remove_orphan_temps(path)
    # a file with this process's PID is a leftover of an earlier process that had the same PID
    path.with_name(_temp_name(path)).unlink(missing_ok=True)
    total = sum(int(v) for v in splits.values())
    bar = None
    if progress_enabled(progress):
        from tqdm import tqdm

        bar = tqdm(total=total, unit="seq", desc=f"generate {path.name}")
    # one-deep pipeline: the main thread simulates/renders chunk k+1 while a worker thread
    # deflates, hashes and writes chunk k (zlib, hashlib and HDF5 I/O release the GIL);
    # two buffer sets alternate so the worker's chunk is never overwritten.
    buffer_sets = (RenderBuffers(), RenderBuffers())
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="h5-writer")
    restore_sigterm = _sigterm_raises()
    try:
        # fsync'd before the rename: a crash right after generation must not leave a truncated file
        # under the final name, which ensure_dataset would then find and keep
        with atomic_path(path, temp_name=_temp_name, errors=False) as tmp, h5py.File(tmp, "w") as f:
            digests = _write_splits(f, balls, splits, frames, size, seed, chunk, params, buffer_sets, pool, bar)
            _write_file_attrs(f, seed, parameters, digests)
    except BaseException as err:
        pool.shutdown(wait=True)
        if isinstance(err, OSError):  # full disk, read-only filesystem: one line, nothing left behind
            reason = err.strerror or (str(err).splitlines() or [type(err).__name__])[0]
            raise OutputError(f"{path}: cannot write ({reason}); nothing was written") from None
        raise
    finally:
        restore_sigterm()
        pool.shutdown(wait=True)
        if bar is not None:
            bar.close()
    return path


def _write_splits(f: Any, balls: str, splits: dict[str, int], frames: int, size: int, seed: int, chunk: int,
                  params: PhysicsParams, buffer_sets: tuple[Any, Any], pool: ThreadPoolExecutor, bar: Any) -> dict[str, str]:
    """Every requested split, in SPLIT_NAMES order, chunk by chunk; returns `split/dataset` -> sha256."""
    _, n_max = parse_balls(balls)
    digests: dict[str, str] = {}
    step = 0  # chunks rendered so far: picks the buffer set
    for split_idx, split in enumerate(SPLIT_NAMES):
        if split not in splits:
            continue
        num = int(splits[split])
        g = _create_split(f, split, num, frames, size, n_max)
        writer = _Writer(g, {name: hashlib.sha256() for name in SEQUENCE_AXIS})
        pending: Future | None = None
        try:
            for chunk_idx, start in enumerate(range(0, num, chunk)):
                count = min(chunk, num - start)
                rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(split_idx, chunk_idx)))
                traj = simulate_random(count, balls, frames, params, rng)
                fr = render(traj.positions, traj.active, params.radius, size, CONTACT_TOLERANCE_PX, buffer_sets[step % 2])
                step += 1
                if pending is not None:
                    pending.result()
                if PIPELINE:
                    pending = pool.submit(writer.write_chunk, traj, fr, start)
                else:
                    writer.write_chunk(traj, fr, start)
                if bar is not None:
                    bar.update(count)
            if pending is not None:
                pending.result()
                pending = None
        finally:  # never close the file under the writer thread
            if pending is not None:
                wait([pending])
        for name, h in writer.hashes.items():
            digest = h.hexdigest()
            g[name].attrs["sha256"] = digest
            digests[f"{split}/{name}"] = digest
    return digests


def _write_file_attrs(f: Any, seed: int, parameters: dict[str, Any], digests: dict[str, str]) -> None:
    """Provenance (docs/data.md): generator, versions, seed, every parameter, and the combined checksum."""
    f.attrs["generator"] = "rsqair_bench.data"
    f.attrs["generator_version"] = GENERATOR_VERSION
    f.attrs["package_version"] = __version__
    f.attrs["seed"] = int(seed)
    f.attrs["parameters"] = json.dumps(parameters, sort_keys=True)
    f.attrs["checksum"] = combine_digests(digests)


class Terminated(SystemExit):
    """SIGTERM arrived; raised in the main thread so the same cleanup as Ctrl-C runs (exit status 143)."""


def _sigterm_raises() -> Callable[[], None]:
    """Make SIGTERM raise `Terminated` (like SIGINT raises KeyboardInterrupt) until the returned function is called.

    Why: the default SIGTERM action kills the process without running `finally`, leaving a temp file.
    Only possible in the main thread; elsewhere this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(128 + signum)

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # pragma: no cover - e.g. an embedded interpreter
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, old)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _temp_name(path: Path) -> str:
    """`.NAME.tmp-PID`: the PID lets `remove_orphan_temps` tell a killed generator's file from a live one's."""
    return f".{path.name}.tmp-{os.getpid()}"


def remove_orphan_temps(path: Path) -> list[Path]:
    """Delete `.NAME.tmp-PID` files beside `path` left by a generator that was killed (its PID is gone)."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid_text = tmp.name.rsplit("-", 1)[-1]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        try:
            tmp.unlink()
        except OSError:
            continue
        log.info("removed %s, left by an interrupted generator (process %s)", tmp, pid_text)
        removed.append(tmp)
    return removed


def combine_digests(digests: dict[str, str]) -> str:
    """File checksum: sha256 over sorted 'split/dataset:digest' lines."""
    text = "\n".join(f"{k}:{v}" for k, v in sorted(digests.items()))
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- reading
def open_h5(path: str | Path):  # noqa: ANN201 - h5py.File
    """Open read-only; a missing, non-HDF5 or truncated file becomes a one-line DataError."""
    h5py = import_h5py()
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found; expected an HDF5 data file (generate one with `data generate`)")
    if not path.is_file():
        raise DataError(f"{path}: is not a regular file; expected an HDF5 data file")
    try:
        is_h5 = h5py.is_hdf5(str(path))
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err}); expected an HDF5 data file") from None
    if not is_h5:
        with open(path, "rb") as fh:
            head = fh.read(8)
        raise DataError(f"{path}: not an HDF5 file (found leading bytes {head!r}, expected the HDF5 signature)")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: HDF5 file cannot be opened, probably truncated or corrupt ({reason})") from None


@dataclass
class SplitInfo:
    """Shape summary of one validated split."""

    split: str
    frames: int
    sequences: int
    height: int
    width: int
    dtypes: dict[str, str]
    shapes: dict[str, tuple[int, ...]]


def validate_split(f: Any, path: str | Path, split: str, min_frames: int | None = None,
                   min_size: int | None = None) -> SplitInfo:
    """Check that `split` has features/groups/collisions [T, N, H, W, 1] of usable dtypes."""
    if split not in f:
        found = sorted(k for k in f.keys())
        raise DataError(f"{path}: split {split!r} missing; found {found}, expected {split!r}")
    g = f[split]
    h5py = import_h5py()
    if not isinstance(g, h5py.Group):
        raise DataError(f"{path}: {split!r} is a {type(g).__name__}, expected a group of datasets")
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    kinds = {"features": FEATURE_KINDS, "groups": GROUP_KINDS, "collisions": COLLISION_KINDS}
    for name in IMAGE_DATASETS:
        if name not in g:
            raise DataError(f"{path}: {split}/{name} missing; found {sorted(g.keys())}, expected dataset {name!r}")
        if not isinstance(g[name], h5py.Dataset):
            raise DataError(f"{path}: {split}/{name} is a {type(g[name]).__name__}, expected a dataset [T, N, H, W, 1]")
        ds = g[name]
        shape = tuple(int(s) for s in ds.shape)
        if len(shape) != 5 or shape[4] != 1:
            raise DataError(f"{path}: {split}/{name} has shape {shape}, expected [T, N, H, W, 1] (rank 5, last axis 1)")
        if ds.dtype.kind not in kinds[name]:
            allowed = {"b": "bool", "u": "uint", "i": "int", "f": "float"}
            expected = "/".join(allowed[k] for k in kinds[name])
            raise DataError(f"{path}: {split}/{name} has dtype {ds.dtype}, expected {expected}")
        shapes[name] = shape
        dtypes[name] = str(ds.dtype)
    ref = shapes["features"]
    for name in ("groups", "collisions"):
        if shapes[name] != ref:
            raise DataError(f"{path}: {split}/{name} has shape {shapes[name]}, expected {ref} (same as features)")
    frames, sequences, height, width = ref[:4]
    if sequences < 1 or frames < 1:
        raise DataError(f"{path}: {split}/features has shape {ref}, expected at least one sequence and frame")
    if min_frames is not None and frames < min_frames:
        raise DataError(f"{path}: {split}/features has {frames} frames, expected at least {min_frames}")
    if min_size is not None and min(height, width) < min_size:
        raise DataError(f"{path}: {split}/features frames are {height}x{width}, expected at least {min_size}x{min_size}")
    for name in ("events", "positions", "velocities", "masses"):
        if name in g:
            shapes[name] = tuple(int(s) for s in g[name].shape)
            dtypes[name] = str(g[name].dtype)
    return SplitInfo(split, frames, sequences, height, width, dtypes, shapes)


def stored_checksum(path: str | Path) -> str | None:
    """The file's `checksum` attribute as written (not recomputed: cheap at every `run`); None when absent.

    Why: it identifies a data file's content, so `run` can tell a regenerated file (another seed, the
    same path) from the one a finished job used."""
    with open_h5(path) as f:
        raw = f.attrs.get("checksum")
    if isinstance(raw, bytes):
        raw = raw.decode()
    return None if raw is None else str(raw)


def file_parameters(f: Any) -> dict[str, Any] | None:
    """Generator parameters stored by `generate_file`; None for files from elsewhere (e.g. R-NEM's)."""
    raw = f.attrs.get("parameters")
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode()
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return None


def _hash_dataset(ds: Any, axis: int, block: int = 256) -> str:
    """sha256 over the dataset in sequence-major order, as written by generate_file."""
    h = hashlib.sha256()
    num = ds.shape[axis]
    for start in range(0, num, block):
        stop = min(num, start + block)
        if axis == 0:
            data = ds[start:stop]
        else:
            data = np.moveaxis(ds[:, start:stop], 1, 0)
        h.update(np.ascontiguousarray(data))
    return h.hexdigest()


@dataclass
class ChecksumReport:
    """One split's checksum verification: which datasets matched, which did not, which carry no checksum."""

    verified: list[str]
    mismatched: list[str]
    unchecked: list[str]

    @property
    def status(self) -> str:
        """`ok`, `mismatch (...)` or `absent`, as verify_checksums reports it."""
        if self.mismatched:
            return f"mismatch ({', '.join(self.mismatched)})"
        return "ok" if self.verified else "absent"

    def describe(self) -> str:
        """For `data inspect`: the status and the datasets it covers, e.g. `ok (verified: features, groups)`."""
        if self.mismatched:
            head = f"MISMATCH in {', '.join(self.mismatched)}"
        elif not self.verified:
            return "absent (no dataset carries a stored checksum)"
        else:
            head = "partial" if self.unchecked else "ok"
        details = [f"verified: {', '.join(self.verified)}"] if self.verified else []
        if self.unchecked:
            details.append(f"no stored checksum: {', '.join(self.unchecked)}")
        return f"{head} ({'; '.join(details)})"


def checksum_reports(f: Any, path: str | Path) -> dict[str, ChecksumReport]:
    """Per split: recompute each stored dataset checksum (sha256 attribute) and compare."""
    reports: dict[str, ChecksumReport] = {}
    for split in f.keys():
        g = f[split]
        if not hasattr(g, "keys"):
            continue
        report = ChecksumReport([], [], [])
        for name in g.keys():
            stored = g[name].attrs.get("sha256")
            if stored is None:
                report.unchecked.append(name)
                continue
            axis = SEQUENCE_AXIS.get(name, 1)
            try:
                actual = _hash_dataset(g[name], axis)
            except OSError as err:
                raise DataError(f"{path}: {split}/{name} cannot be read ({str(err).splitlines()[0]}); "
                                "expected a complete file (truncated?)") from None
            if isinstance(stored, bytes):
                stored = stored.decode()
            (report.verified if actual == stored else report.mismatched).append(name)
        reports[split] = report
    return reports


def verify_checksums(f: Any, path: str | Path) -> dict[str, str]:
    """Per split: 'ok', 'mismatch (<datasets>)' or 'absent' (no stored checksums)."""
    return {split: report.status for split, report in checksum_reports(f, path).items()}
