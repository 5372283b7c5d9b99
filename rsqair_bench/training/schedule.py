"""The training schedule as pure functions of the iteration: curriculum length, learning-rate
factor, and early stopping. Pure so that `run --dry-run`'s cost estimate (`runner/cost_model.py`) and the
tests can ask what training will do without training."""

from __future__ import annotations

import math
from typing import Any

from rsqair_bench.config import TrainConfig


def curriculum_length(iteration: int, cfg: TrainConfig) -> int:
    """Sequence length used at 0-based `iteration`: start + iteration // every, capped at max."""
    return min(cfg.curriculum_max, cfg.curriculum_start + iteration // cfg.curriculum_every)


def learning_rate_factor(iteration: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr at 0-based `iteration`: decay_factor ** (milestones passed)."""
    passed = sum(1 for frac in cfg.lr_decay_at if iteration >= round(frac * cfg.max_iterations))
    return cfg.lr_decay_factor**passed


class EarlyStopping:
    """Stop after `patience` consecutive validations without a strictly higher score (bound: higher = better).

    A NaN/inf score never counts as an improvement.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best: float | None = None
        self.best_iteration: int | None = None
        self.bad_count = 0

    def update(self, score: float, iteration: int | None = None) -> bool:
        """Record one validation; returns True when it improved on the best so far."""
        if math.isfinite(score) and (self.best is None or score > self.best):
            self.best, self.best_iteration, self.bad_count = float(score), iteration, 0
            return True
        self.bad_count += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_count >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_iteration": self.best_iteration, "bad_count": self.bad_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_iteration, self.bad_count = state["best"], state["best_iteration"], state["bad_count"]
