"""Per-split accumulators for the dynamics measures: reference predictors and object-ball matching.

Why a separate module: `evaluate.evaluate_checkpoint` loops over batches of one split; these two
scorers take each batch (and the model's Generation) and turn the sums into the `references` and
`matching` blocks of metrics.json (definitions: docs/metrics.md). Frame indices below are 0-based:
frame T of the docs is index T-1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from rsqair_bench.data.ball_states import BallStates
from rsqair_bench.evaluation.matching import (
    CONTACT_GROUPS,
    ERROR_CAP_PX,
    MATCH_RADIUS_PX,
    ErrorTally,
    InferredTally,
    TrackedTally,
    box_centres,
    visible_balls,
)
from rsqair_bench.evaluation.references import REFERENCES, reference_centres, reference_frames
from rsqair_bench.evaluation.scores import LogDensity, data_log_likelihood, relational_log_likelihood

DYNAMIC_REFERENCES = ("copy_last", "const_velocity")  # the references that predict object centres


def _visible(groups: Tensor, n_balls: int) -> np.ndarray:
    """groups [B, T, 1, H, W] -> [B, T, n] bool: ball k has a pixel in the crop."""
    return visible_balls(groups[:, :, 0].cpu().numpy(), n_balls)


class ReferenceScorer:
    """Data LL and relational LL of every reference predictor, plus the dynamic ones' centre error."""

    def __init__(self, states: BallStates | None, log_density: LogDensity) -> None:
        """`log_density`: the evaluated model's per-pixel likelihood, so references and model share one formula."""
        self.states = states
        self.log_density = log_density
        self.sums = {name: np.zeros(2) for name in REFERENCES}  # [data LL, relational LL] summed over sequences
        self.errors = {name: ErrorTally() for name in DYNAMIC_REFERENCES}
        self.sequences = 0

    def add(self, x: Tensor, groups: Tensor, collisions: Tensor, index: np.ndarray) -> None:
        """x, groups, collisions: [B, T, 1, H, W] of the batch; index [B]: its sequence numbers."""
        target = x[:, -1]  # [B, 1, H, W]
        for name, pred in reference_frames(x, self.states, index).items():
            if pred is None:
                continue
            rel, _ = relational_log_likelihood(target, pred, groups[:, -1], collisions[:, -1], self.log_density)
            self.sums[name] += [float(data_log_likelihood(target, pred, self.log_density).double().sum()),
                                float(rel.double().sum())]
        self.sequences += x.shape[0]
        if self.states is not None:
            self._add_errors(groups, index, x.shape[1])

    def _add_errors(self, groups: Tensor, index: np.ndarray, frames: int) -> None:
        states = self.states
        assert states is not None
        visible = _visible(groups, states.active.shape[1])  # [B, T, n]
        truth = states.centres_px(states.positions[index, frames - 1])  # [B, n, 2] balls at frame T
        predicted = reference_centres(states, index, frames)  # name -> [B, n, 2]
        present = {"copy_last": visible[:, frames - 2], "const_velocity": states.active[index]}  # [B, n] each
        colliding = states.colliding(index, frames)  # [B, n]
        for b in range(len(index)):
            seen = visible[b, frames - 1]
            for name in DYNAMIC_REFERENCES:
                self.errors[name].add(predicted[name][b][present[name][b]], truth[b][seen], colliding[b][seen])

    def result(self) -> dict[str, Any]:
        """The `references` block: name -> {data_ll, relational_ll[, centre_error_px]}, or None if unavailable."""
        out: dict[str, Any] = {}
        for name in REFERENCES:
            if name == "const_velocity" and self.states is None:
                out[name] = None
                continue
            data_ll, rel_ll = self.sums[name] / max(self.sequences, 1)
            out[name] = {"data_ll": float(data_ll), "relational_ll": float(rel_ll)}
            if name in self.errors:
                known = self.states is not None
                out[name]["centre_error_px"] = self.errors[name].mean() if known else None
                for group in CONTACT_GROUPS:
                    out[name][f"centre_error_px_{group}"] = self.errors[name].group_mean(group) if known else None
        return out


