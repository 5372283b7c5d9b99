"""Ours, beyond the paper: one Transformer block of self-attention over the present objects.

Like the RMC's attention step but stateless: no memory, no gates; permutation-equivariant. Post-norm
block as in Vaswani et al.: x = LN(x + MHA(x)); x = LN(x + MLP(x)) on projected latents, with a key
mask so absent objects are neither attended to nor produce output. gamma_k = [z_k; x_k].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rsqair_bench.models.attention import MaskedMultiHeadAttention
from rsqair_bench.models.relation import Relation, State
from rsqair_bench.registry import register_relation


@register_relation("transformer", paper_name="R-SQAIR(Transformer)")
class ObjectTransformer(Relation):
    """Self-attention over objects (4 heads x 10 by default, as the RMC), no memory across steps."""

    def __init__(self, obj_dim: int, heads: int = 4, head_size: int = 10, mlp_hidden: int | None = None) -> None:
        super().__init__(obj_dim)
        d = heads * head_size
        self.out_dim = obj_dim + d
        self.input_proj = nn.Linear(obj_dim, d)
        self.attend = MaskedMultiHeadAttention(d, heads, head_size)
        self.out_proj = nn.Linear(d, d)
        self.norm_attention = nn.LayerNorm(d)
        hidden = mlp_hidden or 2 * d
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, d))
        self.norm_mlp = nn.LayerNorm(d)

    def forward(self, z: Tensor, present: Tensor, state: State) -> tuple[Tensor, State]:
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        x = self.input_proj(z)  # [B, K, d]
        x = self.norm_attention(x + self.out_proj(self.attend(x, x, present)))  # [B, K, d]
        x = self.norm_mlp(x + self.mlp(x))  # [B, K, d]
        gamma = torch.cat([z, x], dim=-1)  # [B, K, D + d]
        return torch.where(present.unsqueeze(-1), gamma, zero), state
