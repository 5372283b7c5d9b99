"""SQAIR's learned priors: the propagation prior (where R-SQAIR's gamma enters) and the discovery prior.

Reference: akosiorek/sqair `propagate.py` (PropagatePrior, type 'rnn'), `sqair_modules.py`
(Discover._make_priors), `modules.py` (RecurrentNormal), `prior.py` (categorical count prior).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsqair_bench.models.air import MASKED_LOGIT, init_bias, linear, mlp, normal_log_prob, softplus_scale
from rsqair_bench.models.stn import shift_logits, where_shift


@dataclass
class PropPriorOutput:
    pres_logit: Tensor  # [N, K] masked by previous presence
    where_loc: Tensor  # [N, K, 4]
    where_scale: Tensor
    what_loc: Tensor  # [N, K, Dw]
    what_scale: Tensor
    state: Tensor  # [N, K, H] per-object GRU state


class PropagationPrior(nn.Module):
    """p^P(z_t^P | gamma_t): a GRU per object (weights shared) on gamma_t -> presence, where, what.

    In plain SQAIR gamma_t = z_{t-1} (the reference feeds [what, where]); R-SQAIR feeds the
    relational module's output instead (paper eq. 3), which always contains z_{t-1} (see
    docs/adding-a-baseline.md). Two readouts, chosen by `model_config.prop_prior`:
    - "rnn" (sqair ref default, `propagate.py` type 'rnn'): absolute where/what locations;
    - "residual" (ours, after the reference's GuidedWalkPropagatePrior): where_loc = where_{t-1} + delta
      and what_loc = what_{t-1} + delta, with the delta rows of the readout initialised to zero, so
      the untrained prior predicts "nothing moves" (copy-last) instead of a centred box;
    - "velocity" (ours): as residual, plus the object's last displacement,
      where_loc = where_{t-1} + (where_{t-1} - where_{t-2}) + delta, so the untrained prior predicts
      "keep moving" (the constant-velocity oracle's rule) and the learned delta, where relations act,
      only has to explain what changes a ball's velocity: walls and other balls.
    `scale_bias` (model_config.prop_prior_scale_bias; None = zero bias as in the sqair ref's Linear
    readout) sets the initial std of where and what.
    `velocity_space` (model_config.prop_velocity_space) says where the velocity rule runs: "logit" on
    the raw where logits, or "shift" (ours) on the box centres, 2 c_{t-1} - c_{t-2} mapped back to
    logits. The box centre is shift_max * tanh(logit), so the logit rule bends a straight path
    towards the frame centre, by about 0.65 px per step at the crop's edges on a trained model
    (docs/sqair.md, "Switches"); the learned delta then spends its capacity undoing that.
    """

    def __init__(self, gamma_dim: int, z_what: int, hidden: int, step_bias: float, mode: str = "rnn",
                 scale_bias: float | None = None, velocity_space: str = "logit", shift_max: float = 1.0) -> None:
        super().__init__()
        if mode not in ("rnn", "residual", "velocity"):
            raise ValueError(f"prop_prior must be 'rnn', 'residual' or 'velocity', found {mode!r}")
        if velocity_space not in ("logit", "shift"):
            raise ValueError(f"prop_velocity_space must be 'logit' or 'shift', found {velocity_space!r}")
        self.z_what = z_what
        self.mode = mode
        self.velocity_space = velocity_space
        self.shift_max = shift_max
        residual = mode != "rnn"
        self.cell = nn.GRUCell(gamma_dim, hidden)
        self.init_state = nn.Parameter(torch.zeros(hidden))
        self.readout = linear(hidden, 1 + 2 * (4 + z_what))
        self.step_bias = step_bias
        if residual:
            with torch.no_grad():
                self.readout.weight[1:1 + 4 + z_what].zero_()  # loc rows: delta starts at exactly 0
        if scale_bias is not None:
            # Start the where/what std at softplus(scale_bias) + 0.01 instead of softplus(0) + 0.01 = 0.70
            # (17 px of where-shift noise). Adam moves a bias by about the learning rate per step, so
            # shrinking a std from 0.7 to posterior-like 0.05 from a zero bias takes ~10^4 steps.
            with torch.no_grad():
                self.readout.bias[1 + 4 + z_what:].fill_(scale_bias)

    def initial_state(self, n: int, k: int) -> Tensor:
        return self.init_state.expand(n, k, -1)

    def forward(self, gamma: Tensor, prev_pres: Tensor, state: Tensor, prev_where: Tensor | None = None,
                prev_what: Tensor | None = None, where_before: Tensor | None = None) -> PropPriorOutput:
        # gamma [N, K, G], prev_pres [N, K], state [N, K, H], prev_where and where_before [N, K, 4]
        # (where at t-1 and t-2), prev_what [N, K, Dw]
        n, k, _ = gamma.shape
        new_state = self.cell(gamma.flatten(0, 1), state.flatten(0, 1))
        out = self.readout(new_state).view(n, k, -1)
        z = self.z_what
        logit, where_loc, what_loc, where_raw, what_raw = out.split([1, 4, z, 4, z], dim=-1)
        if self.mode != "rnn":
            if prev_where is None or prev_what is None:
                raise ValueError(f"the {self.mode} propagation prior needs the previous where and what")
            where_loc, what_loc = prev_where + where_loc, prev_what + what_loc
        if self.mode == "velocity":
            if where_before is None:
                raise ValueError("the velocity propagation prior needs the where of two frames back")
            where_loc = where_loc + self.velocity_step(prev_where, where_before)
        logit = logit.squeeze(-1) + self.step_bias
        logit = prev_pres * logit + (1.0 - prev_pres) * MASKED_LOGIT
        return PropPriorOutput(
            logit, where_loc, softplus_scale(where_raw), what_loc, softplus_scale(what_raw), new_state.view(n, k, -1)
        )


    def velocity_step(self, prev_where: Tensor, where_before: Tensor) -> Tensor:
        """[N, K, 4] raw where logits: what "keep moving" adds to where_{t-1}, in `velocity_space`."""
        step = prev_where - where_before  # the logit rule; the box scale keeps it in both spaces
        if self.velocity_space == "shift":
            now = where_shift(prev_where, self.shift_max)  # [N, K, 2] box centres
            before = where_shift(where_before, self.shift_max)
            moved = shift_logits(2 * now - before, self.shift_max)  # constant velocity in the frame
            step = torch.cat([step[..., :2], moved - prev_where[..., 2:]], -1)
        return step


class DiscoveryPrior(nn.Module):
    """p^D(z_t^D | z_t^P): N(0, 1) for what, an autoregressive Gaussian over slots for where, and a
    categorical over the number of new objects conditioned on the propagation prior's expected count.

    The count prior has `max_count + 1` categories fixed at construction (the training max_objects);
    evaluating with more slots (6-8 balls) extends it by repeating the last logit, so no new
    parameters appear (documented in docs/sqair.md).
    """

    def __init__(self, cond_dim: int, max_count: int, scale_prior: float, shift_prior: float, std: float,
                 hidden: int = 128) -> None:
        super().__init__()
        self.max_count = max_count
        self.h0 = nn.Sequential(linear(cond_dim + 1, hidden), nn.ELU())
        self.x0 = nn.Parameter(torch.zeros(4))
        self.cell = nn.RNNCell(4, hidden)
        self.readout = linear(hidden, 8)
        # Readout bias so that the first step's prior is about N([scale, scale, shift, shift], std).
        raw_std = torch.log(torch.expm1(torch.tensor(std - 0.01))).item()
        init_bias(self.readout, [scale_prior] * 2 + [shift_prior] * 2 + [raw_std] * 4)
        self.count_base = nn.Parameter(torch.zeros(max_count + 1))
        later = torch.zeros(max_count + 1)
        later[0] = 10.0  # sqair ref: after the first frame, favour "no new objects"
        self.count_later = nn.Parameter(later)
        self.count_net = mlp(1, [10], max_count + 1)

    def count_log_prob(self, n_disc: Tensor, expected_prop: Tensor, first_frame: bool, slots: int) -> Tensor:
        # n_disc [N] number discovered, expected_prop [N, 1] -> [N]
        logits = self.count_base + self.count_net(expected_prop)
        if not first_frame:
            logits = logits + self.count_later
        logits = F.elu(logits)  # sqair ref applies ELU to the logits
        if slots > self.max_count:
            logits = torch.cat([logits, logits[:, -1:].expand(-1, slots - self.max_count)], dim=1)
        log_probs = logits.log_softmax(-1)
        return log_probs.gather(1, n_disc.long().unsqueeze(1)).squeeze(1)

    def where_log_prob(self, where: Tensor, cond: Tensor, expected_prop: Tensor) -> Tensor:
        # where [N, K, 4] (raw), teacher-forced over slots -> [N, K]. Teacher forcing makes every
        # input known up front: the input projections and the readout run once for all slots, and
        # only h_k = tanh(W_ih x_k + b_ih + W_hh h_{k-1} + b_hh) (nn.RNNCell's update) runs per slot.
        n, k = where.shape[:2]
        h = self.h0(torch.cat([cond, expected_prop], dim=-1))
        inputs = torch.cat([self.x0.expand(n, 1, 4), where[:, :-1]], dim=1)  # [N, K, 4]
        projected = F.linear(inputs, self.cell.weight_ih, self.cell.bias_ih)  # [N, K, hidden]
        states = []
        for i in range(k):
            h = torch.tanh(projected[:, i] + F.linear(h, self.cell.weight_hh, self.cell.bias_hh))
            states.append(h)
        loc, raw = self.readout(torch.stack(states, dim=1)).chunk(2, dim=-1)  # [N, K, 4] each
        return normal_log_prob(where, loc, softplus_scale(raw))

    @staticmethod
    def what_log_prob(what: Tensor) -> Tensor:
        # [N, K, Dw] -> [N, K]
        return normal_log_prob(what, torch.zeros_like(what), torch.ones_like(what))
