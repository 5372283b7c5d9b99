"""Training objective: the IWAE bound and the VIMCO gradient for SQAIR's discrete latents.

SQAIR trains on the importance-weighted bound L = log (1/P) sum_j w_j over P particles. Its
continuous latents (what, where) are reparameterised, so autograd through L already gives their
IWAE gradient, including the self-normalised weights w_j / sum_k w_k (that is just the gradient
of logsumexp); nothing extra is needed for them. The discrete presence variables z_pres cannot be
reparameterised, so their score-function term uses VIMCO (Mnih & Rezende 2016): particle j gets
the learning signal L - L_{-j}, where L_{-j} is L with log w_j replaced by the mean of the other
particles' log w (the geometric-mean leave-one-out baseline). L_{-j} does not depend on z_j, so the
estimator stays unbiased while the baseline removes most of the variance.

Reference: akosiorek/sqair `sqair/targets.py` (`vimco_control_variate`, `vimco`) computes the same
L_{-j} baseline, but its learning signal is `log w_j - L_{-j}` (not `L - L_{-j}`) and the score
term is averaged rather than summed over particles. That estimator is biased for the IWAE
gradient (its score part is the per-particle ELBO's); we default to the unbiased VIMCO and keep
the reference variant as `variant="sqair_tf"` for comparison (tests/test_objective.py measures
the bias).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from rsqair_bench.core.precision import full_precision

Variant = Literal["vimco", "sqair_tf"]


def iwae_bound(log_weights: Tensor) -> Tensor:
    """IWAE bound per example: logsumexp over particles minus log P. [B, P] -> [B]."""
    num_particles = log_weights.shape[-1]
    return torch.logsumexp(log_weights, dim=-1) - math.log(num_particles)


def leave_one_out_bound(log_weights: Tensor) -> Tensor:
    """L_{-j}: the bound with log w_j replaced by the mean of the other particles' log w.

    [B, P] -> [B, P]; needs P >= 2. The replacement is the arithmetic mean of log weights, i.e. the
    geometric mean of the other weights, as in VIMCO and in SQAIR's reference code.
    """
    num_particles = log_weights.shape[-1]
    if num_particles < 2:
        raise ValueError(f"leave-one-out baseline needs at least 2 particles, found {num_particles}")
    total = log_weights.sum(dim=-1, keepdim=True)  # [B, 1]
    mean_others = (total - log_weights) / (num_particles - 1)  # [B, P]
    # Row j of `swapped` is log_weights with entry j replaced by mean_others[j].
    swapped = log_weights.unsqueeze(-2).expand(*log_weights.shape[:-1], num_particles, num_particles)  # [B, P, P]
    swapped = swapped + torch.diag_embed(mean_others - log_weights)  # [B, P, P]
    return torch.logsumexp(swapped, dim=-1) - math.log(num_particles)  # [B, P]


def vimco_surrogate(log_weights: Tensor, log_q_discrete: Tensor, variant: Variant = "vimco") -> Tensor:
    """Per-example surrogate whose value is the IWAE bound and whose gradient is the VIMCO estimate.

    log_weights [B, P]: per-particle log p(x, z) - log q(z | x), differentiable through the
    reparameterised latents and through log q of the discrete ones.
    log_q_discrete [B, P]: per-particle log q of the sampled discrete latents (summed over time and
    objects), differentiable w.r.t. the inference network.
    Returns [B]; maximise it (the training loss is `-vimco_surrogate(...).mean()`).

    With P = 1 no leave-one-out baseline exists and the signal is the bound itself (plain
    REINFORCE, still unbiased, high variance).
    """
    if log_weights.shape != log_q_discrete.shape or log_weights.dim() < 1:
        raise ValueError(
            f"log_weights and log_q_discrete must both be [B, P], found {tuple(log_weights.shape)} "
            f"and {tuple(log_q_discrete.shape)}"
        )
    bound = iwae_bound(log_weights)  # [B]
    detached = log_weights.detach()  # [B, P]
    num_particles = log_weights.shape[-1]
    if num_particles == 1:
        signal = bound.detach().unsqueeze(-1)  # [B, 1]
    elif variant == "vimco":
        signal = iwae_bound(detached).unsqueeze(-1) - leave_one_out_bound(detached)  # [B, P]
    elif variant == "sqair_tf":
        # akosiorek/sqair targets.vimco: stop_gradient(log w_j - L_{-j}) * log q_j, mean over particles.
        signal = (detached - leave_one_out_bound(detached)) / num_particles  # [B, P]
    else:
        raise ValueError(f"unknown VIMCO variant {variant!r}, expected 'vimco' or 'sqair_tf'")
    score = (signal * log_q_discrete).sum(dim=-1)  # [B]
    # Adding score and subtracting its detached value keeps the forward value equal to the bound
    # (so the loss reads as -bound) while leaving the score-function gradient in place.
    return bound + score - score.detach()


def sqair_loss(log_weights: Tensor, log_q_discrete: Tensor, variant: Variant = "vimco") -> tuple[Tensor, Tensor]:
    """Training loss (scalar, value = -mean IWAE bound) and the detached bound per example [B].

    The bound, the leave-one-out baselines and the surrogate are computed in float32 at least, whatever
    dtype autocast left the weights in (model_config.precision; docs/sqair.md, "Precision"): logsumexp
    over particles and the VIMCO learning signal L - L_{-j} subtract nearly equal numbers of hundreds of
    nats, which bf16 (8 significant bits) would round to zero."""
    log_weights, log_q_discrete = full_precision(log_weights), full_precision(log_q_discrete)
    surrogate = vimco_surrogate(log_weights, log_q_discrete, variant=variant)  # [B]
    loss = -surrogate.mean()
    return loss, iwae_bound(log_weights.detach())
