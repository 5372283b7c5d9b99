"""The one extension point: a relational module Gamma inside SQAIR's propagation step.

R-SQAIR (paper eq. 3-4) feeds gamma_t = Gamma(z_{t-1}) to the propagation prior and the
propagation posterior. Plain SQAIR is Gamma = identity. A baseline subclasses `Relation`
in one file under `baselines/` and registers itself with `@register_relation`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

State = Any  # a Tensor or a tuple of Tensors, each with batch as its first dimension; None when stateless


def where_shift(z: Tensor) -> Tensor:
    """The box centre each object's latent carries: the shift pair of its where, [..., 2] (x, y).

    z = [what, where (scale_x, scale_y, shift_x, shift_y), pres] (SQAIR's `Objects.latent`, and the
    state-space track's `models.state_tracker.object_latent`), so the shift is z[..., -3:-1]. A relation
    that needs positions (the IN's `radius`) reads them here, so the layout is written down once."""
    return z[..., -3:-1]


class Relation(nn.Module):
    """Gamma: previous-step object latents -> per-object context.

    Contract (docs/design.md, "The relational interface"; how to write one: docs/adding-a-baseline.md):
    - `forward(z [B, K, D], present [B, K] bool, state)` returns `(gamma [B, K, out_dim], state)`.
    - Absent objects send and receive nothing: their gamma rows are zeros and changing their
      latents changes no present object's gamma.
    - Parameters are shared across objects, so K may differ between training and evaluation.
    - `state` is carried across time steps by the model (e.g. the RMC memory); `initial_state`
      is called once per sequence. B is batch x particles, flattened.
    """

    out_dim: int

    def __init__(self, obj_dim: int) -> None:
        super().__init__()
        self.obj_dim = obj_dim

    def initial_state(self, batch: int, num_objects: int, device: torch.device) -> State:
        """State before the first propagation step; None for stateless relations."""
        return None

    def forward(self, z: Tensor, present: Tensor, state: State) -> tuple[Tensor, State]:  # pragma: no cover
        raise NotImplementedError
