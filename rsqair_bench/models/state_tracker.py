"""The state-space track's model: a registered relation and SQAIR's propagation prior on ball states.

Why: a pixel model's prior error mixes two things, how well its posterior places the balls and how
well its relation predicts their motion. This model takes the first away. Its input is the
simulator's own ball centres of earlier frames (with Gaussian noise of a chosen std, docs/states.md),
and it predicts each ball's centre one frame ahead with the pixel model's own parts, unchanged: the
relation (`registry.build_relation`, through the `Relation` interface) and the propagation prior
(`PropagationPrior` in velocity mode, one step from its initial state). A relation that cannot cut
the error here cannot be expected to in pixels.

The object latent has the pixel model's layout z = [what, where, pres] (`object_latent`):
- where = (scale_x, scale_y, shift_x, shift_y). shift is the ball's centre in normalised crop
  coordinates (-1 and 1 are the crop's edges, `px_per_unit` = 25 px per unit in the 50 px crop),
  taken linearly: a ball's centre can lie up to 3 px outside the crop, where no tanh logit exists.
  scale is the ball's box side over the crop side (a constant). The pixel model carries the
  unconstrained where instead (its box centre is tanh of the shift logit); near the middle of the
  crop the two agree to first order, and the velocity rule here is exact constant velocity.
- what = the ball's last displacements, newest first, in the same units times `WHAT_GAIN`, padded
  with zeros to z_what: a pixel model's what is a learned appearance code, which balls do not need;
  the slot carries the motion history instead (the centres of the last `history` frames).
- pres = 1 for a ball, 0 for an empty slot (6-8 balls in 8 slots).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rsqair_bench.config import ModelConfig
from rsqair_bench.models.air import normal_log_prob
from rsqair_bench.models.priors import PropagationPrior
from rsqair_bench.models.relation import Relation

CHECKPOINT_KIND = "states"  # best.pt of a state-space job (training/states.py writes it, evaluation/states.py reads it)

# Displacements are ~0.13 crop units per frame (3.2 px at 25 px per unit); times 8 they are O(1), the
# size of the pixel model's what codes (prior N(0, 1)), so Adam's steps fit them as they fit the rest.
WHAT_GAIN = 8.0


def px_per_unit(crop: int) -> float:
    """Pixels per unit of normalised crop coordinates: the crop spans 2 units."""
    return crop / 2.0


def to_crop_units(centres_px: Tensor, crop: int) -> Tensor:
    """Centres in continuous pixels of the crop [..., 2] -> normalised crop coordinates (-1 .. 1 over the crop)."""
    return centres_px / px_per_unit(crop) - 1.0


def object_latent(history: Tensor, present: Tensor, z_what: int, box_scale: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """z_{t-1} = [what, where, pres] from the centres of the last H frames.

    history [B, H, K, 2] (crop units, oldest frame first), present [B, K] bool -> z [B, K, z_what + 5],
    where at t-1 and at t-2 [B, K, 4], what [B, K, z_what]. Empty slots are zero rows."""
    b, h, k, _ = history.shape
    if h < 2 or 2 * (h - 1) > z_what:
        raise ValueError(f"history of {h} frames: expected 2 .. {z_what // 2 + 1} (its {h - 1} displacements fill what)")
    moves = (history[:, 1:] - history[:, :-1]).flip(1)  # [B, H-1, K, 2], newest first
    what = torch.cat([WHAT_GAIN * moves.permute(0, 2, 1, 3).reshape(b, k, -1),
                      history.new_zeros(b, k, z_what - 2 * (h - 1))], dim=-1)  # [B, K, z_what]
    scale = history.new_full((b, k, 2), box_scale)  # [B, K, 2]
    where = torch.cat([scale, history[:, -1]], dim=-1)  # [B, K, 4] at t-1
    where_before = torch.cat([scale, history[:, -2]], dim=-1)  # [B, K, 4] at t-2
    mask = present.unsqueeze(-1)  # [B, K, 1]
    zero = history.new_zeros(())
    what, where, where_before = (torch.where(mask, x, zero) for x in (what, where, where_before))
    z = torch.cat([what, where, present.unsqueeze(-1).to(history.dtype)], dim=-1)  # [B, K, z_what + 5]
    return z, where, where_before, what


class StateTracker(nn.Module):
    """gamma = relation(z_{t-1}), then the propagation prior's where for frame t: centre loc and std."""

    def __init__(self, config: ModelConfig, relation: Relation) -> None:
        super().__init__()
        if config.prop_prior != "velocity":
            raise ValueError(f"the state-space track needs model_config.prop_prior 'velocity', found {config.prop_prior!r}")
        self.z_what = config.z_what
        self.relation = relation
        self.prop_prior = PropagationPrior(relation.out_dim, config.z_what, config.n_hidden, config.prop_prior_step_bias,
                                           mode=config.prop_prior, scale_bias=config.prop_prior_scale_bias)

    def forward(self, history: Tensor, present: Tensor, box_scale: float) -> tuple[Tensor, Tensor]:
        """history [B, H, K, 2] crop units (oldest first), present [B, K] -> loc, std [B, K, 2] of the centre at t."""
        b, _, k, _ = history.shape
        z, where, where_before, what = object_latent(history, present, self.z_what, box_scale)
        gamma, _ = self.relation(z, present, self.relation.initial_state(b, k, history.device))  # [B, K, G]
        prior = self.prop_prior(gamma, present.to(history.dtype), self.prop_prior.initial_state(b, k), where, what,
                                where_before)
        return prior.where_loc[..., 2:], prior.where_scale[..., 2:]  # the shift pair: the centre

    def centre_log_density(self, inputs: Tensor, target: Tensor, present: Tensor, crop: int, box_scale: float,
                           ) -> tuple[Tensor, Tensor]:
        """inputs [B, H, K, 2] and target [B, K, 2] in px of the crop -> the prior's log-density of each true
        centre (nats, as a density over pixels: per px^2) [B, K], and the predicted centre [B, K, 2] px."""
        unit = px_per_unit(crop)
        loc, std = self(to_crop_units(inputs, crop), present, box_scale)  # crop units
        density = normal_log_prob(to_crop_units(target, crop), loc, std) - 2.0 * math.log(unit)  # d(units)/d(px) per axis
        return density, (loc + 1.0) * unit
