"""Render simulated balls to binary frames with per-pixel ground truth.

Why patches: a ball covers ~50 of 4,096 pixels, so each ball is drawn into a 9x9 (at 64 px)
patch around its centre instead of testing every pixel against every ball; this keeps the
paper-size data within minutes on 2 cores.

Conventions (also in docs/data.md):
- pixel (row, col) has its centre at ((col + 0.5) / size, (row + 0.5) / size) in box units;
  a pixel belongs to a ball when its centre is within the ball's radius of the ball's centre.
- where balls overlap, the ball with the higher index wins (its id is written last).
- a ball is "in contact" at a frame when its centre is within 2r + tol of another active
  ball's centre (tol = `contact_tolerance_px` pixels). Wall contacts are not recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONTACT_TOLERANCE_PX = 1.0


class RenderBuffers:
    """Frame buffers reused across chunks.

    Why: fresh 50+ MB arrays per chunk cost page faults and a full memset; here only the
    pixels the previous call painted are cleared again.
    """

    def __init__(self) -> None:
        self._store: dict[str, np.ndarray] = {}
        self._dirty: dict[str, list[np.ndarray]] = {}

    def get(self, name: str, shape: tuple[int, ...], zeroed: bool = True) -> np.ndarray:
        """A uint8 array of `shape` (all zeros if `zeroed`), backed by a buffer that only grows."""
        size = int(np.prod(shape))
        buf = self._store.get(name)
        if buf is None or buf.size < size:
            buf = np.zeros(size, dtype=np.uint8)
            self._store[name] = buf
            self._dirty[name] = []
        elif zeroed:
            for idx in self._dirty[name]:
                buf[idx] = 0
        self._dirty[name] = []
        return buf[:size].reshape(shape)

    def mark(self, name: str, flat_index: np.ndarray) -> None:
        """Record flat positions written into buffer `name` so the next `get` clears them."""
        self._dirty[name].append(flat_index)


@dataclass
class Frames:
    """Rendered chunk, sequence-major (h5.py transposes to R-NEM's time-first layout)."""

    features: np.ndarray  # [N, T, H, W] uint8 in {0, 1}: pixel covered by any ball
    groups: np.ndarray  # [N, T, H, W] uint8: 0 background, k + 1 for ball slot k
    collisions: np.ndarray  # [N, T, H, W] uint8 in {0, 1}: pixel of a ball in ball-ball contact
    events: np.ndarray  # [N, T] uint8 in {0, 1}: any ball-ball contact in the frame
    contacts: np.ndarray  # [N, T, n] bool: ball in contact with another ball


def ball_contacts(
    positions: np.ndarray, active: np.ndarray, radius: float, tolerance: float
) -> np.ndarray:
    """Per-ball contact flags: centre within 2 * radius + tolerance of another active ball.

    positions [N, T, n, 2], active [N, n] -> [N, T, n] bool (box units throughout).
    """
    n = positions.shape[2]
    d2 = ((positions[:, :, :, None, :] - positions[:, :, None, :, :]) ** 2).sum(-1)  # [N, T, n, n]
    pair = active[:, :, None] & active[:, None, :] & ~np.eye(n, dtype=bool)  # [N, n, n]
    close = d2 <= (2 * radius + tolerance) ** 2
    return (close & pair[:, None]).any(-1)


def render(
    positions: np.ndarray, active: np.ndarray, radius: float, size: int,
    contact_tolerance_px: float = CONTACT_TOLERANCE_PX, buffers: RenderBuffers | None = None,
) -> Frames:
    """Draw balls at `positions` [N, T, n, 2] (box units) into `size` x `size` frames.

    With `buffers`, the returned image arrays are views into them, valid until the next call.
    """
    buffers = buffers or RenderBuffers()
    num, frames, n, _ = positions.shape
    r_px = radius * size
    # pixel j of a row is inside iff |j + 0.5 - cx| <= r_px: at most floor(2 r_px) + 1 candidates
    width = int(math.floor(2 * r_px)) + 1
    offsets = np.arange(width)  # [P]
    contacts = ball_contacts(positions, active, radius, contact_tolerance_px / size)  # [N, T, n]
    groups = buffers.get("groups", (num * frames, size * size))  # flat frames
    collisions = buffers.get("collisions", (num * frames, size * size))
    centres = positions.reshape(num * frames, n, 2) * size  # [F, n, 2] pixel units (x, y)
    act = np.repeat(active, frames, axis=0)  # [F, n]
    cont = contacts.reshape(num * frames, n)
    frame_base = (np.arange(num * frames) * (size * size))[:, None, None]  # [F, 1, 1]
    for k in range(n):  # later balls overwrite earlier ones: the higher index wins
        cx, cy = centres[:, k, 0], centres[:, k, 1]  # [F]
        cols = np.ceil(cx - r_px - 0.5)[:, None].astype(np.intp) + offsets[None, :]  # [F, P]
        rows = np.ceil(cy - r_px - 0.5)[:, None].astype(np.intp) + offsets[None, :]  # [F, P]
        dx2 = (cols + 0.5 - cx[:, None]) ** 2  # [F, P]
        dy2 = (rows + 0.5 - cy[:, None]) ** 2  # [F, P]
        inside = (dy2[:, :, None] + dx2[:, None, :]) <= r_px * r_px  # [F, P, P]
        inside &= ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
        inside &= act[:, k][:, None, None]
        lin = (frame_base + rows[:, :, None] * size + cols[:, None, :])[inside]  # flat pixel indices
        groups.reshape(-1)[lin] = k + 1
        collisions.reshape(-1)[lin] = np.broadcast_to(cont[:, k][:, None, None], inside.shape)[inside]
        buffers.mark("groups", lin)
        buffers.mark("collisions", lin)
    groups = groups.reshape(num, frames, size, size)
    collisions = collisions.reshape(num, frames, size, size)
    features = buffers.get("features", groups.shape, zeroed=False)
    np.greater(groups, 0, out=features.view(bool))
    events = contacts.any(-1).astype(np.uint8)
    return Frames(features, groups, collisions, events, contacts)
