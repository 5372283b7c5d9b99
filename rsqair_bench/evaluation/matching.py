"""Object-ball matching: does each visible ball have exactly one object on it, and how far off?

Why: pixel sums cannot tell "one duplicate plus one missed ball" from a correct scene (the count
is still right), nor a prior that predicts positions 3 px off from one that learned nothing.
Matching the model's present objects to the true balls per frame, by box centre against ball
centre with the Hungarian algorithm (scipy's `linear_sum_assignment`), measures both directly.
Definitions and the radius/cap choices: docs/metrics.md, "Object-ball matching".

All coordinates are continuous pixels of the cropped frame, (x, y), 0 at the top-left edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

MATCH_RADIUS_PX = 5.0  # an object "is on" a ball when its box centre is within this of the ball's centre
ERROR_CAP_PX = 10.0  # prior centre error: a ball with no object, or one farther than this, counts as this
_FORBIDDEN = 1e6  # cost of a pair beyond the radius: larger than any sum of allowed costs


def visible_balls(groups: np.ndarray, n_balls: int) -> np.ndarray:
    """groups [..., H, W] int ids (0 background, k + 1 for ball k) -> [..., n_balls] bool: any pixel visible."""
    lead = groups.shape[:-2]
    flat = groups.reshape(-1, groups.shape[-2] * groups.shape[-1]).astype(np.int64)  # [F, HW]
    seen = np.zeros((flat.shape[0], n_balls + 1), dtype=bool)
    rows = np.repeat(np.arange(flat.shape[0]), flat.shape[1])
    seen[rows, np.clip(flat.reshape(-1), 0, n_balls)] = True
    return seen[:, 1:].reshape(*lead, n_balls)


def _distances(objects: np.ndarray, balls: np.ndarray) -> np.ndarray:
    """objects [K, 2], balls [n, 2] -> [K, n] Euclidean distances in px."""
    return np.sqrt(((objects[:, None, :] - balls[None, :, :]) ** 2).sum(-1))


def match_within_radius(objects: np.ndarray, balls: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one pairs (object, ball) closer than `radius`: as many pairs as possible, then the
    smallest total distance. Returns (object indices, ball indices, distances), each [M]."""
    if len(objects) == 0 or len(balls) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    dist = _distances(objects, balls)  # [K, n]
    rows, cols = linear_sum_assignment(np.where(dist <= radius, dist, _FORBIDDEN))
    keep = dist[rows, cols] <= radius
    return rows[keep], cols[keep], dist[rows[keep], cols[keep]]


def capped_ball_errors(objects: np.ndarray, balls: np.ndarray, cap: float) -> np.ndarray:
    """Per ball [n]: distance to the object assigned to it (Hungarian on min(distance, cap)), or
    `cap` when it got none or a farther one. Bounded, so one lost ball cannot dominate the mean."""
    errors = np.full(len(balls), cap)
    if len(objects) and len(balls):
        cost = np.minimum(_distances(objects, balls), cap)  # [K, n]
        rows, cols = linear_sum_assignment(cost)
        errors[cols] = cost[rows, cols]
    return errors


@dataclass
class InferredTally:
    """Running sums over inferred frames; `summary` turns them into the reported fractions."""

    visible: int = 0  # visible balls
    covered: int = 0  # visible balls with an object within the radius
    present: int = 0  # present objects
    duplicates: int = 0  # unmatched objects within the radius of a ball (a second object on it)
    strays: int = 0  # objects within the radius of no ball (matched + duplicates + strays = present)
    error_sum: float = 0.0  # px, over matched pairs
    radius: float = MATCH_RADIUS_PX

    def add(self, objects: np.ndarray, balls: np.ndarray) -> None:
        """One frame: objects [K, 2] (present only), balls [n, 2] (visible only)."""
        rows, _, dist = match_within_radius(objects, balls, self.radius)
        self.visible += len(balls)
        self.covered += len(rows)
        self.present += len(objects)
        self.error_sum += float(dist.sum())
        unmatched = np.setdiff1d(np.arange(len(objects)), rows)
        near = (_distances(objects[unmatched], balls) <= self.radius).any(1) if len(balls) else np.zeros(len(unmatched), bool)
        self.duplicates += int(near.sum())
        self.strays += int((~near).sum())

    def summary(self) -> dict[str, float | int | None]:
        return {
            "coverage": self.covered / self.visible if self.visible else None,
            "duplicates": self.duplicates / self.present if self.present else 0.0,
            "strays": self.strays / self.present if self.present else 0.0,
            "centre_error_px": self.error_sum / self.covered if self.covered else None,
            "visible_balls": self.visible,
            "present_objects": self.present,
        }


