"""SQAIR (Kosiorek et al. 2018) with R-SQAIR's relational hook. INTERFACE STUB: implementation in progress."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rsqair_bench.config import ModelConfig
from rsqair_bench.models.relation import Relation


def object_latent_dim(config: ModelConfig) -> int:
    """Size of one object's latent z = [what, where, pres], the input of a Relation."""
    return config.z_what + 4 + 1


@dataclass
class SQAIROutput:
    loss: Tensor  # [] surrogate to minimise: -IWAE bound + VIMCO surrogate for presence, mean over batch
    iwae_bound: Tensor  # [B] log mean_p exp(sum_t log w_t), nats per sequence
    log_weights: Tensor  # [B, P] sum over time of log p(x, z) - log q(z | x)
    num_present: Tensor  # [B, P, T] number of present objects per frame (float)


@dataclass
class Generation:
    frames: Tensor  # [B, T, 1, H, W] Gaussian means of the rendered frames
    what: Tensor  # [B, T, K, z_what]
    where: Tensor  # [B, T, K, 4] (scale_x, scale_y, shift_x, shift_y); scale in (0,1), shift in (-1,1)
    pres: Tensor  # [B, T, K] 0/1
    boxes: Tensor  # [B, T, K, 4] (x0, y0, x1, y1) in pixels of the H x W frame


class SQAIR(nn.Module):
    def __init__(self, config: ModelConfig, relation: Relation) -> None:
        super().__init__()
        self.config = config
        self.relation = relation

    def forward(
        self, x: Tensor, particles: int, generator: torch.Generator | None = None, max_objects: int | None = None
    ) -> SQAIROutput:
        """x: [B, T, 1, H, W] in [0, 1]."""
        raise NotImplementedError

    def generate(
        self, x: Tensor, n_observed: int, max_objects: int | None = None, generator: torch.Generator | None = None
    ) -> Generation:
        """Infer frames 1..n_observed, then sample the rest from the propagation prior with discovery off."""
        raise NotImplementedError

    def pixel_log_likelihood(self, x: Tensor, frames: Tensor) -> Tensor:
        """Per-pixel log N(x; frames, output_std^2), same shape as x."""
        return torch.distributions.Normal(frames, self.config.output_std).log_prob(x)
