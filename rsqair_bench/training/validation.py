"""Validation: the whole-sequence IWAE bound on the validation split with the same random numbers
at every call (common random numbers make successive validations comparable), and the test that
tells a distribution refusing NaN parameters from any other ValueError (the step and validation
both treat it as a non-finite score)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rsqair_bench.core.seeding import derive_seed


def _features_only(batch: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    return torch.stack([item["features"] for item in batch])  # [B, T, 1, H, W]


def validation_bound(
    model: nn.Module, dataset: Dataset, batch_size: int, particles: int, seed: int, device: torch.device
) -> float:
    """Mean over sequences of the whole-sequence IWAE bound; same random numbers on every call."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_features_only,
                        generator=torch.Generator().manual_seed(derive_seed(seed, 5)))  # no global RNG draw
    g = torch.Generator(device=device).manual_seed(derive_seed(seed, 4))
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x in loader:
            bound = model(x.to(device), particles, generator=g).iwae_bound  # [B]
            total += float(bound.double().sum())
            count += bound.shape[0]
    model.train(was_training)
    return total / max(count, 1)


def is_nonfinite_distribution_error(err: ValueError) -> bool:
    """torch.distributions' argument validation failing on NaN/inf parameters (e.g. after a huge learning rate)."""
    text = str(err)
    return "to satisfy the constraint" in text and "found invalid values" in text
