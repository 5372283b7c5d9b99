"""Where the propagation prior's centre error comes from, and its one-step error at every frame.

Why: the sampled frame T scores the prior once per sequence, and its tracked-ball error (about 2 px at
CPU scale) mixes terms that have nothing to do with relations: balls at the crop edge, the prior's
sampling noise, the posterior's own error at T-1 and the velocity rule that amplifies it. Two blocks
of metrics.json take it apart (definitions: docs/metrics.md, "Prior error decomposition" and
"One-step prediction at every frame"):

- `prior_decomposition` (`DecompositionScorer`): at frame T, for every tracked ball and sample, the
  sampled centre's error beside the prior mean's, the prior's std in px, the posterior's error at T-1,
  the velocity rule on the posterior centres and the constant-velocity oracle, split into balls inside,
  at the edge of and outside the crop;
- `one_step` (`OneStepScorer`): the prior's one-step prediction of every frame t = 3..T from the
  posterior of the frames before it, split into colliding and free balls, so a split scores 8x more
  colliding balls than frame T alone.

Frame indices in code are 0-based (frame t of the docs is index t-1). The model's raw where becomes
pixels in one place, `where_centres_px`, with the model's own config: the same conversion as
`SQAIR.generate`'s boxes, whatever range the model's shift has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rsqair_bench.data.ball_states import BallStates
from rsqair_bench.evaluation.matching import MATCH_RADIUS_PX, box_centres, match_within_radius, visible_balls
from rsqair_bench.evaluation.references import const_velocity_positions
from rsqair_bench.models.stn import transform_where, where_to_boxes

INTERIOR_MARGIN_PX = 4.0  # a ball's radius in the 50x50 crop: "interior" balls are wholly inside it
REGIONS = ("interior", "edge", "outside")
CONTACT = ("colliding", "free")
FIRST_ONE_STEP_FRAME = 3  # frame 3 is the first whose prior has a velocity (objects of frames 1 and 2)


# ----------------------------------------------------------------------------- raw where -> pixels
def where_centres_px(raw: Tensor, config: Any, hw: tuple[int, int]) -> Tensor:
    """The model's raw where [..., 4] -> box centres [..., 2] (x, y) in pixels of the H x W frame.

    The one conversion evaluation uses for the model's raw where (the prior's loc, its samples): the
    model's own transform with its config's parameters, then `where_to_boxes`, as `SQAIR.generate` does."""
    return box_centres(where_to_boxes(transform_where(raw, config.where_scale_max, config.where_shift_max), hw))  # [..., 2]


def centre_std_px(loc: Tensor, scale: Tensor, config: Any, hw: tuple[int, int]) -> Tensor:
    """Per-axis std [..., 2] in pixels of the centre of N(loc, diag(scale^2)) in raw where [..., 4],
    linearised at the mean: each raw coordinate moved by +-1 std through `where_centres_px` (a central
    difference), the squared half-differences summed per pixel axis. Exact for a linear transform;
    for tanh it is the slope between mean - std and mean + std."""
    var = torch.zeros(*loc.shape[:-1], 2, dtype=loc.dtype, device=loc.device)
    for d in range(loc.shape[-1]):
        step = torch.zeros_like(loc)
        step[..., d] = scale[..., d]
        half = 0.5 * (where_centres_px(loc + step, config, hw) - where_centres_px(loc - step, config, hw))
        var = var + half * half
    return var.sqrt()


@dataclass
class PriorCentres:
    """The prior of every frame of a set of Generation rows in pixels, numpy [R, T, K, 2] each, slot k of
    frame t belonging to the object in slot k at frame t-1 (Generation.prior_where_loc's layout)."""

    mean: np.ndarray  # the decoded prior loc (no sampling)
    std: np.ndarray  # per-axis std, `centre_std_px`
    sample: np.ndarray  # one draw from the prior, decoded


def prior_centres(loc: Tensor, scale: Tensor, config: Any, hw: tuple[int, int],
                  generator: torch.Generator | None) -> PriorCentres:
    """loc, scale [R, T, K, 4] raw -> PriorCentres; the sample's noise comes from `generator`."""
    noise = torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
    as_np = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    return PriorCentres(as_np(where_centres_px(loc, config, hw)), as_np(centre_std_px(loc, scale, config, hw)),
                        as_np(where_centres_px(loc + scale * noise, config, hw)))


# ----------------------------------------------------------------------------- tracked balls of one frame
@dataclass
class Tracked:
    """The tracked balls of one frame t over R rows, one entry per (row, ball): an object present at
    t-1 within the radius of a ball visible at t-1 and t (Hungarian assignment), whose id is present at t."""

    row: np.ndarray  # [M] row of the Generation subset
    before: np.ndarray  # [M] the object's slot at t-1 (= its slot in the prior of frame t)
    after: np.ndarray  # [M] the same id's slot at t
    ball: np.ndarray  # [M] ball index

    def __len__(self) -> int:
        return len(self.row)


def tracked_balls(centres: np.ndarray, present: np.ndarray, ids: np.ndarray, truth: np.ndarray,
                  visible: np.ndarray, t: int) -> Tracked:
    """centres [R, T, K, 2], present [R, T, K] bool, ids [R, T, K] of the objects; truth [R, T, n, 2] and
    visible [R, T, n] of the balls, per row; t the 0-based frame (>= 1)."""
    found: list[tuple[int, int, int, int]] = []
    for r in range(centres.shape[0]):
        balls = np.flatnonzero(visible[r, t - 1] & visible[r, t])  # [n'] seen at t-1 and t
        slots = np.flatnonzero(present[r, t - 1])  # [K']
        objects, matched, _ = match_within_radius(centres[r, t - 1, slots], truth[r, t - 1, balls], MATCH_RADIUS_PX)
        for obj, ball in zip(slots[objects], balls[matched]):
            same = np.flatnonzero(present[r, t] & (ids[r, t] == ids[r, t - 1, obj]))
            if len(same):
                found.append((r, int(obj), int(same[0]), int(ball)))
    cols = np.array(found, dtype=np.int64).reshape(-1, 4)
    return Tracked(cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3])


