"""Masked multi-head attention shared by the attention-based relations (baselines/rmc.py, baselines/transformer.py).

It lives in the package, not in a baseline, so that every baseline file imports only from `rsqair_bench`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MaskedMultiHeadAttention(nn.Module):
    """Sonnet-style multi-head dot-product attention with a key mask; no output projection.

    QKV come from one Linear followed by LayerNorm; output size = heads * head_size.
    """

    def __init__(self, dim: int, heads: int, head_size: int, key_size: int | None = None) -> None:
        super().__init__()
        self.heads, self.head_size = heads, head_size
        self.key_size = key_size or head_size
        qkv = heads * (2 * self.key_size + head_size)
        self.qkv = nn.Linear(dim, qkv)
        self.qkv_norm = nn.LayerNorm(qkv)

    def forward(self, queries: Tensor, keys: Tensor, key_mask: Tensor) -> Tensor:
        """queries [B, Q, dim] (rows that attend), keys [B, N, dim], key_mask [B, N] bool -> [B, Q, heads*head_size].

        Queries use their own Q projection, keys their K/V projections (same weights: self-attention when
        queries are a subset of keys). A row with no unmasked key gets an arbitrary finite output.
        """
        b, q_len, _ = queries.shape
        n = keys.shape[1]
        ks, vs = self.key_size, self.head_size

        def split(x: Tensor, length: int) -> tuple[Tensor, Tensor, Tensor]:
            h = self.qkv_norm(self.qkv(x)).view(b, length, self.heads, 2 * ks + vs).transpose(1, 2)  # [B, H, L, 2ks+vs]
            return h.split([ks, ks, vs], dim=-1)

        if queries is keys:  # self-attention: one projection
            q, k, v = split(keys, n)  # [B, H, N, ks], [B, H, N, ks], [B, H, N, vs]
        else:
            q, _, _ = split(queries, q_len)  # [B, H, Q, ks]
            _, k, v = split(keys, n)  # [B, H, N, ks], [B, H, N, vs]
        scores = torch.matmul(q * ks**-0.5, k.transpose(-1, -2))  # [B, H, Q, N]
        # finite fill (not -inf): a row with every key masked gives uniform weights instead of NaN gradients
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)  # [B, H, Q, N]; masked keys get exactly 0
        out = torch.matmul(weights, v)  # [B, H, Q, vs]
        return out.transpose(1, 2).reshape(b, q_len, self.heads * vs)  # [B, Q, H*vs]
