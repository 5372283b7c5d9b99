"""Pure scores of a predicted last frame, and object counts (definitions: docs/metrics.md; why they are fixed: docs/design.md).

Every likelihood here is the model's own: callers pass its per-pixel log density (`SQAIR.pixel_log_likelihood`,
a fixed-std Gaussian), so a model, the reference predictors beside it and the tests score with one formula.
Used by `evaluate` (the model's sampled frame T) and `dynamics` (the reference predictors' frame T).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

# (x, predicted frames) -> per-pixel log p(x | frames), same shape as x; e.g. SQAIR.pixel_log_likelihood
LogDensity = Callable[[Tensor, Tensor], Tensor]


def data_log_likelihood(x_T: Tensor, frames_T: Tensor, log_density: LogDensity) -> Tensor:
    """x_T, frames_T: [B, 1, H, W] -> [B], sum over pixels of the per-pixel log density (nats)."""
    return log_density(x_T, frames_T).flatten(1).sum(1)


def collision_mask(groups_T: Tensor, collisions_T: Tensor) -> Tensor:
    """[B, 1, H, W] bool: pixels of a ball (groups > 0) flagged as colliding with another ball."""
    return collisions_T.bool() & (groups_T > 0)


def relational_log_likelihood(
    x_T: Tensor, frames_T: Tensor, groups_T: Tensor, collisions_T: Tensor, log_density: LogDensity
) -> tuple[Tensor, Tensor]:
    """Data LL restricted to colliding-ball pixels at frame T -> (ll [B], has_collision [B] bool).

    Sequences with no such pixel score exactly 0 (and has_collision False).
    """
    mask = collision_mask(groups_T, collisions_T)  # [B, 1, H, W]
    ll = torch.where(mask, log_density(x_T, frames_T), torch.zeros((), dtype=x_T.dtype))
    return ll.flatten(1).sum(1), mask.flatten(1).any(1)


def visible_objects(groups: Tensor) -> Tensor:
    """groups: [B, T, 1, H, W] int ids (0 = background) -> [B, T] number of distinct ball ids visible."""
    b, t = groups.shape[:2]
    flat = groups.reshape(b, t, -1).long().clamp(min=0)  # [B, T, HW]
    seen = torch.zeros(b, t, int(flat.max()) + 1, dtype=torch.bool, device=groups.device)
    seen.scatter_(2, flat, True)
    return seen[:, :, 1:].sum(2)


def count_correct(num_present: Tensor, groups: Tensor) -> Tensor:
    """num_present [B, P, T] (per particle), groups [B, T, 1, H, W] -> [B, T] bool: rounded mean count == visible."""
    predicted = num_present.float().mean(1).round().long()  # [B, T]
    return predicted == visible_objects(groups)


def mean_std_over(values: Any) -> tuple[float, float]:
    """Mean and population std (numpy's default, ddof=0) over all entries, e.g. [seeds, samples]."""
    arr = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())
