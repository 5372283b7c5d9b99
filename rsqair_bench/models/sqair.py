"""SQAIR (Kosiorek et al. 2018) with R-SQAIR's relational hook (Stanic & Schmidhuber 2019).

One time step: relation gamma_t = Gamma(z_{t-1}) -> propagation prior and posterior (PROP) ->
discovery (DISC) conditioned on propagated objects -> merge (present first, truncate to K) ->
render. Structure and defaults follow akosiorek/sqair (see docs/sqair.md for every departure).

Shapes: B batch, P particles, N = B*P (particle p of sequence b at row b*P + p), T frames,
K object slots, Dw = z_what, H hidden. Python loops run only over time and object slots.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rsqair_bench.config import ModelConfig
from rsqair_bench.models.air import (
    GlimpseDecoder,
    GlimpseEncoder,
    PresenceHead,
    WhereHead,
    bernoulli_log_prob,
    gather_slots,
    init_bias,
    linear,
    mlp,
    normal_log_prob,
    sample_bernoulli,
    sample_normal,
    stable_present_first,
)
from rsqair_bench.models.objective import sqair_loss
from rsqair_bench.models.priors import DiscoveryPrior, PropagationPrior, PropPriorOutput
from rsqair_bench.models.relation import Relation, State
from rsqair_bench.models.stn import transform_where, where_to_boxes


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
    ids: Tensor  # [B, T, K] object identity (stable across frames), -1 where absent


@dataclass
class Objects:
    """The per-slot state carried from one frame to the next. Every tensor is [N, K, ...]."""

    what: Tensor
    where: Tensor  # raw (unconstrained) where logits
    pres: Tensor
    temporal: Tensor  # per-object temporal GRU state of the propagation posterior
    prior: Tensor  # per-object GRU state of the propagation prior
    ids: Tensor  # long
    relation: State  # the relation's per-object state rows, or None

    def latent(self) -> Tensor:
        return torch.cat([self.what, self.where, self.pres.unsqueeze(-1)], dim=-1)  # [N, K, Dw + 5]


@dataclass
class StepTerms:
    """Log-probability terms of one time step, each [N]."""

    log_q: Tensor
    log_p: Tensor
    log_q_discrete: Tensor


def _slots_map(fn, state: State) -> State:
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(fn(s) for s in state)
    return fn(state)


def _slots_cat(a: State, b: State) -> State:
    if a is None:
        return None
    if isinstance(a, tuple):
        return tuple(torch.cat([x, y], dim=1) for x, y in zip(a, b))
    return torch.cat([a, b], dim=1)


class Propagation(nn.Module):
    """PROP posterior q^P(z_t^i | gamma_t^i, h_t^i): runs over the previous objects in slot order
    (a vanilla RNN core for explaining away) with a temporal GRU per object (sqair ref: PropagationCore)."""

    def __init__(self, cfg: ModelConfig, gamma_dim: int, encoder: GlimpseEncoder) -> None:
        super().__init__()
        h, dw, g = cfg.n_hidden, cfg.z_what, cfg.glimpse_size
        hiddens = [h] * cfg.n_layers
        self.encoder = encoder  # shared with discovery (sqair ref)
        self.mask_net = mlp(h, [128], g * g)
        self.where_bias_net = mlp(h, [128], 4)
        init_bias(self.mask_net, [1.0] * (g * g))  # sqair ref: glimpse mask output bias 1
        self.core = nn.RNNCell(dw + dw + 4 + 1 + gamma_dim + h, h)  # tanh vanilla RNN (sqair ref)
        self.core_init = nn.Parameter(torch.zeros(h))
        self.where_head = WhereHead(h + 4 + h, hiddens, cfg.transform_var_bias, extra_offset=-1.0)
        self.temporal = nn.GRUCell(h + 4 + 2 * dw, h)
        self.temporal_init = nn.Parameter(torch.zeros(h))
        self.what_head = linear(h, 2 * dw)
        self.gates = linear(h, 3 * dw)
        with torch.no_grad():
            self.gates.bias.fill_(1.0)  # sqair ref
        self.pres_head = PresenceHead(h + h + dw, cfg.prop_step_bias)

    def forward(
        self, image: Tensor, prev: Objects, gamma: Tensor, prior: PropPriorOutput, generator: torch.Generator | None
    ) -> tuple[Objects, StepTerms]:
        n, k = prev.pres.shape
        dw = prev.what.shape[-1]
        h = self.core_init.expand(n, -1)
        step_what = prev.what.new_zeros(n, dw)
        step_where = prev.what.new_zeros(n, 4)
        step_pres = prev.what.new_zeros(n, 1)
        out_what, out_where, out_pres, out_temporal = [], [], [], []
        log_q = log_p = log_q_discrete = prev.what.new_zeros(n)
        for i in range(k):
            s = prev.temporal[:, i]
            was = prev.pres[:, i]
            mask = torch.sigmoid(self.mask_net(s))
            proposal = prev.where[:, i] + 0.1 * self.where_bias_net(s)
            feature, _ = self.encoder(image, proposal, mask)
            h_new = self.core(torch.cat([feature, step_what, step_where, step_pres, gamma[:, i], s], -1), h)
            # Explaining away runs over objects alive at t-1 only: an absent slot leaves the core untouched.
            h = torch.where(was.unsqueeze(-1) > 0, h_new, h)
            delta, where_scale = self.where_head(torch.cat([h, prev.where[:, i], s], -1))
            where_loc = prev.where[:, i] + delta
            where = sample_normal(where_loc, where_scale, generator)
            glimpse_loc, glimpse_scale = self.encoder(image, where, mask)
            s_new = self.temporal(torch.cat([h, where, glimpse_loc, glimpse_scale], -1), s)
            temporal_loc, temporal_raw = self.what_head(s_new).chunk(2, -1)
            temporal_scale = torch.nn.functional.softplus(temporal_raw) + 0.01
            f, gi, gt = (0.9999 * torch.sigmoid(self.gates(s_new))).chunk(3, -1)
            what_loc = f * prev.what[:, i] + (1 - gi) * glimpse_loc + (1 - gt) * temporal_loc
            what_scale = (1 - gi) * glimpse_scale + (1 - gt) * temporal_scale
            what = sample_normal(what_loc, what_scale, generator)
            logit = self.pres_head(torch.cat([h, s, what], -1), was)
            pres = sample_bernoulli(logit, generator) * was

            both = was * pres
            log_q = log_q + both * (normal_log_prob(what, what_loc, what_scale)
                                    + normal_log_prob(where, where_loc, where_scale))
            log_p = log_p + both * (normal_log_prob(what, prior.what_loc[:, i], prior.what_scale[:, i])
                                    + normal_log_prob(where, prior.where_loc[:, i], prior.where_scale[:, i]))
            pres_q = was * bernoulli_log_prob(pres, logit)
            log_q = log_q + pres_q
            log_q_discrete = log_q_discrete + pres_q
            log_p = log_p + was * bernoulli_log_prob(pres, prior.pres_logit[:, i])

            step_what, step_where, step_pres = what * both.unsqueeze(-1), where * both.unsqueeze(-1), both.unsqueeze(-1)
            out_what.append(what)
            out_where.append(where)
            out_pres.append(pres)
            out_temporal.append(s_new)
        objects = Objects(
            what=torch.stack(out_what, 1), where=torch.stack(out_where, 1), pres=torch.stack(out_pres, 1),
            temporal=torch.stack(out_temporal, 1), prior=prior.state,
            ids=torch.where(torch.stack(out_pres, 1) > 0, prev.ids, torch.full_like(prev.ids, -1)),
            relation=prev.relation,
        )
        return objects, StepTerms(log_q, log_p, log_q_discrete)


class Discovery(nn.Module):
    """DISC posterior q^D(z_t^D | x_t, z_t^P): AIR conditioned on a summary of the propagated
    objects, at most K - (number propagated) new objects (sqair ref: DiscoveryCore)."""

    def __init__(self, cfg: ModelConfig, encoder: GlimpseEncoder) -> None:
        super().__init__()
        h, dw = cfg.n_hidden, cfg.z_what
        hiddens = [h] * cfg.n_layers
        self.encoder = encoder
        self.z_what = dw
        self.image_encoder = mlp(cfg.image_size ** 2, hiddens)
        self.summary = mlp(dw + 4, hiddens)  # conditioning on propagated objects
        self.core = nn.RNNCell(h + h + dw + 4 + 1, h)
        self.core_init = nn.Parameter(torch.zeros(h))
        self.where_head = WhereHead(h, hiddens, cfg.transform_var_bias)
        self.pres_head = PresenceHead(h + dw, cfg.disc_step_bias)

    def summarise(self, propagated: Objects) -> Tensor:
        # [N, K, ...] -> [N, H]: sum of an MLP over present propagated objects
        feats = self.summary(torch.cat([propagated.what, propagated.where], -1))
        return (feats * propagated.pres.unsqueeze(-1)).sum(1)

    def forward(
        self, image: Tensor, cond: Tensor, allowed: Tensor, slots: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Returns what [N,K,Dw], where [N,K,4], pres [N,K], log_q_continuous [N,K] (unmasked),
        log_q_discrete [N]. `allowed` [N] is how many objects may still be discovered."""
        n = image.shape[0]
        dw = self.z_what
        h = self.core_init.expand(n, -1)
        img = self.image_encoder(image.flatten(1))
        what, where = image.new_zeros(n, dw), image.new_zeros(n, 4)
        pres = image.new_ones(n)
        out_what, out_where, out_pres, out_lq = [], [], [], []
        log_q_discrete = image.new_zeros(n)
        for k in range(slots):
            h = self.core(torch.cat([img, cond, what, where, pres.unsqueeze(-1)], -1), h)
            where_loc, where_scale = self.where_head(h)
            where = sample_normal(where_loc, where_scale, generator)
            what_loc, what_scale = self.encoder(image, where)
            what = sample_normal(what_loc, what_scale, generator)
            gate = pres * (allowed > k).to(pres.dtype)  # stay absent once absent; respect the slot cap
            logit = self.pres_head(torch.cat([h, what], -1), gate)
            new_pres = sample_bernoulli(logit, generator) * gate
            # Only steps reached while still present are random; later ones are absent with probability 1.
            log_q_discrete = log_q_discrete + pres * bernoulli_log_prob(new_pres, logit)
            pres = new_pres
            out_lq.append(normal_log_prob(what, what_loc, what_scale) + normal_log_prob(where, where_loc, where_scale))
            out_what.append(what)
            out_where.append(where)
            out_pres.append(pres)
        stack = lambda xs: torch.stack(xs, 1)  # noqa: E731
        return stack(out_what), stack(out_where), stack(out_pres), stack(out_lq), log_q_discrete


