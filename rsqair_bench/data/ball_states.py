"""True ball states of an evaluation split, in the pixel coordinates of the cropped frame.

Why a separate reader: the reference predictors (constant-velocity oracle) and the object-ball
matching metrics need the simulator's `positions`/`velocities`, which the training loader does
not carry (training never needs them). They are small ([T, N, n, 2] floats), so the first
`sequences` sequences are read once per split, in the loader's order.

Coordinates: positions are (x, y) in box units [0, 1] (docs/data.md); pixel (row, col) of the
full `size` x `size` frame covers [col, col + 1) x [row, row + 1), so a centre is at
(x * size, y * size) in continuous pixels, and at (x * size - left, y * size - top) in the central
crop, which is exactly the convention of the model's boxes (models/stn.py `where_to_boxes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsqair_bench.data.h5 import file_parameters, open_h5
from rsqair_bench.data.physics import PhysicsParams
from rsqair_bench.data.render import CONTACT_TOLERANCE_PX, ball_contacts


@dataclass
class BallStates:
    """States of the first N sequences of a split, sequence-major."""

    positions: np.ndarray  # [N, T, n, 2] float64, (x, y) box units
    velocities: np.ndarray  # [N, T, n, 2] float64, box units per frame
    active: np.ndarray  # [N, n] bool, False for padding slots
    size: int  # full frame size in pixels (64)
    crop: int  # side of the central crop the models see (50)
    radius: float  # ball radius, box units

    @property
    def offset(self) -> int:
        """Pixels cut on the top and left by the central crop (the loader's (size - crop) // 2)."""
        return (self.size - self.crop) // 2

    def colliding(self, index: np.ndarray, frames: int) -> np.ndarray:
        """[B, n] bool: ball k of sequence index[b] is in ball-ball contact at frame T-1 or at frame T
        (T = `frames`), by the data set's own contact rule (`data.render.ball_contacts`: the rule behind
        the `collisions` ground truth). Why both frames: a collision that changes a ball's motion
        between the last observed frame and the sampled one shows as a contact at one end or the other."""
        pos = self.positions[index, frames - 2:frames]  # [B, 2, n, 2]: frames T-1 and T
        contacts = ball_contacts(pos, self.active[index], self.radius, CONTACT_TOLERANCE_PX / self.size)  # [B, 2, n]
        return contacts.any(1)

    def centres_px(self, positions: np.ndarray | None = None) -> np.ndarray:
        """Centres in continuous pixels of the crop: [..., n, 2] (x, y); default: all frames [N, T, n, 2]."""
        pos = self.positions if positions is None else positions
        return pos * self.size - self.offset


def read_ball_states(path: str | Path, split: str, frames: int, sequences: int, crop: int) -> BallStates | None:
    """The first `sequences` sequences and `frames` frames of `split`; None when the file has no
    `positions`/`velocities` (e.g. a file from elsewhere without them): the metrics that need them
    are then reported as null, never guessed."""
    with open_h5(path) as f:
        g = f[split]
        if "positions" not in g or "velocities" not in g:
            return None
        pos = np.moveaxis(np.asarray(g["positions"][:frames, :sequences], dtype=np.float64), 1, 0)  # [N, T, n, 2]
        vel = np.moveaxis(np.asarray(g["velocities"][:frames, :sequences], dtype=np.float64), 1, 0)
        if "masses" in g:
            active = np.asarray(g["masses"][:sequences]) > 0  # [N, n]
        else:
            active = np.ones((pos.shape[0], pos.shape[2]), dtype=bool)
        size = int(g["features"].shape[2])
        params = file_parameters(f) or {}
    radius = float((params.get("physics") or {}).get("radius", PhysicsParams().radius))
    return BallStates(pos, vel, active, int(params.get("size", size)), crop, radius)
