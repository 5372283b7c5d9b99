"""Relation knock-out: Gamma as if every object were alone in the scene.

Why: a relational model can score well without using its relation (the prior may lean on z_{t-1}
alone, which every gamma carries). Evaluating the same weights a second time with Gamma cut off from
the other objects, and measuring the drop, tells whether the relation is used at all.

What "cut off" means here: object k's gamma is what the trained relation gives for a scene in which k
is the only present object, with k's own relation state carried from step to step. Not zeros: for an
interaction network the two agree exactly (a sum over no neighbours is 0), but the memory of an RMC
or the hidden state of an RNN over objects is never zero for a present object, so zeros would put the
prior off its training distribution and the drop would mix "no relation" with "an input never seen".

How: the K scenes run as one batch of B*K rows ([B*K, K, D]) in which row (b, k) marks only slot k
present. The relation contract (models/relation.py: absent objects send and receive nothing, and
their state rows stay unchanged) makes row (b, k)'s output and new state for slot k depend on slot
k alone, so taking the diagonal gives a [B, K, ...] gamma and state in the usual layout, and the model
reorders and merges that state exactly as it does the real one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rsqair_bench.models.relation import Relation, State


def _map_state(fn: Any, state: State) -> State:
    """Apply `fn` to every tensor of a state (a tensor, a tuple of tensors, or None)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(_map_state(fn, s) for s in state)
    return fn(state)


def _scenes(t: Tensor, k: int) -> Tensor:
    """[B, K, ...] -> [B*K, K, ...]: scene (b, j) starts from sequence b's rows."""
    return t.repeat_interleave(k, dim=0)


def _diagonal(t: Tensor, k: int) -> Tensor:
    """[B*K, K, ...] -> [B, K, ...]: slot k of scene (b, k)."""
    b = t.shape[0] // k
    rows = t.reshape(b, k, k, *t.shape[2:])  # [B, K(scene), K(slot), ...]
    index = torch.arange(k, device=t.device)
    return rows[:, index, index]  # [B, K, ...]


class AloneInScene(Relation):
    """Wraps a trained relation (same parameters) so that each object's gamma sees no other object."""

    def __init__(self, inner: Relation) -> None:
        super().__init__(inner.obj_dim)
        self.inner = inner
        self.out_dim = inner.out_dim

    def initial_state(self, batch: int, num_objects: int, device: torch.device) -> State:
        return self.inner.initial_state(batch, num_objects, device)

    def forward(self, z: Tensor, present: Tensor, state: State) -> tuple[Tensor, State]:
        b, k, _ = z.shape  # z [B, K, D], present [B, K]
        alone = torch.eye(k, dtype=torch.bool, device=z.device).repeat(b, 1) & _scenes(present, k)  # [B*K, K]
        gamma, new_state = self.inner(_scenes(z, k), alone, _map_state(lambda s: _scenes(s, k), state))
        return _diagonal(gamma, k), _map_state(lambda s: _diagonal(s, k), new_state)  # [B, K, out], state [B, K, ...]


def knocked_out(relation: Relation) -> Relation:
    """The knock-out of `relation` (see the module docstring)."""
    return AloneInScene(relation)
