"""Interaction network of R-NEM (van Steenkiste et al. 2018), as R-SQAIR uses it (paper eq. 5).

    z^_k = f(z_k),  xi_ki = g([z^_k; z^_i]),  E_k = sum_{i != k, i present} g_att(xi_ki) * g_eff(xi_ki),
    gamma_k = [z_k; E_k].

Layer structure follows R-NEM's `r_nem` cell (network.py): encoder f, core g and context (effect)
g_eff are one Linear + LayerNorm + ReLU each; attention g_att is Linear + LayerNorm + tanh, then
Linear -> 1 + sigmoid. R-NEM's widths (250, attention 100) are scaled to the paper's "embedding
dimensionality 5": every width is `embed_dim`, the attention hidden width is `att_hidden`
(default `embed_dim`). Parameter formula: docs/params.md.

Option `radius` (ours, not the paper's): only senders whose box centre lies within `radius` of the
receiver's send it a message (`in_local` is the IN with a radius of 0.8 by default). The distance is
measured on the where shift that z carries (`models.relation.where_shift`), in its own units: in the
state-space track that is the box centre in normalised crop coordinates, 1 unit = 25 px of the 50 px
crop, so 0.8 is 20 px; in the pixel model z carries SQAIR's unconstrained where, whose shift equals the
normalised centre near the middle of the crop and grows faster than it towards the edges
(docs/states.md, "Relations").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rsqair_bench.models.relation import Relation, State, where_shift
from rsqair_bench.registry import register_relation


def _layer(n_in: int, n_out: int, act: nn.Module, layer_norm: bool) -> nn.Sequential:
    """R-NEM's fc layer: Linear, optional LayerNorm, activation."""
    return nn.Sequential(nn.Linear(n_in, n_out), nn.LayerNorm(n_out) if layer_norm else nn.Identity(), act)


@register_relation("in", paper_name="R-SQAIR(IN)")
class InteractionNetwork(Relation):
    """Pairwise effects on each object from every other present object, weighted by learned attention."""

    attention: bool = True

    aggregate: str = "sum"  # how effects on k combine over its neighbours: R-NEM's (and the paper's) sum

    def __init__(self, obj_dim: int, embed_dim: int = 5, att_hidden: int | None = None, layer_norm: bool = True,
                 radius: float | None = None) -> None:
        super().__init__(obj_dim)
        if radius is not None and not radius > 0:
            raise ValueError(f"radius: expected a positive distance in where-shift units or null, found {radius!r}")
        self.radius = radius  # None: every present object sends (R-NEM's and the paper's IN)
        self.embed_dim = embed_dim
        self.out_dim = obj_dim + embed_dim
        self.f = _layer(obj_dim, embed_dim, nn.ReLU(), layer_norm)  # node embedding z^_k
        self.g = _layer(2 * embed_dim, embed_dim, nn.ReLU(), layer_norm)  # pair (node-to-edge) xi_ki
        self.g_eff = _layer(embed_dim, embed_dim, nn.ReLU(), layer_norm)  # effect of i on k
        if self.attention:
            hidden = att_hidden if att_hidden is not None else embed_dim
            self.g_att = nn.Sequential(_layer(embed_dim, hidden, nn.Tanh(), layer_norm), nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, z: Tensor, present: Tensor, state: State) -> tuple[Tensor, State]:
        b, k, _ = z.shape
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        node = self.f(z)  # [B, K, E]
        focus = node.unsqueeze(2).expand(b, k, k, self.embed_dim)  # [B, K(k), K(i), E]: z^_k
        context = node.unsqueeze(1).expand(b, k, k, self.embed_dim)  # [B, K(k), K(i), E]: z^_i
        xi = self.g(torch.cat([focus, context], dim=-1))  # [B, K, K, E]
        effect = self.g_eff(xi)  # [B, K, K, E]
        if self.attention:
            effect = self.g_att(xi) * effect  # [B, K, K, 1] * [B, K, K, E]
        others = ~torch.eye(k, dtype=torch.bool, device=z.device)  # [K, K]: i != k
        senders = present.unsqueeze(1) & others  # [B, K(k), K(i)]: i present and i != k
        if self.radius is not None:  # a Python constant: no branch on tensor values (torch.compile)
            centre = where_shift(z)  # [B, K, 2]
            gap = (centre.unsqueeze(2) - centre.unsqueeze(1)).square().sum(-1)  # [B, K(k), K(i)] squared distance
            senders = senders & (gap <= self.radius**2)  # NaN (an absent slot's junk) compares False
        # where (not multiply): an absent object's values, even inf/nan, cannot reach a present one
        e = torch.where(senders.unsqueeze(-1), effect, zero).sum(dim=2)  # [B, K, E]
        if self.aggregate == "mean":  # over the present senders; an object alone keeps e = 0
            e = e / senders.sum(dim=2, keepdim=True).clamp(min=1).to(e.dtype)
        gamma = torch.cat([z, e], dim=-1)  # [B, K, D + E]
        return torch.where(present.unsqueeze(-1), gamma, zero), state


@register_relation("in_noatt", paper_name="R-SQAIR(IN, no att.)")
class InteractionNetworkNoAttention(InteractionNetwork):
    """R-NEM's ablation: the plain sum of effects, without attention coefficients."""

    attention = False


@register_relation("in_mean", paper_name="R-SQAIR(IN, mean)")
class InteractionNetworkMean(InteractionNetwork):
    """Ours, a remedy to test, not the paper's module: the mean of the effects over the present
    neighbours instead of their sum, so the size of E_k does not grow with the number of objects
    (trained with 4 balls, an object has at most 3 neighbours; with 8 balls it has up to 7)."""

    aggregate = "mean"


@register_relation("in_local", paper_name="R-SQAIR(IN, local)")
class InteractionNetworkLocal(InteractionNetwork):
    """Ours, a remedy to test: the IN with messages only from senders within `radius` of the receiver
    (default 0.8 where-shift units, 20 px in the state-space track), so the number of senders stays
    near what training saw when more balls share the frame. `radius` is the IN's option with another
    default; `in` with `relation_options: {in: {radius: ...}}` is the same module under the IN's name."""

    def __init__(self, obj_dim: int, embed_dim: int = 5, att_hidden: int | None = None, layer_norm: bool = True,
                 radius: float | None = 0.8) -> None:
        super().__init__(obj_dim, embed_dim, att_hidden, layer_norm, radius)
