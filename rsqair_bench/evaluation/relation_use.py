"""How an evaluation sees the relation itself: its output size by neighbours, and the knock-out's scores.

Why a module of its own: `evaluate.evaluate_checkpoint` scores frames; these two answer the study's
questions about Gamma (is it used? does it leave its training range with more objects?) from the same
evaluation pass (definitions: docs/metrics.md, "Relation knock-out" and "Relation output by neighbours").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def knockout_summary(tally: Any, n: int) -> dict[str, Any]:
    """The `knockout` block: the knocked-out model's sampled-frame scores (the drop is the report's to take)."""
    scores = tally.likelihoods(n)
    out: dict[str, Any] = {"data_ll": scores["data_ll"], "relational_ll": scores["relational_ll"]}
    if tally.matching is not None:
        sampled = tally.matching.result()["sampled"]
        out["centre_error_px"] = sampled["centre_error_px"]
        out["centre_error_px_colliding"] = sampled["centre_error_px_colliding"]
        out["tracked_prior_error_px"] = sampled["tracked"]["prior_error_px"]
    return out


class RelationProbe:
    """Size of Gamma's output beyond z_{t-1} (gamma[..., D:]) per present object, by its number of
    present neighbours, over every relation call of an evaluation.

    Why: an interaction network sums effects over the other objects, so its output can grow with the
    number of neighbours and leave the range the prior saw in training (3 neighbours with 4 balls).
    `result()` is None for a relation without parameters (plain SQAIR: gamma is z itself)."""

    def __init__(self, model: torch.nn.Module) -> None:
        relation = getattr(model, "relation", None)
        self.relation = relation
        self.active = relation is not None and any(True for _ in relation.parameters())
        self.sums: dict[int, list[float]] = {}  # neighbours -> [norm sum, objects]
        self._handle: Any = None

    def _hook(self, module: torch.nn.Module, inputs: tuple[Any, ...], output: tuple[Tensor, Any]) -> None:
        z, present = inputs[0], inputs[1]  # [B, K, D], [B, K]
        context = output[0][..., z.shape[-1]:].detach()  # [B, K, out - D]
        norms = context.double().norm(dim=-1)  # [B, K]
        neighbours = (present.sum(1, keepdim=True) - 1).expand_as(present)  # [B, K]
        for count in torch.unique(neighbours[present]).tolist():
            mask = present & (neighbours == count)
            slot = self.sums.setdefault(int(count), [0.0, 0])
            slot[0] += float(norms[mask].sum())
            slot[1] += int(mask.sum())

    def __enter__(self) -> RelationProbe:
        if self.active:
            self._handle = self.relation.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def result(self) -> dict[str, Any] | None:
        if not self.active:
            return None
        return {"by_neighbours": {str(k): {"mean_norm": total / count, "objects": count}
                                  for k, (total, count) in sorted(self.sums.items()) if count}}
