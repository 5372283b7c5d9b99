"""Bounds on what a command may allocate, checked before allocating.

Why: `data generate --size 100000` once asked numpy for tens of GB and was killed by the kernel's
out-of-memory killer; a user should instead get one line saying the limit. Two kinds of bound:

- hard ranges that no sensible run exceeds (`MAX_SIZE`, `MAX_FRAMES`, `MAX_SEQUENCES`), also
  checked by `validate` for the data sets of a suite;
- the memory (and, for files, the disk space) a request needs, estimated from the shapes it will
  allocate and compared with what this machine has available now (`MEMORY_FRACTION` of it).
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

MIN_SIZE = 8  # pixels: smaller frames cannot hold a ball
MAX_SIZE = 1024  # pixels: R-NEM's frames are 64; 1024 is 256x their area
MAX_FRAMES = 10_000  # frames per sequence: R-NEM's files hold 51
MAX_SEQUENCES = 10_000_000  # per split: the paper uses 50,000
MEMORY_FRACTION = 0.8  # of the memory available now; the rest is left to the OS and other processes


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"


def _cgroup_free() -> int | None:
    """Memory left under this process's cgroup (v2) limit, if it has one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def available_memory() -> int | None:
    """Bytes of RAM available to this process now (MemAvailable, capped by a cgroup limit); None if unknown."""
    avail: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    cgroup = _cgroup_free()
    return min(avail, cgroup) if cgroup is not None else avail


def check_memory(needed: float, what: str, remedy: str, available: int | None = None) -> None:
    """Raise ConfigError when `needed` bytes exceed MEMORY_FRACTION of the available memory."""
    from rsqair_bench.errors import ConfigError

    available = available_memory() if available is None else available
    if available is None:
        return
    limit = MEMORY_FRACTION * available
    if needed > limit:
        raise ConfigError(
            f"{what} needs about {gib(needed)} of memory, more than the limit of {gib(limit)} "
            f"({MEMORY_FRACTION:.0%} of the {gib(available)} available); {remedy}"
        )


EVAL_TENSORS_PER_PIXEL = 6  # frames in, frames out, and about 4 canvases per object slot in flight (float32)
MAX_EVAL_BATCH_BYTES = 2**41  # 2 TiB: more than any one accelerator has; `validate`'s bound for a GPU it cannot see


def eval_memory_bytes(batch: int, samples: int, particles: int, frames: int, image_size: int, slots: int) -> float:
    """Rough peak bytes of one evaluation batch: every row is expanded to max(samples, particles) copies,
    each holding T frames plus a full-size canvas per object slot (evaluate.check_eval_memory, `validate`)."""
    rows = batch * max(samples, particles)
    return float(rows * frames * image_size * image_size * 4 * (EVAL_TENSORS_PER_PIXEL + 4 * slots))


def generate_memory_bytes(chunk: int, frames: int, size: int, n_max: int, radius: float) -> float:
    """Peak bytes of generating one chunk of `chunk` sequences (see data/render.py and data/h5.py).

    Two sets of three uint8 frame buffers [chunk, T, size, size]; per ball while rendering, a bool
    mask and two intp index arrays over [chunk * T, P, P] with P = 2 r size + 1 pixels; trajectories
    and contacts in float64.
    """
    f = chunk * frames
    p = math.floor(2 * radius * size) + 1
    images = 2 * 3 * f * size * size
    render_tmp = f * p * p * (1 + 8 + 8) + 2 * f * p * 8
    trajectories = 4 * f * n_max * 2 * 8 + f * n_max * n_max * 9
    return float(images + render_tmp + trajectories)


def generate_file_bytes(sequences: int, frames: int, n_max: int) -> float:
    """A lower bound on the file size: positions and velocities are incompressible float32."""
    return float(sequences * frames * n_max * 2 * 4 * 2)


def check_disk(needed: float, directory: Path, what: str) -> None:
    from rsqair_bench.errors import ConfigError

    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return
    if needed > free:
        raise ConfigError(f"{what} needs at least {gib(needed)} of disk in {directory}, only {gib(free)} free")
