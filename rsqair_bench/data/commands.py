"""`data generate` / `data inspect` subcommands and `ensure_dataset` for the runner.

Default splits of `data generate` without --splits: a fixed ball count (e.g. `--balls 4`) is
split 80/10/10 into training/validation/test (validation = test = max(1, N // 10)); a range
(e.g. `--balls 6-8`) is a generalization test set, so all N sequences go to `test`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rsqair_bench.config import DataSetConfig
from rsqair_bench.core.io import dangling_link, hold_lock
from rsqair_bench.data.h5 import (
    SPLIT_NAMES,
    check_request,
    checksum_reports,
    file_parameters,
    generate_file,
    open_h5,
    validate_split,
)
from rsqair_bench.data.physics import parse_balls
from rsqair_bench.errors import ConfigError, DataError, LockedError, OutputError

log = logging.getLogger(__name__)

INSPECT_COLLISION_SAMPLE = 500  # sequences scanned when a file has no `events` of ours


# ----------------------------------------------------------------------------- argument parsing
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`data generate ...` and `data inspect FILE`."""
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    gen = sub.add_parser(
        "generate",
        help="simulate and write a bouncing-balls HDF5 file",
        description="Simulate bouncing balls and write an HDF5 file in R-NEM's layout.",
    )
    gen.add_argument("--balls", required=True, help="balls per sequence: '4' or a range like '6-8'")
    gen.add_argument(
        "--sequences",
        default=None,
        help="total sequences (a fixed count splits 80/10/10 into training/validation/test; "
        "a range goes all to test); not needed with --splits",
    )
    gen.add_argument("--frames", default="51", help="frames per sequence (default 51, as R-NEM)")
    gen.add_argument("--size", default="64", help="frame width and height in pixels (default 64)")
    gen.add_argument("--seed", default="0", help="seed; the file is a pure function of it (default 0)")
    gen.add_argument("--out", required=True, help="output .h5 path (its directory must exist)")
    gen.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    gen.add_argument("--splits", default=None, help="explicit split sizes, e.g. training=800,validation=100,test=100")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")
    ins = sub.add_parser(
        "inspect",
        help="summarize an HDF5 data file and verify its checksums",
        description="Print per split: shapes, dtypes, sequences, frames, balls, collision rate, checksum status.",
    )
    ins.add_argument("file", help="an .h5 file (ours or R-NEM's)")
    ins.add_argument("--no-verify", action="store_true", help="skip recomputing checksums (fast on big files)")


def _int_arg(name: str, text: str, minimum: int) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ConfigError(f"{name}: found {text!r}, expected an integer >= {minimum}") from None
    if value < minimum:
        raise ConfigError(f"{name}: found {value}, expected an integer >= {minimum}")
    return value


def parse_splits(text: str) -> dict[str, int]:
    """'training=800,validation=100,test=100' -> dict; names must be R-NEM's split names."""
    out: dict[str, int] = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ConfigError(f"--splits: found {part!r}, expected NAME=COUNT (e.g. training=800,test=100)")
        name, count = (s.strip() for s in part.split("=", 1))
        if name not in SPLIT_NAMES:
            raise ConfigError(f"--splits: split {name!r} unknown, expected one of {list(SPLIT_NAMES)}")
        if name in out:
            raise ConfigError(f"--splits: split {name!r} given twice, expected each at most once")
        out[name] = _int_arg(f"--splits {name}", count, 1)
    if not out:
        raise ConfigError(f"--splits: found {text!r}, expected NAME=COUNT pairs (e.g. training=800,test=100)")
    return out


