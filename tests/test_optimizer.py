"""The reference's RMSProp semantics: mean-square accumulator starts at 1 (TF), decay 0.9."""

import pytest
import torch
from torch import nn

from rsqair_bench.config import TrainConfig
from rsqair_bench.training.optim import build_optimizer, optimizer_update


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


@pytest.mark.needs_compiler
@pytest.mark.parametrize("name", ["rmsprop", "adam"])
def test_compiled_update_matches_eager_and_does_not_recompile_when_the_lr_changes(name):
    """model_config.compile compiles the optimizer update too (train.optimizer_update); the schedule's
    lr changes must reach it through the lr tensor, without a new graph."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    cfg = TrainConfig(optimizer=name, learning_rate=0.01)
    layers = []
    for compiled in (False, True):
        torch.manual_seed(0)
        layer = nn.Linear(3, 2)
        optimizer = build_optimizer(layer, cfg, compiled)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 if i < 2 else 0.1)
        update = optimizer_update(optimizer, compiled)
        for step in range(4):
            if step == 2:
                frames = counters["frames"]["ok"]
            layer.zero_grad()
            layer(torch.full((1, 3), float(step + 1))).pow(2).sum().backward()
            update()
            schedule.step()
        layers.append(layer)
    assert counters["frames"]["ok"] == frames, "the compiled update recompiled after the lr changed"
    assert isinstance(optimizer.param_groups[0]["lr"], torch.Tensor)
    for eager, compiled in zip(layers[0].parameters(), layers[1].parameters()):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
