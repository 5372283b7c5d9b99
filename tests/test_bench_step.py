"""Micro benchmarks for issue 10: the SQAIR training step, rendering and glimpse extraction, each
beside the plain per-slot / per-box way (tests/test_step_speed.py) it replaced.

Run with `tox -e bench` (or `python -m pytest -m bench --benchmark-enable --benchmark-only
tests/test_bench_step.py`); in the normal test run (`--benchmark-disable`) each case runs once.
Pairs share a benchmark group, so pytest-benchmark prints them side by side.
"""

from __future__ import annotations

import pytest
import torch

from rsqair_bench.config import ModelConfig
from rsqair_bench.models.stn import extract_glimpses, render_sum, transform_where
from rsqair_bench.registry import build_model
from tests.test_step_speed import plain_extract_glimpses, plain_render_sum, use_plain_path

pytestmark = pytest.mark.bench

# Issue 10's CPU-scale setting: hidden 64, glimpse 10, batch 16, 5 particles, T 10, K 4, 1 thread.
CPU_SCALE = ModelConfig(n_hidden=64, glimpse_size=10)
BATCH, PARTICLES, FRAMES = 16, 5, 10
# Paper training size for the warps: 32 sequences x 5 particles, 4 boxes, 20x20 glimpses, 50x50 frames.
N, K, GLIMPSE, IMAGE = 32 * 5, 4, (20, 20), (50, 50)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as in the issue's CPU-scale setting: on 2 cores shared with training runs, two
    threads make these small ops wait on each other and the timings swing by 10x or more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.benchmark(group="train_step_cpu_scale")
@pytest.mark.parametrize("path", ["optimised", "plain"])
def test_bench_train_step_cpu_scale(benchmark, path: str) -> None:
    """Forward + backward + Adam step of sqair; `plain` runs the per-slot reference path."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("sqair", CPU_SCALE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(BATCH, FRAMES, 1, *IMAGE, generator=g) > 0.92).float()
    sample_gen = torch.Generator().manual_seed(1)

    def step() -> torch.Tensor:
        out = model(x, PARTICLES, sample_gen)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        return out.loss.detach()

    with pytest.MonkeyPatch.context() as mp:
        if path == "plain":
            use_plain_path(mp)
        loss = benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    assert torch.isfinite(loss)


def _warp_inputs():
    g = torch.Generator().manual_seed(0)
    where = transform_where(torch.randn(N, K, 4, generator=g)).requires_grad_(True)
    return g, where


@pytest.mark.benchmark(group="render")
@pytest.mark.parametrize("path", ["render_sum", "per_box_grid_sample"])
def test_bench_render(benchmark, path: str) -> None:
    """K glimpses and their footprints rendered and summed per canvas, forward + backward."""
    g, where = _warp_inputs()
    glimpses = torch.rand(N, K, *GLIMPSE, generator=g).requires_grad_(True)
    weights = (torch.rand(N, K, generator=g) > 0.3).float().requires_grad_(True)
    fn = render_sum if path == "render_sum" else plain_render_sum

    def step() -> torch.Tensor:
        canvas, footprint = fn(glimpses, where, weights, IMAGE)
        (canvas.square().sum() + footprint.sum()).backward()
        return canvas

    canvas = benchmark(step)
    assert canvas.shape == (N, 1, *IMAGE)


@pytest.mark.benchmark(group="extract")
@pytest.mark.parametrize("path", ["extract_glimpses", "per_box_grid_sample"])
def test_bench_extract(benchmark, path: str) -> None:
    """K glimpses cut from each frame, forward + backward into the boxes (as in the model)."""
    g, where = _warp_inputs()
    images = torch.rand(N, 1, *IMAGE, generator=g)
    fn = extract_glimpses if path == "extract_glimpses" else plain_extract_glimpses

    def step() -> torch.Tensor:
        glimpses = fn(images, where, GLIMPSE)
        glimpses.square().sum().backward()
        return glimpses

    glimpses = benchmark(step)
    assert glimpses.shape == (N, K, 1, *GLIMPSE)