def crop_regions(before: np.ndarray, after: np.ndarray, crop: float,
                 margin: float = INTERIOR_MARGIN_PX) -> dict[str, np.ndarray]:
    """True centres [M, 2] at t-1 and t -> masks [M] of REGIONS: interior (at least `margin` px inside the
    crop at both frames), outside (outside [0, crop]^2 at either frame), edge (the rest)."""
    both = np.stack([before, after], 1)  # [M, 2, 2]
    interior = ((both >= margin) & (both <= crop - margin)).all((1, 2))
    outside = ((both < 0) | (both > crop)).any((1, 2))
    return {"interior": interior, "edge": ~interior & ~outside, "outside": outside}


def velocity_rule(centres: np.ndarray, present: np.ndarray, ids: np.ndarray, tracked: Tracked, t: int) -> np.ndarray:
    """2 c_{t-1} - c_{t-2} on the objects' own centres [M, 2] (the prior's `velocity` rule, in pixels).

    An object with no present same-id object at t-2 (discovered at t-1) has zero velocity, c_{t-2} = c_{t-1},
    as in the model (a new object's where_before is its where)."""
    last = centres[tracked.row, t - 1, tracked.before]  # [M, 2]
    if t < 2:
        return last
    id_ = ids[tracked.row, t - 1, tracked.before]  # [M]
    same = present[tracked.row, t - 2] & (ids[tracked.row, t - 2] == id_[:, None])  # [M, K]
    earlier = centres[tracked.row, t - 2, same.argmax(1)]  # [M, 2]
    earlier = np.where(same.any(1)[:, None], earlier, last)
    return 2.0 * last - earlier


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a - b) ** 2).sum(-1))