class SQAIR(nn.Module):
    """SQAIR with a relational module Gamma in the propagation step (Gamma = identity is plain SQAIR)."""

    def __init__(self, config: ModelConfig, relation: Relation) -> None:
        super().__init__()
        self.config = config
        self.relation = relation
        hiddens = [config.n_hidden] * config.n_layers
        encoder = GlimpseEncoder(config.glimpse_size, hiddens, config.z_what)
        self.propagation = Propagation(config, relation.out_dim, encoder)
        self.discovery = Discovery(config, encoder)
        self.prop_prior = PropagationPrior(relation.out_dim, config.z_what, config.n_hidden,
                                           config.prop_prior_step_bias)
        self.disc_prior = DiscoveryPrior(config.n_hidden, config.max_objects, config.scale_prior,
                                         config.shift_prior, config.where_prior_std)
        self.decoder = GlimpseDecoder(config.z_what, hiddens, config.glimpse_size, config.image_size,
                                      config.output_scale)

    # ------------------------------------------------------------------ public API
    def forward(
        self, x: Tensor, particles: int, generator: torch.Generator | None = None, max_objects: int | None = None
    ) -> SQAIROutput:
        """x: [B, T, 1, H, W] in [0, 1]. The loss is divided by T as in the reference (targets.py)."""
        b, t = x.shape[:2]
        log_w, log_q_discrete, frames = self._run(x, particles, generator, max_objects, n_observed=t)
        pres = frames[3]  # [N, T, K]
        log_w = log_w.view(b, particles)
        loss, bound = sqair_loss(log_w, log_q_discrete.view(b, particles))
        num_present = pres.sum(-1).view(b, particles, t)
        return SQAIROutput(loss=loss / t, iwae_bound=bound, log_weights=log_w, num_present=num_present)

    @torch.no_grad()
    def generate(
        self, x: Tensor, n_observed: int, max_objects: int | None = None, generator: torch.Generator | None = None
    ) -> Generation:
        """Infer frames 1..n_observed, then sample the rest from the propagation prior with discovery off."""
        _, _, frames = self._run(x, 1, generator, max_objects, n_observed=n_observed)
        canvas, what, where, pres, ids = frames
        h, w = x.shape[-2:]
        where_c = transform_where(where)
        return Generation(frames=canvas, what=what, where=where_c, pres=pres,
                          boxes=where_to_boxes(where_c, (h, w)), ids=ids)

    def pixel_log_likelihood(self, x: Tensor, frames: Tensor) -> Tensor:
        """Per-pixel log N(x; frames, output_std^2), same shape as x."""
        return torch.distributions.Normal(frames, self.config.output_std).log_prob(x)

    # ------------------------------------------------------------------ internals
    def _initial_objects(self, n: int, k: int, device: torch.device) -> Objects:
        dw, h = self.config.z_what, self.config.n_hidden
        zeros = torch.zeros(n, k, device=device)
        return Objects(
            what=torch.zeros(n, k, dw, device=device), where=torch.zeros(n, k, 4, device=device), pres=zeros,
            temporal=self.propagation.temporal_init.expand(n, k, h), prior=self.prop_prior.initial_state(n, k),
            ids=torch.full((n, k), -1, dtype=torch.long, device=device),
            relation=self.relation.initial_state(n, k, device),
        )

    def _run(self, x: Tensor, particles: int, generator, max_objects: int | None, n_observed: int):
        b, t = x.shape[:2]
        k = max_objects or self.config.max_objects
        xs = x.repeat_interleave(particles, dim=0)  # [N, T, 1, H, W]
        n = xs.shape[0]
        objects = self._initial_objects(n, k, x.device)
        fresh = self._initial_objects(n, k, x.device)  # templates for newly discovered objects
        last_id = torch.full((n,), -1, dtype=torch.long, device=x.device)
        log_w = xs.new_zeros(n)
        log_q_discrete = xs.new_zeros(n)
        nothing = StepTerms(xs.new_zeros(n), xs.new_zeros(n), xs.new_zeros(n))  # a step with no random choices
        per_frame = []
        for step in range(t):
            image = xs[:, step]
            observe = step < n_observed
            if step == 0:
                propagated = fresh
                terms = nothing
                expected = xs.new_zeros(n, 1)
            else:
                gamma, rel_state = self.relation(objects.latent(), objects.pres > 0, objects.relation)
                objects.relation = rel_state
                prior = self.prop_prior(gamma, objects.pres, objects.prior)
                # Expected propagated count under the prior conditions the count prior (sqair ref).
                expected = (torch.sigmoid(prior.pres_logit) - 0.5).sum(1, keepdim=True) / k
                if observe:
                    propagated, terms = self.propagation(image, objects, gamma, prior, generator)
                else:
                    propagated = self._sample_prior(objects, prior, generator)
                    terms = nothing

            if observe:
                disc, disc_terms = self._discover(image, propagated, expected, k, step, generator)
            else:  # generation: discovery is off (sqair ref: do_generate)
                disc = dataclasses.replace(fresh)  # a copy: ids are assigned below
                disc_terms = nothing
            disc.ids = torch.where(disc.pres > 0, last_id.unsqueeze(1) + disc.pres.long().cumsum(1), disc.ids)
            last_id = last_id + disc.pres.long().sum(1)
            objects = self._merge(propagated, disc, k)

            canvas = self.decoder(objects.what, objects.where, objects.pres)
            log_px = self.pixel_log_likelihood(image, canvas).flatten(1).sum(1)
            log_w = log_w + log_px + terms.log_p + disc_terms.log_p - terms.log_q - disc_terms.log_q
            log_q_discrete = log_q_discrete + terms.log_q_discrete + disc_terms.log_q_discrete
            per_frame.append((canvas, objects.what, objects.where, objects.pres, objects.ids))

        frames = tuple(torch.stack(f, 1) for f in zip(*per_frame))  # each [N, T, ...]
        return log_w, log_q_discrete, frames  # frames: (canvas, what, where, pres, ids), each [N, T, ...]

    def _discover(self, image, propagated: Objects, expected: Tensor, k: int, step: int, generator):
        cond = self.discovery.summarise(propagated)
        allowed = k - propagated.pres.sum(1)
        what, where, pres, log_q_cont, log_q_disc = self.discovery(image, cond, allowed, k, generator)
        log_p_cont = self.disc_prior.what_log_prob(what) + self.disc_prior.where_log_prob(where, cond, expected)
        n_disc = pres.sum(1)
        log_p = (pres * log_p_cont).sum(1) + self.disc_prior.count_log_prob(n_disc, expected, step, k)
        log_q = (pres * log_q_cont).sum(1) + log_q_disc
        n, hidden = pres.shape[0], self.config.n_hidden
        disc = Objects(
            what=what, where=where, pres=pres,
            temporal=self.propagation.temporal_init.expand(n, k, hidden),
            prior=self.prop_prior.initial_state(n, k),
            ids=torch.full_like(propagated.ids, -1),
            relation=self.relation.initial_state(n, k, image.device),
        )
        return disc, StepTerms(log_q, log_p, log_q_disc)

    def _sample_prior(self, prev: Objects, prior: PropPriorOutput, generator) -> Objects:
        pres = sample_bernoulli(prior.pres_logit, generator) * prev.pres
        return Objects(
            what=sample_normal(prior.what_loc, prior.what_scale, generator),
            where=sample_normal(prior.where_loc, prior.where_scale, generator),
            pres=pres, temporal=prev.temporal, prior=prior.state,
            ids=torch.where(pres > 0, prev.ids, torch.full_like(prev.ids, -1)), relation=prev.relation,
        )

    @staticmethod
    def _merge(propagated: Objects, discovered: Objects, k: int) -> Objects:
        """Propagated objects first, then discovered; present ones packed first; keep K (sqair ref)."""
        pres = torch.cat([propagated.pres, discovered.pres], 1)  # [N, 2K]
        index = stable_present_first(pres, k)

        def pick(a: Tensor, b: Tensor) -> Tensor:
            return gather_slots(torch.cat([a, b], 1), index)

        relation = _slots_map(lambda s: gather_slots(s, index), _slots_cat(propagated.relation, discovered.relation))
        return Objects(
            what=pick(propagated.what, discovered.what), where=pick(propagated.where, discovered.where),
            pres=gather_slots(pres, index), temporal=pick(propagated.temporal, discovered.temporal),
            prior=pick(propagated.prior, discovered.prior), ids=pick(propagated.ids, discovered.ids),
            relation=relation,
        )
