"""Identity relation: gamma = z_{t-1}. With it, R-SQAIR is exactly SQAIR (paper, after eq. 3)."""

from __future__ import annotations

import torch
from torch import Tensor

from rsqair_bench.models.relation import Relation, State
from rsqair_bench.registry import register_relation


@register_relation("identity", paper_name="SQAIR")
class Identity(Relation):
    """No relational module: each object's context is its own previous latent (zeros when absent)."""

    def __init__(self, obj_dim: int) -> None:
        super().__init__(obj_dim)
        self.out_dim = obj_dim

    def forward(self, z: Tensor, present: Tensor, state: State) -> tuple[Tensor, State]:
        # z: [B, K, D], present: [B, K] -> gamma [B, K, D]
        return torch.where(present.unsqueeze(-1), z, torch.zeros((), dtype=z.dtype, device=z.device)), state
