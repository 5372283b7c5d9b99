"""Sequential baselines: a GRU or LSTM run over the objects in slot order (R-NEM's RNN baselines).

This is the "sequential relational mechanism" R-SQAIR argues against: object k only sees objects
1..k-1 through the recurrent state, so the result depends on the slot order (not permutation-
equivariant). Absent objects are skipped: the state is carried over them unchanged and their gamma
rows are zeros. gamma_k = [z_k; h_k].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rsqair_bench.models.relation import Relation, State
from rsqair_bench.registry import register_relation


class _ObjectRNN(Relation):
    cell_type: type[nn.Module]

    def __init__(self, obj_dim: int, hidden: int = 40) -> None:
        super().__init__(obj_dim)
        self.hidden = hidden
        self.out_dim = obj_dim + hidden
        self.cell = self.cell_type(obj_dim, hidden)

    def forward(self, z: Tensor, present: Tensor, state: State) -> tuple[Tensor, State]:
        b, k, _ = z.shape
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        h = z.new_zeros(b, self.hidden)  # [B, H]
        c = z.new_zeros(b, self.hidden)  # [B, H]; LSTM cell state
        outputs = []
        for i in range(k):  # slot order; K <= max_objects, a few steps
            alive = present[:, i].unsqueeze(-1)  # [B, 1]
            x = torch.where(alive, z[:, i], zero)  # [B, D]: absent inputs never enter the cell
            if isinstance(self.cell, nn.LSTMCell):
                h_new, c_new = self.cell(x, (h, c))
                c = torch.where(alive, c_new, c)
            else:
                h_new = self.cell(x, h)
            h = torch.where(alive, h_new, h)  # [B, H]: skip absent objects
            outputs.append(torch.where(alive, h, zero))
        hs = torch.stack(outputs, dim=1)  # [B, K, H]
        gamma = torch.cat([z, hs], dim=-1)  # [B, K, D + H]
        return torch.where(present.unsqueeze(-1), gamma, zero), state


@register_relation("gru", paper_name="R-SQAIR(GRU)")
class ObjectGRU(_ObjectRNN):
    """GRU over objects in slot order."""

    cell_type = nn.GRUCell


@register_relation("lstm", paper_name="R-SQAIR(LSTM)")
class ObjectLSTM(_ObjectRNN):
    """LSTM over objects in slot order."""

    cell_type = nn.LSTMCell
