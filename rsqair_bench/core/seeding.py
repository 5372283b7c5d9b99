"""Seed derivation shared by training, evaluation and the data loaders (docs/design.md, "Determinism": no global RNG).

Every random stream of a job is a seeded `torch.Generator` whose seed is `derive_seed(job seed, purpose, ...)`.
Purposes in use: 0 model init, 1 epoch order, 2 training windows, 3 model noise, 4/5 validation noise/order,
6 DataLoader workers (training/loop.py); 10 sampled last frames, 11 IWAE bound, 12 loader (evaluation/evaluate.py);
the state-space track: 20 model init, 21 windows, 22 input noise (training/states.py), 23 input noise
(evaluation/states.py), the same for every noise std.
"""

from __future__ import annotations

import numbers

import numpy as np

SEED_LIMIT = 2**63  # seeds are in [0, 2**63): a larger one used to wrap (2**64 ran as 0) in derive_seed's mask


def seed_error(seed: object) -> str | None:
    """Why `seed` is not a seed (`expected ..., found ...`), or None when it is one.

    Why a bound: derive_seed keeps the low 64 bits, so `seeds: [2**70]` trained exactly like seed 0
    and `eval --seed 2**64` scored like `--seed 0`. torch's generators take at most 2**64 - 1 and
    results name the seed as a signed 64-bit integer, hence [0, 2**63)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        return f"expected an integer seed in [0, 2**63), found {seed!r}"
    seed = int(seed)
    if seed < 0:
        return f"expected a non-negative seed, found {seed}"
    if seed >= SEED_LIMIT:
        return f"expected a seed below 2**63 (larger ones wrap onto smaller ones), found {seed}"
    return None


def effective_seed(seed: int) -> int:
    """The seed the random streams actually use (the low 64 bits); two seeds with one effective seed train alike."""
    return seed & 0xFFFFFFFFFFFFFFFF


def derive_seed(seed: int, *tags: int) -> int:
    """Independent 63-bit seed for a (seed, purpose, index) triple; avoids correlated streams.

    A seed outside [0, 2**63) is refused here too, for callers that skipped the checks of `validate`,
    `train` and `eval` (the library's train_job and evaluate_checkpoint)."""
    problem = seed_error(seed)
    if problem:
        from rsqair_bench.errors import ConfigError

        raise ConfigError(f"seed: {problem}")
    words = np.random.SeedSequence([effective_seed(seed), *tags]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])
