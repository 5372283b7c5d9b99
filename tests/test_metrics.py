"""Metric definitions on hand-built tensors (docs/metrics.md)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rsqair_bench.evaluation.scores import (
    count_correct,
    data_log_likelihood,
    mean_std_over,
    relational_log_likelihood,
    visible_objects,
)
from rsqair_bench.models.sqair import SQAIR

STD = 0.3
H = W = 6
_MODEL = SimpleNamespace(config=SimpleNamespace(output_std=STD))


def model_density(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """The model's own per-pixel likelihood (what the evaluator scores with), output_std = STD."""
    return SQAIR.pixel_log_likelihood(_MODEL, x, mu)


def independent_gaussian_sum(x: np.ndarray, mu: np.ndarray, std: float, mask: np.ndarray | None = None) -> float:
    """log N summed with plain Python floats, one pixel at a time."""
    total = 0.0
    for xi, mi, keep in zip(x.ravel(), mu.ravel(), (mask.ravel() if mask is not None else [True] * x.size)):
        if keep:
            total += -((xi - mi) ** 2) / (2 * std**2) - math.log(std * math.sqrt(2 * math.pi))
    return total


def scene(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three sequences [3, 1, H, W]: 0 no collision, 1 one collision (balls 1,2), 2 two simultaneous (1-2, 3-4)."""
    x = torch.rand(3, 1, H, W, generator=gen, dtype=torch.float64)
    mu = torch.rand(3, 1, H, W, generator=gen, dtype=torch.float64)
    groups = torch.zeros(3, 1, H, W, dtype=torch.int64)
    coll = torch.zeros(3, 1, H, W, dtype=torch.bool)
    groups[0, 0, 0:2, 0:2], groups[0, 0, 4:6, 4:6] = 1, 2  # two balls apart, no flag
    groups[1, 0, 0:2, 0:2], groups[1, 0, 0:2, 2:4], groups[1, 0, 4:6, 4:6] = 1, 2, 3  # 1 touches 2; 3 alone
    coll[1, 0, 0:2, 0:4] = True
    groups[2, 0, 0:2, 0:2], groups[2, 0, 0:2, 2:4] = 1, 2  # pair A
    groups[2, 0, 4:6, 0:2], groups[2, 0, 4:6, 2:4] = 3, 4  # pair B
    groups[2, 0, 2:4, 4:6] = 5  # a fifth ball, not colliding
    coll[2, 0, 0:2, 0:4] = True
    coll[2, 0, 4:6, 0:4] = True
    return x, mu, groups, coll


def test_data_ll_equals_independent_gaussian_sum() -> None:
    x, mu, _, _ = scene(torch.Generator().manual_seed(0))
    got = data_log_likelihood(x, mu, model_density)
    assert got.shape == (3,)
    for b in range(3):
        assert got[b].item() == pytest.approx(independent_gaussian_sum(x[b].numpy(), mu[b].numpy(), STD), rel=1e-12)


def test_data_ll_perfect_reconstruction_is_pixel_count_times_peak_density() -> None:
    x = torch.rand(2, 1, 50, 50, dtype=torch.float64)
    got = data_log_likelihood(x, x.clone(), model_density)
    assert torch.allclose(got, torch.full((2,), 2500 * -math.log(STD * math.sqrt(2 * math.pi)), dtype=torch.float64))


def test_relational_ll_counts_exactly_colliding_ball_pixels() -> None:
    x, mu, groups, coll = scene(torch.Generator().manual_seed(1))
    rel, has = relational_log_likelihood(x, mu, groups, coll, model_density)
    assert has.tolist() == [False, True, True]
    assert rel[0].item() == 0.0  # no collision contributes exactly zero
    mask1 = np.zeros((1, H, W), bool)
    mask1[0, 0:2, 0:4] = True  # balls 1 and 2 only; ball 3 excluded
    assert rel[1].item() == pytest.approx(independent_gaussian_sum(x[1].numpy(), mu[1].numpy(), STD, mask1), rel=1e-12)
    mask2 = np.zeros((1, H, W), bool)
    mask2[0, 0:2, 0:4] = mask2[0, 4:6, 0:4] = True  # both pairs, not ball 5
    assert rel[2].item() == pytest.approx(independent_gaussian_sum(x[2].numpy(), mu[2].numpy(), STD, mask2), rel=1e-12)
    # two simultaneous collisions = the sum of the two single ones
    only_a, only_b = coll.clone(), coll.clone()
    only_a[2, 0, 4:6] = False
    only_b[2, 0, 0:2] = False
    ra, _ = relational_log_likelihood(x, mu, groups, only_a, model_density)
    rb, _ = relational_log_likelihood(x, mu, groups, only_b, model_density)
    assert rel[2].item() == pytest.approx(ra[2].item() + rb[2].item(), rel=1e-12)


def test_relational_ll_ignores_flags_on_background_pixels() -> None:
    x, mu, groups, coll = scene(torch.Generator().manual_seed(2))
    coll[0, 0, 3, 3] = True  # flag on background: not a ball pixel
    rel, has = relational_log_likelihood(x, mu, groups, coll, model_density)
    assert not has[0] and rel[0].item() == 0.0


def test_relational_ll_changes_only_with_colliding_pixels() -> None:
    x, mu, groups, coll = scene(torch.Generator().manual_seed(3))
    base, _ = relational_log_likelihood(x, mu, groups, coll, model_density)
    mu2 = mu.clone()
    mu2[1, 0, 4:6, 4:6] += 0.5  # ball 3 (not colliding) reconstructed differently
    same, _ = relational_log_likelihood(x, mu2, groups, coll, model_density)
    assert same[1].item() == base[1].item()
    mu2[1, 0, 0, 0] += 0.5  # a pixel of ball 1 (colliding)
    changed, _ = relational_log_likelihood(x, mu2, groups, coll, model_density)
    assert changed[1].item() != base[1].item()


def test_mean_std_over_seeds_by_samples_matches_numpy() -> None:
    values = np.random.default_rng(0).normal(400, 20, size=(5, 5))
    mean, std = mean_std_over(values)
    assert mean == pytest.approx(np.mean(values), rel=1e-12)
    assert std == pytest.approx(np.std(values), rel=1e-12)
    t_mean, t_std = mean_std_over(torch.tensor(values))
    assert (t_mean, t_std) == pytest.approx((mean, std), rel=1e-12)
    assert mean_std_over([[1.0, 3.0]]) == (2.0, 1.0)


def test_visible_objects_and_count_accuracy() -> None:
    groups = torch.zeros(2, 3, 1, 4, 4, dtype=torch.int64)  # [B, T, 1, H, W]
    groups[0, 0, 0, 0, 0] = 1
    groups[0, 1, 0, 0, 0], groups[0, 1, 0, 3, 3] = 1, 7  # ids need not be contiguous
    groups[1, :, 0, 1:3, 1:3] = 2  # one ball over many pixels is one object
    assert visible_objects(groups).tolist() == [[1, 2, 0], [1, 1, 1]]
    num_present = torch.tensor([[[1.0, 2.0, 0.0], [1.0, 1.0, 0.4]], [[1.0, 0.0, 2.0], [1.0, 0.0, 2.0]]])  # [B, P, T]
    # rounded particle means: [1, 2 (1.5 -> round half to even = 2), 0], [1, 0, 2]
    assert count_correct(num_present, groups).tolist() == [[True, True, True], [True, False, False]]
