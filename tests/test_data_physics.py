"""Physics invariants of the bouncing-balls simulator."""

from __future__ import annotations

import numpy as np
import pytest

from rsqair_bench.data.physics import (
    PhysicsParams,
    kinetic_energy,
    momentum,
    pair_rounds,
    parse_balls,
    simulate,
    simulate_random,
)
from rsqair_bench.errors import ConfigError

P = PhysicsParams()
ENERGY_RTOL = 1e-9  # elastic walls and collisions: exact up to float64 rounding
OVERLAP_TOL = 0.15  # fraction of the radius (0.6 px at 64 px); multi-ball contacts only


@pytest.fixture(scope="module")
def many() -> object:
    return simulate_random(128, "6-8", 40, P, np.random.default_rng(0))


@pytest.mark.parametrize("n", range(1, 10))
def test_pair_rounds_cover_every_pair_once_with_disjoint_rounds(n: int) -> None:
    seen = []
    for i, j in pair_rounds(n):
        balls = np.concatenate([i, j])
        assert len(set(balls.tolist())) == balls.size  # no ball twice in a round
        seen += list(zip(i.tolist(), j.tolist()))
    assert sorted(seen) == [(a, b) for a in range(n) for b in range(a + 1, n)]


def test_parse_balls() -> None:
    assert parse_balls("4") == (4, 4)
    assert parse_balls("6-8") == (6, 8)
    for bad in ["five", "8-6", "0", "", "4-", "3-99"]:
        with pytest.raises(ConfigError):
            parse_balls(bad)


def test_energy_conserved_and_balls_stay_in_box(many) -> None:
    e = kinetic_energy(many.velocities, many.masses)  # [N, T]
    assert np.abs(e / e[:, :1] - 1).max() < ENERGY_RTOL
    pos = many.positions[np.broadcast_to(many.active[:, None], many.positions.shape[:3])]  # [M, 2]
    assert pos.min() >= P.radius - 1e-12 and pos.max() <= 1 - P.radius + 1e-12


def test_no_overlap_beyond_tolerance(many) -> None:
    pos, act = many.positions, many.active
    d = np.sqrt(((pos[:, :, :, None] - pos[:, :, None]) ** 2).sum(-1))  # [N, T, n, n]
    pair = act[:, None, :, None] & act[:, None, None, :] & ~np.eye(pos.shape[2], dtype=bool)
    overlap = np.where(pair, 2 * P.radius - d, -1.0)
    assert overlap[:, 0].max() < 0  # strictly apart at the start
    assert overlap.max() < OVERLAP_TOL * P.radius
    assert (overlap > 1e-3 * P.radius).mean() < 1e-3
    # and collisions did happen: some pairs came within a pixel of touching
    assert (overlap > -1 / 64).any()


def test_setup_counts_masses_speeds(many) -> None:
    counts = many.active.sum(1)
    assert counts.min() >= 6 and counts.max() <= 8 and len(set(counts.tolist())) == 3
    assert set(np.unique(many.masses[many.active]).tolist()) == set(P.masses)
    assert (many.masses[~many.active] == 0).all()
    speed0 = np.linalg.norm(many.velocities[:, 0], axis=-1)[many.active]
    np.testing.assert_allclose(speed0, P.speed)


def _pair(d_offset: np.ndarray, v0: np.ndarray, v1: np.ndarray, m: tuple[float, float], frames: int):
    """Two balls near the centre (far from walls for a few frames)."""
    num = d_offset.shape[0]
    pos = np.zeros((num, 2, 2))
    pos[:, 0] = 0.5 - d_offset / 2
    pos[:, 1] = 0.5 + d_offset / 2
    vel = np.stack([v0, v1], 1)
    masses = np.tile(np.array(m), (num, 1))
    return simulate(pos, vel, masses, np.ones((num, 2), bool), frames, P)


def test_head_on_collision_matches_1d_elastic_formula() -> None:
    gap = np.array([[2 * P.radius + 0.03, 0.0]])
    tr = _pair(gap, np.array([[0.05, 0.0]]), np.array([[-0.05, 0.0]]), (1.0, 3.0), 4)
    u1, u2, m1, m2 = 0.05, -0.05, 1.0, 3.0
    v1 = ((m1 - m2) * u1 + 2 * m2 * u2) / (m1 + m2)
    v2 = ((m2 - m1) * u2 + 2 * m1 * u1) / (m1 + m2)
    np.testing.assert_allclose(tr.velocities[0, -1, :, 0], [v1, v2], atol=1e-12)
    np.testing.assert_allclose(momentum(tr.velocities, tr.masses)[0, -1], momentum(tr.velocities, tr.masses)[0, 0], atol=1e-12)
    # the collision is resolved at the moment of contact: they end up touching or apart, never overlapping
    d = np.linalg.norm(tr.positions[0, :, 1] - tr.positions[0, :, 0], axis=-1)
    assert d.min() >= 2 * P.radius - 1e-9


def test_oblique_collisions_conserve_momentum_and_energy() -> None:
    rng = np.random.default_rng(3)
    num = 300
    ang = rng.uniform(0, 2 * np.pi, num)
    normal = np.stack([np.cos(ang), np.sin(ang)], -1)
    offset = normal * (2 * P.radius + 0.02)
    v0 = normal * 0.04 + rng.normal(0, 0.01, (num, 2))  # ball 0 heads roughly towards ball 1
    v1 = -normal * 0.03 + rng.normal(0, 0.01, (num, 2))
    tr = _pair(offset, v0, v1, (1.0, 2.0), 3)
    p = momentum(tr.velocities, tr.masses)  # [N, T, 2]
    e = kinetic_energy(tr.velocities, tr.masses)
    np.testing.assert_allclose(p[:, -1], p[:, 0], atol=1e-12)
    np.testing.assert_allclose(e[:, -1], e[:, 0], rtol=ENERGY_RTOL)
    changed = np.abs(tr.velocities[:, -1] - tr.velocities[:, 0]).max(-1).max(-1) > 1e-6
    assert changed.mean() > 0.9  # almost all pairs really collided


def test_deterministic_per_seed_and_different_across_seeds() -> None:
    a = simulate_random(16, "4", 12, P, np.random.default_rng(7))
    b = simulate_random(16, "4", 12, P, np.random.default_rng(7))
    c = simulate_random(16, "4", 12, P, np.random.default_rng(8))
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.masses, b.masses)
    assert not np.allclose(a.positions, c.positions)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        simulate_random(0, "4", 5, P, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        simulate_random(2, "4", 0, P, np.random.default_rng(0))