class MatchingScorer:
    """Object-ball matching on the inferred frames and the prior's centre error on the sampled frame."""

    def __init__(self, states: BallStates, samples: int) -> None:
        self.states = states
        self.samples = samples
        self.inferred = InferredTally()
        self.by_frame: list[InferredTally] = []  # one per inferred frame: where coverage is lost
        self.sampled = InferredTally()  # coverage/duplicates of the prior's objects at frame T
        self.prior = [ErrorTally() for _ in range(samples)]
        self.tracked = TrackedTally()

    def add(self, boxes: Tensor, pres: Tensor, groups: Tensor, index: np.ndarray, ids: Tensor | None = None) -> None:
        """boxes [B*S, T, K, 4] px, pres [B*S, T, K] and ids [B*S, T, K] of a Generation (row b*S + s =
        sample s of sequence b); groups [B, T, 1, H, W]; index [B] sequence numbers."""
        states = self.states
        centres = box_centres(boxes.detach().cpu().numpy())  # [B*S, T, K, 2]
        present = pres.detach().cpu().numpy() > 0.5  # [B*S, T, K]
        if ids is not None:
            self._add_tracked(centres, present, ids.detach().cpu().numpy(), groups, index)
        visible = _visible(groups, states.active.shape[1])  # [B, T, n]
        truth = states.centres_px(states.positions[index])  # [B, T, n, 2]
        last = centres.shape[1] - 1
        colliding = states.colliding(index, last + 1)  # [B, n]
        self.by_frame += [InferredTally() for _ in range(last - len(self.by_frame))]
        for row in range(centres.shape[0]):
            b, s = divmod(row, self.samples)
            for t in range(last):
                objects, balls = centres[row, t][present[row, t]], truth[b, t][visible[b, t]]
                self.inferred.add(objects, balls)
                self.by_frame[t].add(objects, balls)
            seen = visible[b, last]
            objects, balls = centres[row, last][present[row, last]], truth[b, last][seen]
            self.sampled.add(objects, balls)
            self.prior[s].add(objects, balls, colliding[b][seen])

    def _add_tracked(self, centres: np.ndarray, present: np.ndarray, ids: np.ndarray, groups: Tensor,
                     index: np.ndarray) -> None:
        states = self.states
        visible = _visible(groups, states.active.shape[1])  # [B, T, n]
        truth = states.centres_px(states.positions[index])  # [B, T, n, 2]
        last = centres.shape[1] - 1
        colliding = states.colliding(index, last + 1)  # [B, n]
        for row in range(centres.shape[0]):
            b = row // self.samples
            both = visible[b, last - 1] & visible[b, last]  # [n] balls seen at T-1 and T
            before, after = present[row, last - 1], present[row, last]
            self.tracked.add(centres[row, last - 1][before], ids[row, last - 1][before],
                             centres[row, last][after], ids[row, last][after],
                             truth[b, last - 1][both], truth[b, last][both], colliding[b][both])

    def result(self) -> dict[str, Any]:
        """The `matching` block of metrics.json."""
        sampled = self.sampled.summary()
        by_contact = {f"centre_error_px_{group}": _over_samples([tally.group_mean(group) for tally in self.prior])
                      for group in CONTACT_GROUPS}
        counts = {f"{group}_balls": self.prior[0].group_count(group) for group in CONTACT_GROUPS}
        return {
            "radius_px": MATCH_RADIUS_PX,
            "error_cap_px": ERROR_CAP_PX,
            "inferred": self.inferred.summary() | {"by_frame": [
                {"frame": t + 1} | {key: summary[key] for key in ("coverage", "duplicates", "strays")}
                for t, summary in enumerate(frame.summary() for frame in self.by_frame)]},
            "sampled": {
                "centre_error_px": _over_samples([tally.mean() for tally in self.prior]),
                **by_contact,
                **counts,  # balls per contact group at frame T (each sample scores the same balls)
                "coverage": sampled["coverage"],
                "duplicates": sampled["duplicates"],
                "tracked": self.tracked.summary(),
            },
        }


def _over_samples(per_sample: list[float | None]) -> dict[str, Any]:
    """{mean, std, per_sample} over the sampled frames that had a value (None: no ball to score)."""
    known = [v for v in per_sample if v is not None]
    return {
        "mean": float(np.mean(known)) if known else None,
        "std": float(np.std(known)) if known else None,
        "per_sample": per_sample,
    }