def gaussian_log_density(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """log N(x; mean, diag(std^2)) of 2-D points [M, 2] -> [M] nats (px^-2 density)."""
    z = (x - mean) / std
    return (-0.5 * z * z - np.log(std) - 0.5 * math.log(2.0 * math.pi)).sum(-1)


# ----------------------------------------------------------------------------- sums by group
@dataclass
class GroupedMeans:
    """Sums of per-ball values in `all` and in each group; `result` turns them into means and row counts.
    The quantities named in `medians` are also kept whole, for a median (a few thousand values a split)."""

    groups: tuple[str, ...]
    medians: tuple[str, ...] = ()
    sums: dict[str, dict[str, float]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    kept: dict[str, dict[str, list[np.ndarray]]] = field(default_factory=dict)

    def add(self, masks: dict[str, np.ndarray], values: dict[str, np.ndarray]) -> None:
        """masks: group -> [M] bool; values: quantity -> [M]."""
        n = len(next(iter(values.values()))) if values else 0
        for group, mask in {"all": np.ones(n, bool), **masks}.items():
            self.rows[group] = self.rows.get(group, 0) + int(mask.sum())
            for name, value in values.items():
                per = self.sums.setdefault(name, {})
                per[group] = per.get(group, 0.0) + float(value[mask].sum())
                if name in self.medians:
                    self.kept.setdefault(name, {}).setdefault(group, []).append(value[mask])

    def result(self, names: tuple[str, ...]) -> dict[str, Any]:
        """{"rows": {group: count}, name: {group: mean or None}} over `all` and the groups."""
        groups = ("all", *self.groups)
        rows = {g: int(self.rows.get(g, 0)) for g in groups}
        out: dict[str, Any] = {"rows": rows}
        for name in names:
            sums = self.sums.get(name, {})
            out[name] = {g: (sums.get(g, 0.0) / rows[g] if rows[g] else None) for g in groups}
            if name in self.medians:
                kept = self.kept.get(name, {})
                out[f"{name}_median"] = {g: (float(np.median(np.concatenate(kept[g]))) if rows[g] else None)
                                         for g in groups}
        return out


# ----------------------------------------------------------------------------- the two scorers
@dataclass
class FrameRows:
    """What both scorers read from R rows of a Generation and the true states of their sequences."""

    centres: np.ndarray  # [R, T, K, 2] box centres of the objects
    present: np.ndarray  # [R, T, K] bool
    ids: np.ndarray  # [R, T, K]
    prior: PriorCentres  # [R, T, K, 2] each
    truth: np.ndarray  # [R, T, n, 2] true centres of the row's sequence, crop px
    visible: np.ndarray  # [R, T, n] bool, ball has a pixel in the crop
    sequence: np.ndarray  # [R] sequence number of each row in the BallStates


DECOMPOSITION = ("sample_error_px", "mean_error_px", "where_std_px_x", "where_std_px_y", "posterior_error_px",
                 "velocity_rule_error_px", "const_velocity_error_px")


class DecompositionScorer:
    """`prior_decomposition`: the tracked balls of the sampled frame T, every sample's row (docs/metrics.md)."""

    def __init__(self, states: BallStates) -> None:
        self.states = states
        self.sums = GroupedMeans(REGIONS)
        self.frame: int | None = None

    def add(self, rows: FrameRows) -> None:
        t = rows.centres.shape[1] - 1  # frame T
        self.frame = t + 1
        tracked = tracked_balls(rows.centres, rows.present, rows.ids, rows.truth, rows.visible, t)
        r, ball = tracked.row, tracked.ball
        truth_before, truth = rows.truth[r, t - 1, ball], rows.truth[r, t, ball]  # [M, 2]
        oracle = self.states.centres_px(const_velocity_positions(self.states, rows.sequence[r], t + 1))  # [M, n, 2]
        std = rows.prior.std[r, t, tracked.before]  # [M, 2]
        self.sums.add(crop_regions(truth_before, truth, self.states.crop), {
            "sample_error_px": _distance(rows.centres[r, t, tracked.after], truth),
            "mean_error_px": _distance(rows.prior.mean[r, t, tracked.before], truth),
            "where_std_px_x": std[:, 0], "where_std_px_y": std[:, 1],
            "posterior_error_px": _distance(rows.centres[r, t - 1, tracked.before], truth_before),
            "velocity_rule_error_px": _distance(velocity_rule(rows.centres, rows.present, rows.ids, tracked, t), truth),
            "const_velocity_error_px": _distance(oracle[np.arange(len(r)), ball], truth),
        })

    def result(self) -> dict[str, Any]:
        return {"frame": self.frame, "interior_margin_px": INTERIOR_MARGIN_PX, **self.sums.result(DECOMPOSITION)}


ONE_STEP = ("mean_error_px", "sample_error_px", "log_density", "const_velocity_error_px")


class OneStepScorer:
    """`one_step`: the prior's prediction of every frame t = 3..T from the posterior before it, one row per
    sequence, on the tracked balls, colliding and free (docs/metrics.md)."""

    def __init__(self, states: BallStates) -> None:
        self.states = states
        self.sums = GroupedMeans(CONTACT, medians=("log_density",))
        self.by_frame: dict[int, GroupedMeans] = {}
        self.sequences = 0
        self.frames: int | None = None

    def add(self, rows: FrameRows) -> None:
        """`rows`: one row per sequence (frames up to T-1 inferred, frame T from the prior)."""
        self.sequences += len(rows.sequence)
        self.frames = rows.centres.shape[1]
        for t in range(FIRST_ONE_STEP_FRAME - 1, self.frames):
            tracked = tracked_balls(rows.centres, rows.present, rows.ids, rows.truth, rows.visible, t)
            r, ball, slot = tracked.row, tracked.ball, tracked.before
            truth = rows.truth[r, t, ball]  # [M, 2]
            colliding = self.states.colliding(rows.sequence[r], t + 1)[np.arange(len(r)), ball]  # [M]
            oracle = self.states.centres_px(const_velocity_positions(self.states, rows.sequence[r], t + 1))
            mean, std = rows.prior.mean[r, t, slot], rows.prior.std[r, t, slot]
            values = {
                "mean_error_px": _distance(mean, truth),
                "sample_error_px": _distance(rows.prior.sample[r, t, slot], truth),
                "log_density": gaussian_log_density(truth, mean, std),
                "const_velocity_error_px": _distance(oracle[np.arange(len(r)), ball], truth),
            }
            masks = {"colliding": colliding, "free": ~colliding}
            self.sums.add(masks, values)
            self.by_frame.setdefault(t + 1, GroupedMeans(CONTACT)).add(masks, {"mean_error_px": values["mean_error_px"]})

    def result(self) -> dict[str, Any]:
        by_frame = []
        for frame, sums in sorted(self.by_frame.items()):
            part = sums.result(("mean_error_px",))
            by_frame.append({"frame": frame, "rows": part["rows"]["all"], "colliding_rows": part["rows"]["colliding"],
                             "mean_error_px": part["mean_error_px"]["all"]})
        frames = [FIRST_ONE_STEP_FRAME, self.frames] if self.frames is not None else None
        return {"frames": frames, "sequences": self.sequences,
                **self.sums.result(ONE_STEP), "by_frame": by_frame}


class PriorErrorScorer:
    """Both blocks for one split: takes each batch's Generation (all S sample rows) and, for sequences
    beyond the sampled-frame score, the one-sample Generations of the one-step pass.

    The one-step score takes one row per sequence: sample 0 of the main pass, or the one-step pass's row.
    Models whose Generation has no prior record (`prior_where_loc` None) leave both blocks null."""

    def __init__(self, states: BallStates, config: Any, generator: torch.Generator | None) -> None:
        self.states, self.config, self.generator = states, config, generator
        self.decomposition = DecompositionScorer(states)
        self.one_step = OneStepScorer(states)
        self.recorded = True

    def add(self, gen: Any, groups: Tensor, index: np.ndarray, samples: int, one_step_below: int,
            decompose: bool = True) -> None:
        """gen: a Generation of B*S rows (row b*S + s: sample s of sequence index[b]); groups [B, T, 1, H, W];
        the one-step score takes sample 0 of the sequences numbered below `one_step_below`."""
        if getattr(gen, "prior_where_loc", None) is None:
            self.recorded = False
            return
        sequence = np.repeat(index, samples)  # [R]
        visible = np.repeat(visible_balls(groups[:, :, 0].cpu().numpy(), self.states.active.shape[1]), samples, 0)
        loc, scale = gen.prior_where_loc, gen.prior_where_scale  # [R, T, K, 4]
        rows = FrameRows(
            centres=box_centres(gen.boxes.detach().double().cpu().numpy()), present=gen.pres.cpu().numpy() > 0.5,
            ids=gen.ids.cpu().numpy(),
            prior=prior_centres(loc, scale, self.config, tuple(gen.frames.shape[-2:]), self.generator),
            truth=self.states.centres_px(self.states.positions[sequence]), visible=visible, sequence=sequence)
        if decompose:
            self.decomposition.add(rows)
        first = np.flatnonzero((np.arange(len(sequence)) % samples == 0) & (sequence < one_step_below))
        if len(first):
            self.one_step.add(_subset(rows, first))

    def result(self) -> dict[str, Any]:
        """{"prior_decomposition": ..., "one_step": ...}, each None without prior records."""
        if not self.recorded:
            return {"prior_decomposition": None, "one_step": None}
        return {"prior_decomposition": self.decomposition.result(), "one_step": self.one_step.result()}


def _subset(rows: FrameRows, keep: np.ndarray) -> FrameRows:
    prior = PriorCentres(rows.prior.mean[keep], rows.prior.std[keep], rows.prior.sample[keep])
    return FrameRows(rows.centres[keep], rows.present[keep], rows.ids[keep], prior, rows.truth[keep],
                     rows.visible[keep], rows.sequence[keep])
