"""Training precision (`model_config.precision`): the autocast a training step's forward runs under,
the upcast that keeps every log-density in float32, and what the hardware offers for bf16.

Why one module: the training step (training/loop.py), `bench` and the dry run's throughput
measurement must run the same forward at the same precision, and the model's log-densities,
likelihood and IWAE/VIMCO reductions (models/air.py, models/sqair.py, models/objective.py) need one
rule for "at least float32". Which casts and why: docs/sqair.md, "Precision".
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rsqair_bench.core.io import read_regular_file

PRECISIONS = ("fp32", "bf16")  # model_config.precision; the first is the default
_FULL = (torch.float32, torch.float64)
# /proc/cpuinfo flags of the x86 instructions that compute on bf16 natively (Linux names): AVX512-BF16
# (dot products of bf16 pairs) and AMX-BF16 (tile matrix multiplies). Without either, bf16 matmuls are
# emulated through conversions to fp32: bf16 still works, it is only not faster (it can be slower).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The context a training forward runs under: nothing for fp32, `torch.autocast` to bfloat16 for bf16.

    Autocast changes only the ops on its lower-precision list (matmuls, linear layers, convolutions,
    and on CUDA the RNN cells): weights stay float32 (autocast casts a copy per op), so gradients and
    the optimizer's state stay float32 too. Run the backward outside the context (PyTorch's advice:
    it already runs each op in the dtype its forward chose)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, found {precision!r}")


def full_precision(t: Tensor) -> Tensor:
    """`t` in float32 when autocast left it in a lower precision (bf16, fp16); float32 and float64 unchanged.

    Why a dtype test rather than `t.float()`: that is a dispatcher call (a profiler event) even when it
    copies nothing, on every log-density of every fp32 step, and it would round a float64 model down."""
    return t if t.dtype in _FULL else t.float()


def bf16_hardware(device: torch.device) -> dict[str, Any]:
    """What `device` offers for bf16 arithmetic, for the bench's results: on CUDA the compute capability
    (native bf16 from 8.0, Ampere); on CPU the bf16 instruction flags present, torch's vector ISA
    (`torch.backends.cpu.get_cpu_capability`) and whether bf16 is native (any of BF16_CPU_FLAGS).
    `native` is None where it cannot be told (no /proc/cpuinfo: not Linux)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return {"compute_capability": f"{major}.{minor}", "native": major >= 8}
    flags = cpu_flags()
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "flags": None if flags is None else [f for f in BF16_CPU_FLAGS if f in flags],
            "native": None if flags is None else any(f in flags for f in BF16_CPU_FLAGS)}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature flags as Linux lists them (the first `flags` line of /proc/cpuinfo); None elsewhere."""
    try:
        text = read_regular_file(cpuinfo).decode(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return None
