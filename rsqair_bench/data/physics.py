"""Vectorized bouncing-balls simulator (numpy, all sequences of a chunk at once).

Why this shape: generation of the paper-size data (80,000 sequences x 51 frames) must take
minutes, so every operation works on arrays `[N, n_balls, 2]`. Python loops run only over
frames, sub-steps and the few "rounds" of disjoint ball pairs (see `pair_rounds`).

Units: the box is the unit square [0, 1]^2; positions are (x, y) with x along image columns and
y along image rows; velocities are in box units per frame. Balls have equal radius and
masses drawn from `PhysicsParams.masses`. Walls and ball-ball contacts are perfectly elastic, so
total kinetic energy is conserved exactly (up to float rounding), and momentum is conserved by
every ball-ball collision (walls reverse it, of course).

Integration: each frame is split into `substeps` straight-line moves. After each move,
ball-ball contacts are resolved round by round (each round is a perfect matching of the balls,
so no ball is in two collisions of the same round, which keeps every collision an exact
two-body elastic collision), with the collision time reconstructed inside the sub-step so
balls end up touching rather than overlapping; then walls reflect positions and velocities.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rsqair_bench.errors import ConfigError

BALLS_CHOICES = ("4", "6-8")  # the paper's data sets; any 'a' or 'a-b' up to MAX_BALLS works
MAX_BALLS = 10  # more balls of this radius rarely fit without overlap at the start


@dataclass(frozen=True)
class PhysicsParams:
    """Constants of the simulation (recorded in every generated file)."""

    radius: float = 0.0625  # box units: 4 px in a 64 px frame (R-NEM's balls look ~4 px in radius)
    speed: float = 0.05  # initial speed of every ball, box units per frame (3.2 px/frame at 64 px)
    masses: tuple[float, ...] = (1.0, 2.0, 3.0)  # each ball's mass drawn uniformly from this set
    substeps: int = 10  # straight-line moves per frame (as STOVE)
    max_init_tries: int = 10_000  # rejection-sampling rounds for non-overlapping starts


@dataclass
class Trajectories:
    """Simulated states of N sequences; inactive (padding) balls have mass 0 and zero state."""

    positions: np.ndarray  # [N, T, n, 2] float64, (x, y) in [radius, 1 - radius]
    velocities: np.ndarray  # [N, T, n, 2] float64, box units per frame
    masses: np.ndarray  # [N, n] float64, 0 for inactive slots
    active: np.ndarray  # [N, n] bool
    params: PhysicsParams = field(default_factory=PhysicsParams)


def parse_balls(balls: str) -> tuple[int, int]:
    """'4' -> (4, 4); '6-8' -> (6, 8). Any 'a' or 'a-b' with 1 <= a <= b <= MAX_BALLS is accepted."""
    text = str(balls).strip()
    try:
        if "-" in text:
            lo_s, hi_s = text.split("-", 1)
            lo, hi = int(lo_s), int(hi_s)
        else:
            lo = hi = int(text)
    except ValueError:
        raise ConfigError(
            f"--balls: found {balls!r}, expected a count like '4' or a range like '6-8'"
        ) from None
    if lo < 1 or hi < lo or hi > MAX_BALLS:
        raise ConfigError(
            f"--balls: found {balls!r}, expected 1 <= min <= max <= {MAX_BALLS} (e.g. '4' or '6-8')"
        )
    return lo, hi


def pair_rounds(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """All ball pairs of n balls grouped into rounds of disjoint pairs (round-robin schedule).

    Within a round no ball appears twice, so the round's collisions can be resolved at once
    while each stays an exact two-body collision. n-1 rounds for even n, n for odd n.
    """
    m = n + (n % 2)  # add a dummy ball for odd n
    slots = list(range(m))
    rounds: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(m - 1):
        firsts, seconds = [], []
        for k in range(m // 2):
            a, b = slots[k], slots[m - 1 - k]
            if a < n and b < n:
                firsts.append(min(a, b))
                seconds.append(max(a, b))
        if firsts:
            rounds.append((np.array(firsts, dtype=np.intp), np.array(seconds, dtype=np.intp)))
        slots = [slots[0], slots[-1], *slots[1:-1]]
    return rounds


def sample_num_balls(balls: str, num: int, rng: np.random.Generator) -> np.ndarray:
    """Number of balls per sequence, uniform over the range given by `balls`. [N] int64."""
    lo, hi = parse_balls(balls)
    return rng.integers(lo, hi + 1, size=num)


def initial_state(
    num_balls: np.ndarray, n_max: int, params: PhysicsParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Non-overlapping random starts.

    Balls are placed one at a time (vectorized over sequences); a ball that overlaps an
    earlier one is redrawn for the sequences where it does. Returns positions [N, n, 2],
    velocities [N, n, 2] (speed `params.speed`, uniform direction), masses [N, n], active [N, n].
    """
    num = num_balls.shape[0]
    r = params.radius
    if 2 * r >= 1:
        raise ConfigError(f"physics radius: found {r}, expected < 0.5 (box is the unit square)")
    active = np.arange(n_max)[None, :] < num_balls[:, None]  # [N, n]
    pos = np.full((num, n_max, 2), 0.5)
    for k in range(n_max):
        need = active[:, k].copy()  # [N]
        for _ in range(params.max_init_tries):
            idx = np.flatnonzero(need)
            if idx.size == 0:
                break
            pos[idx, k] = rng.uniform(r, 1 - r, size=(idx.size, 2))
            if k == 0:
                need[:] = False
                break
            d2 = ((pos[idx, :k] - pos[idx, k : k + 1]) ** 2).sum(-1)  # [M, k]
            clash = (d2 <= (2 * r) ** 2).any(-1)
            need[idx] = clash
        else:
            raise ConfigError(
                f"physics: could not place {n_max} non-overlapping balls of radius {r} "
                f"in {params.max_init_tries} tries; expected fewer or smaller balls"
            )
    angle = rng.uniform(0, 2 * np.pi, size=(num, n_max))
    vel = params.speed * np.stack([np.cos(angle), np.sin(angle)], -1)  # [N, n, 2]
    masses = np.asarray(params.masses, dtype=np.float64)[rng.integers(0, len(params.masses), (num, n_max))]
    vel = np.where(active[..., None], vel, 0.0)
    masses = np.where(active, masses, 0.0)
    return pos, vel, masses, active


