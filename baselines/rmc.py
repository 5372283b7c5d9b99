"""Relational Memory Core (Santoro et al. 2018) with one memory row per object slot (R-SQAIR, RMC).

Structure follows Sonnet's `RelationalMemory` (attention over [memory; inputs] rows, QKV Linear +
LayerNorm with no output projection, residual + LayerNorm around the attention and around a shared
attention MLP, LSTM-style input/forget gates computed from the projected input and tanh(memory)),
with two changes that make the rows *objects*:

- the input is a matrix: object k's latent is projected to its own input row, and memory row k's
  gates read input row k ("treat_input_as_matrix" in Sonnet);
- absent objects are masked: they are not attended to, their memory rows are left unchanged and
  their gamma rows are zeros. A slot that becomes present after being absent starts again from the
  initial memory (SQAIR reuses slots for newly discovered objects).

The initial memory is zeros (Sonnet uses an identity matrix, which would break permutation
equivariance across slots). gamma_k is [z_k; memory row k after the step] (out_dim = D + mem_size):
every relation's gamma starts with z_{t-1} (docs/adding-a-baseline.md), so the prior never loses the
object's own state. Before this rule the RMC passed only its memory.
Parameter formula: docs/params.md.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rsqair_bench.models.attention import MaskedMultiHeadAttention
from rsqair_bench.models.relation import Relation, State
from rsqair_bench.registry import register_relation


@register_relation("rmc", paper_name="R-SQAIR(RMC)")
class RelationalMemoryCore(Relation):
    """Memory rows = object slots; one attention block per step over [memory; projected inputs]."""

    def __init__(
        self,
        obj_dim: int,
        heads: int = 4,
        head_size: int = 10,
        blocks: int = 1,
        attention_mlp_layers: int = 2,
        forget_bias: float = 1.0,
        input_bias: float = 0.0,
    ) -> None:
        super().__init__(obj_dim)
        self.mem_size = heads * head_size
        self.out_dim = obj_dim + self.mem_size  # gamma = [z_{t-1}; memory row] (docs/adding-a-baseline.md)
        self.blocks = blocks
        self.forget_bias, self.input_bias = forget_bias, input_bias
        m = self.mem_size
        self.input_proj = nn.Linear(obj_dim, m)
        # Sonnet creates new attention/LayerNorm modules per block; the MLP is shared across blocks
        self.attend = nn.ModuleList(MaskedMultiHeadAttention(m, heads, head_size) for _ in range(blocks))
        self.norm_attention = nn.ModuleList(nn.LayerNorm(m) for _ in range(blocks))
        self.norm_mlp = nn.ModuleList(nn.LayerNorm(m) for _ in range(blocks))
        layers: list[nn.Module] = []
        for i in range(attention_mlp_layers):
            layers += [nn.Linear(m, m)] + ([nn.ReLU()] if i < attention_mlp_layers - 1 else [])
        self.attention_mlp = nn.Sequential(*layers)
        self.gate_input = nn.Linear(m, 2 * m)  # "unit" gates: one per memory feature
        self.gate_memory = nn.Linear(m, 2 * m)

    def initial_state(self, batch: int, num_objects: int, device: torch.device) -> State:
        memory = torch.zeros(batch, num_objects, self.mem_size, device=device)  # [B, K, M]
        was_present = torch.zeros(batch, num_objects, dtype=torch.bool, device=device)  # [B, K]
        return memory, was_present

    def forward(self, z: Tensor, present: Tensor, state: State) -> tuple[Tensor, State]:
        b, k, _ = z.shape
        if state is None:
            state = self.initial_state(b, k, z.device)
        memory, was_present = state  # [B, K, M], [B, K]
        memory = memory.to(z.dtype)
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        # a slot that (re)appears holds a new object: restart it from the initial (zero) memory
        memory = torch.where((present & ~was_present).unsqueeze(-1), zero, memory)  # [B, K, M]
        inputs = self.input_proj(z)  # [B, K, M]

        rows = torch.cat([memory, inputs], dim=1)  # [B, 2K, M]
        row_mask = torch.cat([present, present], dim=1)  # [B, 2K]
        for i in range(self.blocks):
            attended = self.attend[i](rows, rows, row_mask)  # [B, 2K, M]
            rows = self.norm_attention[i](rows + attended)
            rows = self.norm_mlp[i](self.attention_mlp(rows) + rows)
        attended_memory = rows[:, :k]  # [B, K, M]; Sonnet drops the input rows after attention

        gates = self.gate_input(inputs) + self.gate_memory(torch.tanh(memory))  # [B, K, 2M]
        input_gate, forget_gate = gates.chunk(2, dim=-1)
        input_gate = torch.sigmoid(input_gate + self.input_bias)
        forget_gate = torch.sigmoid(forget_gate + self.forget_bias)
        new_memory = input_gate * torch.tanh(attended_memory) + forget_gate * memory  # [B, K, M]

        mask = present.unsqueeze(-1)  # [B, K, 1]
        memory = torch.where(mask, new_memory, memory)  # absent rows unchanged
        gamma = torch.where(mask, torch.cat([z, new_memory], dim=-1), zero)  # [B, K, D + M]
        return gamma, (memory, present.clone())
