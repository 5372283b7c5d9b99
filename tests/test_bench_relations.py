"""Micro benchmarks: each relation's forward + backward at the paper's training shape.

B = 160 = batch 32 x 5 particles, K = 4 objects, D = 10 (z_what 5 + where 4 + pres 1).
Run with `python -m pytest -m bench --benchmark-only tests/test_bench_relations.py`.
"""

from __future__ import annotations

import pytest
import torch

from rsqair_bench.config import ModelConfig
from rsqair_bench.registry import build_relation, relation_names

pytestmark = pytest.mark.bench


@pytest.mark.parametrize("name", relation_names())
def test_relation_forward_backward(benchmark, name: str) -> None:
    torch.manual_seed(0)
    relation = build_relation(name, ModelConfig(z_what=5))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(160, 4, 10, generator=g, requires_grad=True)  # [B, K, D]
    present = torch.rand(160, 4, generator=g) < 0.8  # [B, K]
    state = relation.initial_state(160, 4, z.device)

    def step() -> torch.Tensor:
        gamma, _ = relation(z, present, state)
        gamma.square().sum().backward()
        return gamma

    gamma = benchmark(step)
    assert gamma.shape == (160, 4, relation.out_dim)
