"""One on-disk inductor cache per CPU kernel family, so that a cache warmed under one family is never
read under another.

Why (measured 2026-12-05, torch 2.13.0+cpu, a 2-core AMD EPYC with AVX-512):
`ATEN_CPU_CAPABILITY` also picks the SIMD family inductor generates code for (avx2: 8 floats a
vector, avx512: 16), but a compiled graph found in inductor's cache (`TORCHINDUCTOR_CACHE_DIR`,
default `/tmp/torchinductor_<user>`) is reused whichever family wrote it. With one cache shared by
both families, `tests/test_step_speed.py::test_compiled_model_matches_eager_loss_and_gradients`
- crashed the process with SIGBUS on the CPU's own kernels after avx2 runs had used the cache (three
  runs of three; CI, which runs the learning checks under avx2 beside the main run, died of it at
  611 s with exit code 135);
- gave a NaN loss and wrong object counts under avx2 after the CPU's own kernels had used it;
- passed in every case with a cold cache, and with a cache warmed by the same family only.
So every process that compiles names its cache after its family, `<inductor's default>-<family>`
(family: the value of ATEN_CPU_CAPABILITY, or `native` when unset), unless the caller chose a folder.
A process-wide environment variable is the only lever inductor offers; it is set before the
process's first torch.compile (`models/sqair.py`, `training/optim.py`, `tests/conftest.py`).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

CACHE_VAR = "TORCHINDUCTOR_CACHE_DIR"
FAMILY_VAR = "ATEN_CPU_CAPABILITY"


def family_cache_dir(environ: MutableMapping[str, str]) -> str:
    """The cache folder for the kernel family `environ` selects: inductor's default path plus the family."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir  # no torch import: a plain module

    family = environ.get(FAMILY_VAR, "").strip().lower() or "native"
    return f"{default_cache_dir()}-{family}"


def isolate_inductor_cache(environ: MutableMapping[str, str] | None = None) -> str:
    """Point inductor at the current family's own cache unless the caller set TORCHINDUCTOR_CACHE_DIR;
    returns the folder in use. Idempotent; call it before the first torch.compile of a process."""
    environ = os.environ if environ is None else environ
    chosen = environ.get(CACHE_VAR)
    if chosen:
        return chosen
    environ[CACHE_VAR] = family_cache_dir(environ)
    return environ[CACHE_VAR]
