"""Micro benchmark: glimpse extraction + rendering at SQAIR's training size (32 x 5 particles x 4 objects)."""

from __future__ import annotations

import pytest
import torch

from rsqair_bench.models.stn import extract_glimpse, render_glimpse, transform_where

pytestmark = pytest.mark.bench


def test_bench_extract_render(benchmark) -> None:
    gen = torch.Generator().manual_seed(0)
    n = 32 * 5 * 4
    images = torch.rand(n, 1, 50, 50, generator=gen)
    where = transform_where(torch.randn(n, 4, generator=gen)).requires_grad_(True)

    def step() -> torch.Tensor:
        glimpses = extract_glimpse(images, where, (20, 20))  # [N, 1, 20, 20]
        canvas = render_glimpse(glimpses, where, (50, 50))  # [N, 1, 50, 50]
        canvas.sum().backward()
        return canvas

    out = benchmark(step)
    assert out.shape == (n, 1, 50, 50)
