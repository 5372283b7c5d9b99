"""Model construction under a seeded RNG, the optimizer and its (optionally compiled) update.

Separate from the loop because `bench`, `run --dry-run`'s cost estimate and tools/step_time.py
build the same optimizer to time a step without running a job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rsqair_bench.config import ModelConfig, TrainConfig
from rsqair_bench.core.inductor_cache import isolate_inductor_cache
from rsqair_bench.core.seeding import derive_seed
from rsqair_bench.registry import ModelFactory


def build_seeded_model(factory: ModelFactory, name: str, config: ModelConfig, seed: int) -> nn.Module:
    """Construct under fork_rng so parameter init is seeded without touching the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, 0))
        return factory(name, config)


def build_optimizer(model: nn.Module, cfg: TrainConfig, compiled: bool = False) -> torch.optim.Optimizer:
    """The reference's RMSProp (TF semantics: decay 0.9, eps 1e-10, momentum, mean-square accumulator
    starting at 1 -- PyTorch starts it at 0, which makes the first steps ~1/sqrt(1-0.9) = 3x larger
    and much noisier), or Adam for short CPU runs.

    `compiled` (for `optimizer_update`): the learning rate lives in a tensor that the schedule updates
    in place, so the compiled update reads the new value instead of recompiling (~30 s per lr change
    on this CPU)."""
    params = [p for p in model.parameters() if p.requires_grad]
    lr: float | torch.Tensor = torch.tensor(cfg.learning_rate) if compiled else cfg.learning_rate
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    optimizer = torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-10, momentum=cfg.momentum)
    for p in params:
        optimizer.state[p] = {
            "step": torch.tensor(0.0),
            "square_avg": torch.ones_like(p, memory_format=torch.preserve_format),
            "momentum_buffer": torch.zeros_like(p, memory_format=torch.preserve_format),
        }
    return optimizer


def optimizer_update(optimizer: torch.optim.Optimizer, compiled: bool) -> Callable[[], Any]:
    """`optimizer.step`, compiled when `model_config.compile` is set (with `build_optimizer(..., compiled=True)`).

    Why: the eager update makes a handful of operator calls per parameter tensor: about 2,200
    profiler events for SQAIR's 93 tensors on CPU, an eighth of a compiled training step. Compiled,
    it is a few fused loops over all of them (~10 events). Numerics: the same update up to float
    rounding (tests/test_optimizer.py)."""
    if not compiled:
        return optimizer.step
    isolate_inductor_cache()  # a cache warmed under another ATEN_CPU_CAPABILITY crashes (core/inductor_cache.py)
    return torch.compile(optimizer.step)
