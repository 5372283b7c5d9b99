"""Whether `model_config.compile` can work here: the C++ compiler torch's inductor would call.

Why: inductor turns each compiled graph into generated C++ and builds it with that compiler
(`torch._inductor.config.cpp.cxx`: `$CXX` when it was set as torch loaded, else `g++`). Without
one, a compiled job died at its first step, tens of seconds in, with a 100-line InductorError,
having already written config.yaml, train_log.csv and tensorboard/. Training asks
`compiler_problem()` before it writes anything and, given a reason, runs eager with one warning
(the same model and update; steps are slower, the numbers differ from compiled only by float
rounding) and records the reason in its results (`TrainStats.compile_fallback`).

The check builds a tiny C++ shared library with the compiler inductor would pick, the way
inductor links its kernels (`-shared -fPIC`), with standard headers, so a C-only toolchain
without C++ headers counts as missing too. It runs once per process (a fraction of a second;
`compiler_problem.cache_clear()` forgets the answer) and imports only inductor's config module.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

PROBE_SOURCE = """#include <cmath>
#include <vector>
extern "C" double rsqair_probe(double x) { std::vector<double> v(1, x); return std::exp(v[0]); }
"""
PROBE_TIMEOUT_S = 120.0  # a busy 2-core machine can be slow to start a compiler; an absent one fails at once


def inductor_compilers() -> list[str]:
    """The compiler names inductor tries in order (its `None` entry, a conda install of g++ that it
    makes only when TORCH_INDUCTOR_INSTALL_GXX is set, is left out)."""
    from torch._inductor import config as inductor_config  # lazy: torch; only a job that compiles asks

    cxx = inductor_config.cpp.cxx
    names = cxx if isinstance(cxx, (list, tuple)) else (cxx,)
    return [str(name) for name in names if name]


@functools.lru_cache(maxsize=1)
def compiler_problem() -> str | None:
    """None when the C++ compiler inductor would use builds a small shared library; else why not, in one line."""
    names = inductor_compilers()
    found = [(name, shutil.which(name)) for name in names]
    path = next((p for _name, p in found if p), None)
    if path is None:  # inductor takes the first that runs; none is on PATH
        tried = ", ".join(repr(n) for n in names) or "none configured"
        return f"no C++ compiler for torch.compile ({tried} not on PATH; install g++ or set CXX)"
    failure = probe_build(path)
    return None if failure is None else f"the C++ compiler {path} cannot build for torch.compile ({failure})"


def probe_build(compiler: str) -> str | None:
    """Build PROBE_SOURCE into a shared library with `compiler`; None on success, else the first error line."""
    with tempfile.TemporaryDirectory(prefix="rsqair-cxx-probe-") as tmp:
        source, library = Path(tmp) / "probe.cpp", Path(tmp) / "probe.so"
        source.write_text(PROBE_SOURCE)
        try:
            proc = subprocess.run([compiler, "-shared", "-fPIC", "-O0", str(source), "-o", str(library)],
                                  capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as err:
            return f"{type(err).__name__}: {err}"
        if proc.returncode != 0 or not library.is_file():
            lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
            return lines[0][:200] if lines else f"exit status {proc.returncode}"
    return None
