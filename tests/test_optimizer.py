"""The reference's RMSProp semantics: mean-square accumulator starts at 1 (TF), decay 0.9."""

import torch
from torch import nn

from rsqair_bench.config import TrainConfig
from rsqair_bench.train import build_optimizer


def test_rmsprop_first_step_uses_an_accumulator_that_starts_at_one():
    layer = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    cfg = TrainConfig(learning_rate=0.1)
    optimizer = build_optimizer(layer, cfg)
    layer(torch.tensor([[2.0]])).sum().backward()  # gradient 2
    optimizer.step()
    expected = -0.1 * 2.0 / (0.9 * 1.0 + 0.1 * 2.0**2) ** 0.5  # TF: ms = 0.9 * 1 + 0.1 * g^2
    assert torch.allclose(layer.weight, torch.tensor([[expected]]), atol=1e-6)
    # PyTorch's default (accumulator at 0) would step by lr * g / sqrt(0.1 g^2), 1.8x further here.
    assert abs(expected) * 1.5 < 0.1 * 2.0 / (0.1 * 2.0**2) ** 0.5


def test_adam_is_available_for_short_runs():
    optimizer = build_optimizer(nn.Linear(2, 2), TrainConfig(optimizer="adam"))
    assert isinstance(optimizer, torch.optim.Adam)
