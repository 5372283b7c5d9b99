"""Device choice and memory figures shared by training, evaluation and benchmarks.

torch is imported inside the functions that need it: `validate` and `run --dry-run` check device
names (`is_device_name`) without loading torch.
"""

from __future__ import annotations

import platform
import re
import resource
import sys
from typing import TYPE_CHECKING

from rsqair_bench.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"  # the one rule for a device setting (suite, job, --device)
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def is_device_name(name: str) -> bool:
    """Whether `name` is a device setting this package accepts (whether or not CUDA is present here)."""
    return bool(_DEVICE.match(name))


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when present, else cpu; an unavailable cuda request is a ConfigError."""
    import torch

    if not is_device_name(name):
        raise ConfigError(f"device: expected {DEVICE_NAMES}, found {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available (use auto or cpu)")
    return device


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on cuda; peak resident set size of this whole process on CPU."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def device_description(device: torch.device) -> str:
    """Human-readable device name for results: the GPU model, or the CPU and its thread count."""
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def check_run_device(setting: str, suite_path: str, executor: str = "local") -> str:
    """The device line `run` prints first, or a one-line ConfigError naming the suite file and `device`.

    Why here and before anything else: a `device: cuda` suite on a machine without CUDA would
    otherwise generate its data (minutes to hours at paper scale) and fail only in the first job.
    `auto` falls back to the CPU and says so. Under Ray the jobs run on the cluster's workers, not
    here, so this machine's CUDA proves nothing and is not checked.
    """
    import torch

    if not is_device_name(setting):
        raise ConfigError(f"{suite_path}: device: expected {DEVICE_NAMES}, found {setting!r}")
    if executor == "ray":
        return f"device {setting}: chosen on each Ray worker"
    if setting == "cpu":
        return "device cpu: running on cpu"
    if not torch.cuda.is_available():
        if setting == "auto":
            return "device auto: no CUDA, running on cpu"
        raise ConfigError(f"{suite_path}: device: {setting!r} but CUDA is not available on this machine "
                          "(set device: auto or cpu)")
    device = torch.device("cuda" if setting == "auto" else setting)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{suite_path}: device: {setting!r} but this machine has {torch.cuda.device_count()} "
                          "CUDA device(s) (cuda:0 is the first)")
    return f"device {setting}: running on {device_description(device)}"
