"""Test-session settings: torch runs on one CPU thread.

Why: the tests run many tiny ops (small models, a few sequences). On a 2-core machine shared with
other work, two intra-op threads wait on each other at every op, which made such tests 30x-400x
slower and their timings erratic; one thread is as fast for these sizes. A test that needs another
count sets it itself (the learning checks set theirs, tests/learning_checks.py); `_restore_one_thread`
puts the count back to 1 after each test so such a setting never leaks into the tests that follow.

`@pytest.mark.needs_compiler`: a test that runs torch.compile with inductor (which builds C++)
is skipped, with the reason, where no working C++ compiler is found (compiler.compiler_problem),
instead of failing after a minute with a 100-line InductorError.

Inductor's cache: the session uses the folder of its kernel family (core/inductor_cache.py), set
before any test compiles, because a cache warmed under another ATEN_CPU_CAPABILITY crashed the
compiled-model test with SIGBUS; CI runs the learning checks under a second family beside this run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from rsqair_bench.core.inductor_cache import isolate_inductor_cache

SESSION_THREADS = 1


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_compiler: runs torch.compile (inductor builds C++); skipped without a compiler")
    torch.set_num_threads(SESSION_THREADS)
    # Subprocesses the tests start (`python -m rsqair_bench ...`) get one thread too, unless the
    # caller chose otherwise; the runner's workers still apply their own `torch_threads`.
    os.environ.setdefault("OMP_NUM_THREADS", str(SESSION_THREADS))
    isolate_inductor_cache(os.environ)  # also for the subprocesses the tests start


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the `needs_compiler` tests where inductor has no C++ compiler (probed once, only if one is selected)."""
    marked = [item for item in items if item.get_closest_marker("needs_compiler")]
    if not marked:
        return
    from rsqair_bench.core.compiler import compiler_problem

    problem = compiler_problem()
    if problem is not None:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=f"torch.compile cannot run here: {problem}"))


@pytest.fixture(autouse=True)
def _restore_one_thread() -> Iterator[None]:
    yield
    if torch.get_num_threads() != SESSION_THREADS:
        torch.set_num_threads(SESSION_THREADS)


@pytest.fixture(scope="module")
def fake_h5(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a Path
    """A tiny data file in R-NEM's layout (tests/fakes.py), one per test module (the reliability tests)."""
    from tests.fakes import write_fake_h5

    return write_fake_h5(tmp_path_factory.mktemp("data") / "fake.h5", frames=12,
                         sizes={"training": 4, "validation": 2, "test": 2})