def _collide_round(
    pos: np.ndarray, vel: np.ndarray, mass: np.ndarray, active: np.ndarray,
    i: np.ndarray, j: np.ndarray, radius: float, dt: float,
) -> None:
    """Resolve contacts of the disjoint pairs (i[p], j[p]) in place. pos/vel [N, n, 2]."""
    d = pos[:, j] - pos[:, i]  # [N, P, 2] from i to j
    v = vel[:, j] - vel[:, i]  # [N, P, 2] relative velocity
    dist2 = (d * d).sum(-1)  # [N, P]
    dv = (d * v).sum(-1)  # [N, P], < 0 when approaching
    hit = (dist2 < (2 * radius) ** 2) & (dv < 0) & active[:, i] & active[:, j]
    if not hit.any():
        return
    mi, mj = mass[:, i], mass[:, j]  # [N, P]
    msum = np.where(hit, mi + mj, 1.0)
    dist = np.sqrt(dist2)
    nrm = d / np.where(dist > 0, dist, 1.0)[..., None]  # [N, P, 2] unit normal
    vn = (v * nrm).sum(-1)  # [N, P]
    # time since contact s in [0, dt]: |d - v s| = 2r, positive root written stably
    a = (v * v).sum(-1)
    b = -2.0 * dv
    c = dist2 - (2 * radius) ** 2  # < 0 on a hit
    s = (-2.0 * c) / np.maximum(b + np.sqrt(np.maximum(b * b - 4 * a * c, 0.0)), 1e-300)
    s = np.clip(s, 0.0, dt)
    impulse = np.where(hit, 2.0 * mi * mj / msum * vn, 0.0)[..., None] * nrm  # [N, P, 2]
    dvi = impulse / np.where(hit, mi, 1.0)[..., None]
    dvj = -impulse / np.where(hit, mj, 1.0)[..., None]
    vel[:, i] += dvi
    vel[:, j] += dvj
    # move as if the collision happened s ago: keeps the centre of mass, removes the overlap
    pos[:, i] += dvi * s[..., None]
    pos[:, j] += dvj * s[..., None]