CONTACT_GROUPS = ("colliding", "free")  # balls in ball-ball contact around the sampled frame, and the others


def _contact_masks(colliding: np.ndarray) -> dict[str, np.ndarray]:
    """[n] bool -> the mask of each contact group."""
    return {"colliding": colliding, "free": ~colliding}


@dataclass
class ErrorTally:
    """Running sum of capped per-ball centre errors at the sampled frame, in all and per contact group.

    Why the groups: a predictor that ignores collisions (the constant-velocity oracle) is only wrong on
    balls that collide (and at walls); a relation's benefit, if any, shows on the colliding balls."""

    error_sum: float = 0.0
    balls: int = 0
    cap: float = ERROR_CAP_PX
    groups: dict[str, list[float]] = field(default_factory=lambda: {g: [0.0, 0] for g in CONTACT_GROUPS})

    def add(self, objects: np.ndarray, balls: np.ndarray, colliding: np.ndarray | None = None) -> None:
        """objects [K, 2] (present only), balls [n, 2]; colliding [n] bool: ball k is in a collision."""
        errors = capped_ball_errors(objects, balls, self.cap)  # [n]
        self.error_sum += float(errors.sum())
        self.balls += len(balls)
        if colliding is not None:
            for group, mask in _contact_masks(colliding).items():
                self.groups[group][0] += float(errors[mask].sum())
                self.groups[group][1] += int(mask.sum())

    def mean(self) -> float | None:
        return self.error_sum / self.balls if self.balls else None

    def group_mean(self, group: str) -> float | None:
        """Mean capped error over the balls of one contact group; None when the group had no ball."""
        total, count = self.groups[group]
        return total / count if count else None

    def group_count(self, group: str) -> int:
        return int(self.groups[group][1])


def box_centres(boxes: np.ndarray) -> np.ndarray:
    """boxes [..., 4] (x0, y0, x1, y1) px -> centres [..., 2] (x, y)."""
    return 0.5 * (boxes[..., :2] + boxes[..., 2:])


@dataclass
class TrackedTally:
    """The prior's centre error on the balls the model tracks, beside copy-last's on the same balls.

    A ball is tracked when an object sits within the radius of it in the last inferred frame (T-1);
    the prior's error is the distance from the same object (same id) in the sampled frame T to the
    ball at T, or the cap if the prior dropped the object. Copy-last's error on that ball is how far
    the ball moved from T-1 to T. Unlike the capped error over all balls, this isolates the dynamics
    from tracking failures (balls no object is on), which `coverage` reports separately.
    """

    prior_sum: float = 0.0
    copy_sum: float = 0.0
    tracked: int = 0
    candidates: int = 0  # balls visible at T-1 and T
    radius: float = MATCH_RADIUS_PX
    cap: float = ERROR_CAP_PX
    # per contact group: [prior error sum, copy-last error sum, tracked balls]
    groups: dict[str, list[float]] = field(default_factory=lambda: {g: [0.0, 0.0, 0] for g in CONTACT_GROUPS})

    def add(self, before: np.ndarray, ids_before: np.ndarray, after: np.ndarray, ids_after: np.ndarray,
            balls_before: np.ndarray, balls_after: np.ndarray, colliding: np.ndarray | None = None) -> None:
        """Objects at T-1 and T: centres [K, 2] and ids [K] (present only); balls [n, 2] at T-1 and T,
        the same n balls in the same order (visible in both frames); colliding [n] bool per ball."""
        rows, cols, _ = match_within_radius(before, balls_before, self.radius)
        self.candidates += len(balls_before)
        self.tracked += len(rows)
        for obj, ball in zip(rows, cols):
            same = np.flatnonzero(ids_after == ids_before[obj])
            error = float(np.linalg.norm(after[same[0]] - balls_after[ball])) if len(same) else self.cap
            copy = float(np.linalg.norm(balls_before[ball] - balls_after[ball]))
            self.prior_sum += min(error, self.cap)
            self.copy_sum += copy
            if colliding is not None:
                sums = self.groups["colliding" if colliding[ball] else "free"]
                sums[0] += min(error, self.cap)
                sums[1] += copy
                sums[2] += 1

    def summary(self) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {
            "prior_error_px": self.prior_sum / self.tracked if self.tracked else None,
            "copy_last_error_px": self.copy_sum / self.tracked if self.tracked else None,
            "tracked_balls": self.tracked,
            "tracked_fraction": self.tracked / self.candidates if self.candidates else None,
        }
        for group, (prior, copy, count) in self.groups.items():
            out[f"prior_error_px_{group}"] = prior / count if count else None
            out[f"copy_last_error_px_{group}"] = copy / count if count else None
            out[f"tracked_balls_{group}"] = int(count)
        return out
