"""Ours, a control and not a relation: per-object features as deep as the IN's, with no messages.

    h_k = g_eff(g(f(z_k))),  gamma_k = [z_k; h_k]

f, g and g_eff are the IN's layer shapes (Linear + LayerNorm + ReLU, width `embed_dim`;
baselines/interaction.py), but each reads only its own object. Why: every relation adds nonlinear
layers between z_{t-1} and the propagation prior, so "relation beats SQAIR" mixes two gains, the
messages and the depth. This module has the depth without the messages; a relation's gain over it is
what the messages bring (docs/states.md, "Which control").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rsqair_bench.models.relation import Relation, State
from rsqair_bench.registry import register_relation


@register_relation("mlp", paper_name="SQAIR(per-object MLP)")
class ObjectMLP(Relation):
    """Three Linear + LayerNorm + ReLU layers per object, weights shared across objects; no object sees another."""

    def __init__(self, obj_dim: int, embed_dim: int = 5, layers: int = 3, layer_norm: bool = True) -> None:
        super().__init__(obj_dim)
        if layers < 1:
            raise ValueError(f"layers: expected >= 1, found {layers}")
        self.out_dim = obj_dim + embed_dim
        widths = [obj_dim] + [embed_dim] * layers
        self.net = nn.Sequential(*(
            nn.Sequential(nn.Linear(a, b), nn.LayerNorm(b) if layer_norm else nn.Identity(), nn.ReLU())
            for a, b in zip(widths[:-1], widths[1:])
        ))

    def forward(self, z: Tensor, present: Tensor, state: State) -> tuple[Tensor, State]:
        # z [B, K, D], present [B, K] -> gamma [B, K, D + E]
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        gamma = torch.cat([z, self.net(z)], dim=-1)  # [B, K, D + E]
        return torch.where(present.unsqueeze(-1), gamma, zero), state
