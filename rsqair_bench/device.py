"""Device choice and memory figures shared by training, evaluation and benchmarks."""

from __future__ import annotations

import platform
import re
import resource
import sys

import torch

from rsqair_bench.errors import ConfigError

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"  # the one rule for a device setting (suite, job, --device)
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def is_device_name(name: str) -> bool:
    """Whether `name` is a device setting this package accepts (whether or not CUDA is present here)."""
    return bool(_DEVICE.match(name))


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when present, else cpu; an unavailable cuda request is a ConfigError."""
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
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def device_description(device: torch.device) -> str:
    """Human-readable device name for results: the GPU model, or the CPU and its thread count."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