def _walls(pos: np.ndarray, vel: np.ndarray, radius: float) -> None:
    """Mirror positions and velocities at the walls x, y in {r, 1 - r}, in place."""
    lo, hi = radius, 1.0 - radius
    below = pos < lo
    above = pos > hi
    pos[:] = np.where(below, 2 * lo - pos, np.where(above, 2 * hi - pos, pos))
    vel[:] = np.where(below, np.abs(vel), np.where(above, -np.abs(vel), vel))
    np.clip(pos, lo, hi, out=pos)  # a ball pushed far out by a multi-contact stays inside


def simulate(
    pos0: np.ndarray, vel0: np.ndarray, masses: np.ndarray, active: np.ndarray,
    frames: int, params: PhysicsParams,
) -> Trajectories:
    """Integrate `frames` frames from the given state (frame 0 is the initial state)."""
    if frames < 1:
        raise ConfigError(f"frames: found {frames}, expected a positive integer")
    num, n, _ = pos0.shape
    pos = pos0.astype(np.float64, copy=True)
    vel = vel0.astype(np.float64, copy=True)
    mass = masses.astype(np.float64)
    positions = np.empty((num, frames, n, 2))
    velocities = np.empty((num, frames, n, 2))
    positions[:, 0], velocities[:, 0] = pos, vel
    rounds = pair_rounds(n)
    all_i = np.concatenate([i for i, _ in rounds]) if rounds else np.zeros(0, np.intp)
    all_j = np.concatenate([j for _, j in rounds]) if rounds else np.zeros(0, np.intp)
    pair_active = active[:, all_i] & active[:, all_j]  # [N, pairs]
    dt = 1.0 / params.substeps
    act = active[..., None]
    for t in range(1, frames):
        for _ in range(params.substeps):
            pos += vel * dt
            if all_i.size:
                # cheap detection over all pairs; the exact round-by-round pass runs only on
                # the few sequences with a contact (others are unaffected by it)
                d = pos[:, all_j] - pos[:, all_i]  # [N, pairs, 2]
                close = (d * d).sum(-1) < (2 * params.radius) ** 2  # [N, pairs]
                seqs = np.flatnonzero((close & pair_active).any(-1))
                if seqs.size:
                    sub_pos, sub_vel = pos[seqs], vel[seqs]
                    sub_mass, sub_active = mass[seqs], active[seqs]
                    for i, j in rounds:
                        _collide_round(sub_pos, sub_vel, sub_mass, sub_active, i, j, params.radius, dt)
                    pos[seqs], vel[seqs] = sub_pos, sub_vel
            _walls(pos, vel, params.radius)
        positions[:, t] = np.where(act, pos, 0.0)
        velocities[:, t] = vel
    positions[:, 0] = np.where(act, positions[:, 0], 0.0)
    return Trajectories(positions, velocities, mass, active.copy(), params)


def simulate_random(
    num: int, balls: str, frames: int, params: PhysicsParams, rng: np.random.Generator
) -> Trajectories:
    """Draw starts for `num` sequences with `balls` balls ('4' or '6-8') and simulate them."""
    if num < 1:
        raise ConfigError(f"sequences: found {num}, expected a positive integer")
    _, hi = parse_balls(balls)
    counts = sample_num_balls(balls, num, rng)
    pos, vel, masses, active = initial_state(counts, hi, params, rng)
    return simulate(pos, vel, masses, active, frames, params)


def kinetic_energy(velocities: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Total kinetic energy per sequence and frame. velocities [N, T, n, 2], masses [N, n] -> [N, T]."""
    return 0.5 * (masses[:, None, :] * (velocities**2).sum(-1)).sum(-1)


def momentum(velocities: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Total momentum. velocities [N, T, n, 2], masses [N, n] -> [N, T, 2]."""
    return (masses[:, None, :, None] * velocities).sum(-2)
