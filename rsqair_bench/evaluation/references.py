"""Reference predictors of the sampled frame T: the scale a model's number is read on.

Why: the data log-likelihood of one sampled frame has no natural zero. A model that learned no
dynamics can still score in the hundreds of nats below zero, so every table shows, on the same
sequences, frames and crop as the models:

- `empty`: an all-zero frame T (what a model that draws nothing scores);
- `copy_last`: frame T-1 repeated (no dynamics at all);
- `const_velocity`: the true balls of frame T-1 moved one step by their true velocities and drawn
  by the data set's own renderer on the full frame, then cropped as the loader crops (collisions
  and walls ignored): an upper reference for a model without relational reasoning;
- `perfect`: frame T itself (the maximum, 2500 x 0.285 = 712.6 nats at sigma 0.3 on 50x50).

Each predictor also has object centres for the matching metrics (`copy_last`: the balls at T-1,
`const_velocity`: the moved balls); `empty` and `perfect` have none.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rsqair_bench.data.ball_states import BallStates
from rsqair_bench.data.render import render

REFERENCES = ("empty", "copy_last", "const_velocity", "perfect")
LABELS = {"empty": "empty", "copy_last": "copy-last", "const_velocity": "const-velocity", "perfect": "perfect"}


def const_velocity_positions(states: BallStates, index: np.ndarray, frames: int) -> np.ndarray:
    """Balls of frame T-1 moved one frame by their velocities: [B, n, 2] box units (T = `frames`)."""
    t_prev = frames - 2  # 0-based index of frame T-1
    return states.positions[index, t_prev] + states.velocities[index, t_prev]


def render_crop(states: BallStates, positions: np.ndarray, index: np.ndarray) -> Tensor:
    """Draw balls at `positions` [B, n, 2] with the data renderer, then crop: float32 [B, 1, c, c]."""
    frames = render(positions[:, None], states.active[index], states.radius, states.size)
    lo, c = states.offset, states.crop
    crop = np.array(frames.features[:, 0, lo:lo + c, lo:lo + c], dtype=np.float32)  # copy out of the buffers
    return torch.from_numpy(crop).unsqueeze(1)


def reference_frames(x: Tensor, states: BallStates | None, index: np.ndarray) -> dict[str, Tensor | None]:
    """Each reference's prediction of frame T for a batch x [B, T, 1, c, c]: name -> [B, 1, c, c].

    `index` [B]: the batch's sequence numbers in `states`. `const_velocity` is None without states.
    """
    frames = x.shape[1]
    oracle = None
    if states is not None:
        oracle = render_crop(states, const_velocity_positions(states, index, frames), index).to(x.device, x.dtype)
    return {
        "empty": torch.zeros_like(x[:, -1]),
        "copy_last": x[:, -2],
        "const_velocity": oracle,
        "perfect": x[:, -1],
    }


def reference_centres(states: BallStates, index: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Object centres each dynamic reference predicts for frame T, in crop pixels: name -> [B, n, 2]."""
    return {
        "copy_last": states.centres_px(states.positions[index, frames - 2]),
        "const_velocity": states.centres_px(const_velocity_positions(states, index, frames)),
    }