def default_splits(balls: str, sequences: int) -> dict[str, int]:
    """80/10/10 for a fixed ball count, all test for a range (see module docstring)."""
    lo, hi = parse_balls(balls)
    if lo != hi:
        return {"test": sequences}
    if sequences < 3:
        raise ConfigError(f"--sequences: found {sequences}, expected >= 3 to fill training/validation/test (or pass --splits)")
    held = max(1, sequences // 10)
    return {"training": sequences - 2 * held, "validation": held, "test": held}


# ----------------------------------------------------------------------------- commands
def command(args: argparse.Namespace) -> int:
    if args.data_command == "generate":
        return _generate(args)
    if args.data_command == "inspect":
        summary = inspect_file(args.file, verify=not args.no_verify)
        print(format_summary(summary))
        bad = [f"{split}: {d['checksum']}" for split, d in summary["splits"].items() if d.get("checksum_mismatch")]
        if bad:
            raise DataError(f"{args.file}: checksum mismatch, the data changed since it was written ({'; '.join(bad)})")
        return 0
    raise ConfigError(f"data: action {args.data_command!r} unknown, expected 'generate' or 'inspect'")


def _generate(args: argparse.Namespace) -> int:
    balls = str(args.balls).strip()
    parse_balls(balls)
    frames = _int_arg("--frames", args.frames, 1)
    size = _int_arg("--size", args.size, 8)
    seed = _int_arg("--seed", args.seed, 0)
    if args.splits is not None:
        splits = parse_splits(args.splits)
        if args.sequences is not None and _int_arg("--sequences", args.sequences, 1) != sum(splits.values()):
            raise ConfigError(
                f"--sequences: found {args.sequences}, expected the sum of --splits ({sum(splits.values())}) or nothing"
            )
    else:
        if args.sequences is None:
            raise ConfigError("--sequences: missing, expected a positive integer (or --splits)")
        splits = default_splits(balls, _int_arg("--sequences", args.sequences, 1))
    out = Path(args.out)
    if out.is_dir():
        raise DataError(f"{out}: is a directory, expected a file path for --out")
    _refuse_existing(out, args.force)
    check_request(out, balls, splits, frames, size)  # every refusal before the lock file is made
    with _generation_lock(out) if not args.force else contextlib.nullcontext():
        _refuse_existing(out, args.force)  # again under the lock: another generator may have finished meanwhile
        path = generate_file(out, balls, splits, frames, size, seed, progress=not args.no_progress)
    print(f"wrote {path} ({', '.join(f'{k}={v}' for k, v in splits.items())}; {frames} frames, {size}x{size}, seed {seed})")
    return 0


def _refuse_existing(out: Path, force: bool) -> None:
    if os.path.lexists(out) and not force:
        raise DataError(f"{out}: already exists; pass --force to overwrite it, or choose another --out")


@contextlib.contextmanager
def _generation_lock(out: Path) -> Iterator[None]:
    """Hold OUT.lock, the lock `ensure_dataset` takes, while the file is checked, generated and renamed
    (without --force; with it, replacing the file is what was asked). The lock file stays, as
    ensure_dataset's does.

    Why: two `data generate --out F` without --force started together both found no F, both wrote it
    and both said `wrote F`; the first file was silently replaced. Under the lock the second waits,
    then finds F and refuses. Without the output's directory there is no lock to take, and
    generate_file refuses the request."""
    if not out.parent.is_dir():
        yield
        return
    lock = str(out) + ".lock"
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(hold_lock(lock, 0))
        except LockedError:
            print(f"waiting for another process writing {out} (it holds {lock})", file=sys.stderr)
            held.enter_context(hold_lock(lock))
        yield


# ----------------------------------------------------------------------------- inspect
def inspect_file(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """Structured summary of a data file (validated like the loader would)."""
    path = Path(path)
    with open_h5(path) as f:
        params = file_parameters(f)
        splits = [s for s in SPLIT_NAMES if s in f]
        if not splits:
            raise DataError(
                f"{path}: no split found (top-level keys {sorted(f.keys())}), expected at least one of {list(SPLIT_NAMES)}"
            )
        checks = checksum_reports(f, path) if verify else {}
        summary: dict[str, Any] = {
            "file": str(path),
            "generator": str(f.attrs.get("generator", "unknown (not written by rsqair_bench)")),
            "generator_version": str(f.attrs.get("generator_version", "-")),
            "seed": int(f.attrs["seed"]) if "seed" in f.attrs else None,
            "parameters": params,
            "splits": {},
        }
        for split in splits:
            info = validate_split(f, path, split)
            g = f[split]
            balls_min, balls_max = _balls_range(g)
            rate, rate_source = _collision_rate(g)
            summary["splits"][split] = {
                "sequences": info.sequences,
                "frames": info.frames,
                "size": [info.height, info.width],
                "shapes": {k: list(v) for k, v in info.shapes.items()},
                "dtypes": info.dtypes,
                "balls_min": balls_min,
                "balls_max": balls_max,
                "collision_frame_fraction": rate,
                "collision_source": rate_source,
                "checksum": checks[split].describe() if split in checks else ("absent" if verify else "not checked"),
                "checksum_mismatch": bool(split in checks and checks[split].mismatched),
            }
    return summary


def _balls_range(g: Any) -> tuple[int | None, int | None]:
    """Balls per sequence from `masses` (0 = padding slot); None when the file has no masses."""
    if "masses" not in g or g["masses"].ndim != 2:
        return None, None
    counts = (g["masses"][...] > 0).sum(-1)  # [N]
    return int(counts.min()), int(counts.max())


def _collision_rate(g: Any) -> tuple[float, str]:
    """Fraction of frames with a ball-ball contact: from `events` when ours, else from `collisions`."""
    if "events" in g and g["events"].ndim == 3 and g["events"].shape[2] == 1 and "sha256" in g["events"].attrs:
        ev = g["events"][...]  # [T, N, 1]
        return float((ev > 0).mean()), "events"
    coll = g["collisions"]
    n = min(coll.shape[1], INSPECT_COLLISION_SAMPLE)
    sample = coll[:, :n]  # [T, n, H, W, 1]
    any_px = (np.asarray(sample) > 0).reshape(sample.shape[0], n, -1).any(-1)
    return float(any_px.mean()), f"collisions, first {n} sequences"


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"file: {s['file']}", f"generator: {s['generator']} (version {s['generator_version']}), seed: {s['seed']}"]
    p = s["parameters"]
    if p:
        phys = p.get("physics", {})
        lines.append(
            f"parameters: balls {p.get('balls')}, radius {phys.get('radius')} box "
            f"({phys.get('radius', 0) * p.get('size', 0):g} px), "
            f"speed {phys.get('speed')} box/frame, masses {phys.get('masses')}, substeps {phys.get('substeps')}, "
            f"contact tolerance {p.get('contact_tolerance_px')} px"
        )
    for split, d in s["splits"].items():
        balls = "n/a (no masses)" if d["balls_min"] is None else f"{d['balls_min']}-{d['balls_max']}"
        lines.append(
            f"[{split}] sequences {d['sequences']}, frames {d['frames']}, "
            f"{d['size'][0]}x{d['size'][1]}, balls per sequence {balls}"
        )
        for name, shape in d["shapes"].items():
            lines.append(f"    {name:<11} {str(shape):<26} {d['dtypes'][name]}")
        lines.append(f"    frames with a ball-ball collision: {d['collision_frame_fraction']:.2%} (from {d['collision_source']})")
        lines.append(f"    checksum: {d['checksum']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- runner hook
def ensure_dataset(cfg: DataSetConfig, progress: bool = True) -> Path:
    """Return cfg.path, generating it first if missing; an existing file is validated.

    A file we generated must match cfg (balls, frames, size, seed, splits); a file from
    elsewhere (e.g. R-NEM's) must have the splits with at least cfg.frames frames of cfg.size.
    A file lock makes concurrent jobs wait for one generator instead of racing.
    """
    path = Path(cfg.path)
    _make_folder(path)
    with hold_lock(str(path) + ".lock"):  # waits as long as another job's generation takes
        if not path.exists():
            log.info("generating %s (%s balls, splits %s)", path, cfg.balls, cfg.splits)
            return generate_file(path, cfg.balls, dict(cfg.splits), cfg.frames, cfg.size, cfg.seed, progress)
        _check_existing(path, cfg)
    return path


def _make_folder(path: Path) -> None:
    """Create the data file's folder, or say in one line why not.

    Why not just mkdir: a folder on the way that is a symbolic link to nothing (a checkout's `data`
    link to another machine's disk) made mkdir fail with a bare "data: File exists"."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        folder = dangling_link(path.parent)
        if folder is not None:
            raise OutputError(f"{path}: cannot create its folder: {folder} is a symbolic link to "
                              f"{os.readlink(folder)}, which does not exist; expected a folder or a link "
                              f"to one (remove the link, or create its target)") from None
        raise OutputError(f"{path}: cannot create its folder {path.parent} ({err.strerror or err}); expected a "
                          f"writable folder") from None


def _check_existing(path: Path, cfg: DataSetConfig) -> None:
    with open_h5(path) as f:
        params = file_parameters(f)
        if params is not None:
            wanted = {
                "balls": str(cfg.balls),
                "frames": cfg.frames,
                "size": cfg.size,
                "seed": cfg.seed,
                "splits": {k: int(v) for k, v in cfg.splits.items()},
            }
            for key, expected in wanted.items():
                found = params.get(key)
                if found != expected:
                    raise DataError(
                        f"{path}: generated with {key}={found!r}, config expects {expected!r}; "
                        "delete the file to regenerate it or fix the config"
                    )
        for split, count in cfg.splits.items():
            info = validate_split(f, path, split, min_frames=cfg.frames)
            if (info.height, info.width) != (cfg.size, cfg.size):
                raise DataError(f"{path}: {split}/features frames are {info.height}x{info.width}, expected {cfg.size}x{cfg.size}")
            if info.sequences < count:
                raise DataError(f"{path}: {split} has {info.sequences} sequences, expected at least {count}")
