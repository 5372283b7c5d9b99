"""Seed derivation shared by training, evaluation and the data loaders (DESIGN.md section 8: no global RNG).

Every random stream of a job is a seeded `torch.Generator` whose seed is `derive_seed(job seed, purpose, ...)`.
Purposes in use: 0 model init, 1 epoch order, 2 training windows, 3 model noise, 4/5 validation noise/order,
6 DataLoader workers (train.py); 10 sampled last frames, 11 IWAE bound, 12 loader (evaluate.py).
"""

from __future__ import annotations

import numpy as np


def derive_seed(seed: int, *tags: int) -> int:
    """Independent 63-bit seed for a (seed, purpose, index) triple; avoids correlated streams."""
    words = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, *tags]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])
