"""Micro benchmarks of data generation (run with `pytest -m bench --benchmark-only`)."""

from __future__ import annotations

import numpy as np
import pytest

from rsqair_bench.data.physics import PhysicsParams, simulate_random
from rsqair_bench.data.render import render

P = PhysicsParams()


@pytest.mark.bench
def test_bench_simulate_4_balls(benchmark) -> None:
    tr = benchmark(lambda: simulate_random(32, "4", 20, P, np.random.default_rng(0)))
    assert tr.positions.shape == (32, 20, 4, 2)


@pytest.mark.bench
def test_bench_render_4_balls(benchmark) -> None:
    tr = simulate_random(32, "4", 20, P, np.random.default_rng(0))
    fr = benchmark(lambda: render(tr.positions, tr.active, P.radius, 64))
    assert fr.groups.shape == (32, 20, 64, 64)
