"""True ball states of a split for the state-space track: centres, contacts, and the input noise.

Why a module of its own: the state-space track (docs/states.md) trains and scores on the
simulator's states instead of pixels. Everything it reads comes from the data set file that
`data generate` wrote (`positions`, `velocities`, `masses`), through `ball_states.read_ball_states`,
so the track sees exactly the balls the pixel models see, in the crop's pixel coordinates. Contacts
use the data set's own rule (`render.ball_contacts`, the rule behind its `collisions` ground truth).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rsqair_bench.data.ball_states import read_ball_states
from rsqair_bench.data.h5 import open_h5, validate_split
from rsqair_bench.data.render import CONTACT_TOLERANCE_PX, ball_contacts
from rsqair_bench.errors import DataError


@dataclass
class StateSplit:
    """The states of the first N sequences of a split, sequence-major."""

    centres: np.ndarray  # [N, T, n, 2] float64, (x, y) in continuous pixels of the central crop
    velocities: np.ndarray  # [N, T, n, 2] float64, px per frame (the simulator's, after frame t)
    active: np.ndarray  # [N, n] bool, False for padding slots
    contacts: np.ndarray  # [N, T, n] bool, ball-ball contact at frame t
    crop: int  # side of the central crop, px
    box_scale: float  # a ball's box side over the crop side (its diameter / crop)

    def colliding(self) -> np.ndarray:
        """[N, T, n] bool: ball k is in ball-ball contact at frame t-1 or at frame t (at t = 0: at frame 0).

        Why both frames: a collision that changes a ball's motion between the last input frame and the
        predicted one shows as a contact at one end or the other (the pixel evaluation's rule,
        `BallStates.colliding`, applied to every frame)."""
        before = np.concatenate([self.contacts[:, :1], self.contacts[:, :-1]], axis=1)  # [N, T, n]: frame t-1
        return (before | self.contacts) & self.active[:, None, :]

    @property
    def frames(self) -> int:
        return int(self.centres.shape[1])


def read_state_split(path: str | Path, split: str, crop: int, sequences: int | None = None,
                     frames: int | None = None) -> StateSplit:
    """The first `sequences` sequences (all when None) and `frames` frames of `split` (all when None).

    A file without the simulator's states (a file from elsewhere) is one DataError naming it: the
    track has nothing to read there, and guessing states from pixels would be another experiment."""
    with open_h5(path) as f:
        info = validate_split(f, path, split, min_frames=frames, min_size=crop)
    if "positions" not in info.shapes or "velocities" not in info.shapes:
        raise DataError(f"{path}: {split} has no positions/velocities datasets; expected a file written by "
                        "`data generate` (the state-space track reads the simulator's true states)")
    states = read_ball_states(path, split, frames or info.frames, sequences or info.sequences, crop)
    if states is None:  # pragma: no cover - checked above
        raise DataError(f"{path}: {split}: no ball states")
    return state_split(states.positions, states.velocities, states.active, states.radius, states.size, crop)


def state_split(positions: np.ndarray, velocities: np.ndarray, active: np.ndarray, radius: float, size: int,
                crop: int) -> StateSplit:
    """The simulator's states (box units: positions and velocities [N, T, n, 2], active [N, n], radius) as the
    track reads them: pixels of the central `crop` of a `size` frame (ball_states' convention), with contacts."""
    offset = (size - crop) // 2
    contacts = ball_contacts(positions, active, radius, CONTACT_TOLERANCE_PX / size)  # [N, T, n]
    return StateSplit(
        centres=positions * size - offset,
        velocities=velocities * size,
        active=np.asarray(active, dtype=bool).copy(),
        contacts=contacts,
        crop=crop,
        box_scale=2.0 * radius * size / crop,
    )


@dataclass
class StateTensors:
    """A split's states as tensors, in pixels of the crop: what training and evaluation draw windows from."""

    centres: Tensor  # [N, T, n, 2] float32, px of the crop
    active: Tensor  # [N, n] bool
    crop: int
    box_scale: float

    @staticmethod
    def of(split: StateSplit) -> StateTensors:
        return StateTensors(torch.as_tensor(split.centres, dtype=torch.float32), torch.as_tensor(split.active),
                            split.crop, split.box_scale)


def window_batch(data: StateTensors, seq: Tensor, t: Tensor, history: int) -> tuple[Tensor, Tensor, Tensor]:
    """Windows (sequence seq[b], predicted frame t[b]) -> the input centres [B, H, n, 2] px (frames t-H..t-1,
    oldest first), the true centres at t [B, n, 2] px, and which slots hold a ball [B, n]."""
    frames = t.unsqueeze(1) + torch.arange(-history, 0)  # [B, H]
    return data.centres[seq.unsqueeze(1), frames], data.centres[seq, t], data.active[seq]


def noise_key(sigma: float) -> str:
    """How a noise std names its model and its results: `0`, `0.5`, `1.5` (the shortest decimal that reads back)."""
    return f"{sigma:g}"


def add_input_noise(centres: Tensor, sigma_px: float, generator: torch.Generator | None) -> Tensor:
    """centres [..., 2] px plus independent Gaussian noise of std `sigma_px` on each axis (a copy; 0: unchanged).

    The noise stands for a posterior that places each ball with that error: the track feeds noisy
    centres of the input frames to the model and scores it against the true centre it predicts."""
    if sigma_px < 0:
        raise ValueError(f"sigma_px: expected >= 0, found {sigma_px}")
    if sigma_px == 0:
        return centres.clone()
    noise = torch.randn(centres.shape, generator=generator, dtype=centres.dtype, device=centres.device)
    return centres + sigma_px * noise
