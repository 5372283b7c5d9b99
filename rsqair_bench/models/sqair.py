"""SQAIR (Kosiorek et al. 2018) with R-SQAIR's relational hook (Stanic & Schmidhuber 2019).

One time step: relation gamma_t = Gamma(z_{t-1}) -> propagation prior and posterior (PROP) ->
discovery (DISC) conditioned on propagated objects -> merge (present first, truncate to K) ->
render. Structure and defaults follow akosiorek/sqair (see docs/sqair.md for every departure).

Shapes: B batch, P particles, N = B*P (particle p of sequence b at row b*P + p), T frames,
K object slots, Dw = z_what, H hidden. Python loops run only over time and, where a choice
depends on the previous slot's sample (explaining away, AIR), over object slots.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsqair_bench.config import ModelConfig
from rsqair_bench.core.inductor_cache import isolate_inductor_cache
from rsqair_bench.core.precision import full_precision
from rsqair_bench.models.air import (
    GlimpseDecoder,
    GlimpseEncoder,
    PresenceHead,
    WhereHead,
    bernoulli_from_uniform,
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
from rsqair_bench.models.compile_passes import UnfuseBiasAddmm
from rsqair_bench.models.image_encoder import image_encoder
from rsqair_bench.models.objective import sqair_loss
from rsqair_bench.models.priors import DiscoveryPrior, PropagationPrior, PropPriorOutput
from rsqair_bench.models.relation import Relation, State
from rsqair_bench.models.stn import shift_logits, transform_where, where_shift, where_to_boxes

# `disc_box_centre: residual_peak` smooths the residual over a ball-sized window before its argmax: a
# ball's radius is 4 px in the 50x50 crop (physics.py: radius 0.0625 of the 64 px frame).
_PEAK_WINDOW_PX = 7


def object_latent_dim(config: ModelConfig) -> int:
    """Size of one object's latent z = [what, where, pres], the input of a Relation; with
    `relation_velocity` also the object's last displacement (2 numbers, px per frame)."""
    return config.z_what + 4 + 1 + (2 if config.relation_velocity else 0)


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
    # The propagation prior's where for frame t, computed from frame t-1's objects (posterior frames up to
    # n_observed, then the sampled ones), raw like Objects.where, in frame t-1's slot order (so slot k belongs
    # to ids[:, t-1, k]); zeros at t = 0. For evaluation's one-step scores (evaluation/prior_error.py).
    prior_where_loc: Tensor | None = None  # [B, T, K, 4]
    prior_where_scale: Tensor | None = None  # [B, T, K, 4]
    # The same prior's what, laid out alike: its mean render, decoder(what loc, where loc), locates what the
    # prior expects the object to draw (evaluation's drawn centres, evaluation/drawn.py).
    prior_what_loc: Tensor | None = None  # [B, T, K, z_what]
    prior_what_scale: Tensor | None = None  # [B, T, K, z_what]


@dataclass
class Objects:
    """The per-slot state carried from one frame to the next. Every tensor is [N, K, ...]."""

    what: Tensor
    where: Tensor  # raw (unconstrained) where logits
    where_before: Tensor  # the same object's where one frame earlier (= where when just discovered)
    pres: Tensor
    temporal: Tensor  # per-object temporal GRU state of the propagation posterior
    prior: Tensor  # per-object GRU state of the propagation prior
    ids: Tensor  # long
    relation: State  # the relation's per-object state rows, or None

    def latent(self) -> Tensor:
        return torch.cat([self.what, self.where, self.pres.unsqueeze(-1)], dim=-1)  # [N, K, Dw + 5]

    def absent_like(self) -> Objects:
        """The same slots with nothing present (what discovery yields when it is off)."""
        return dataclasses.replace(self, pres=torch.zeros_like(self.pres), ids=torch.full_like(self.ids, -1))


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


@dataclass
class SlotNoise:
    """Standard noise for one step's K sequential slot choices, drawn in two calls per step.

    Drawing it up front (instead of one draw per slot), outside `SQAIR._frame`, keeps the frame free
    of RNG calls, which is what lets `torch.compile` fuse a whole frame; the draws are i.i.d., so the
    distribution of every latent is unchanged (tests/test_step_speed.py checks this and the exact gradients).
    """

    normal: Tensor  # [K, N, 4 + Dw] N(0, 1): where noise then what noise
    uniform: Tensor  # [K, N] U(0, 1) for presence

    @staticmethod
    def draw(k: int, n: int, dw: int, like: Tensor, generator: torch.Generator | None) -> SlotNoise:
        opts = dict(generator=generator, device=like.device, dtype=like.dtype)
        return SlotNoise(torch.randn((k, n, 4 + dw), **opts), torch.rand((k, n), **opts))


def _stack(rows: list[tuple[Tensor, ...]]) -> list[Tensor]:
    """Per-slot tuples of [N, ...] tensors -> one [N, K, ...] tensor per tuple position."""
    return [torch.stack(column, 1) for column in zip(*rows)]


class Propagation(nn.Module):
    """PROP posterior q^P(z_t^i | gamma_t^i, h_t^i): runs over the previous objects in slot order
    (a vanilla RNN core for explaining away) with a temporal GRU per object (sqair ref: PropagationCore).

    Everything that depends only on the previous step (glimpse masks, proposal boxes and their
    glimpse features) is computed for all slots at once; only the explaining-away chain runs per slot.
    """

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
        self, image: Tensor, prev: Objects, gamma: Tensor, prior: PropPriorOutput, noise: SlotNoise
    ) -> tuple[Objects, StepTerms]:
        n, k = prev.pres.shape
        dw = prev.what.shape[-1]
        mask = torch.sigmoid(self.mask_net(prev.temporal))  # [N, K, g*g]
        proposal = prev.where + 0.1 * self.where_bias_net(prev.temporal)  # [N, K, 4]
        features, _ = self.encoder(image, proposal, mask)  # [N, K, Dw], one grid_sample for all slots
        h = self.core_init.expand(n, -1).contiguous()  # strided like every later h: one compiled graph per N
        carry = prev.what.new_zeros(n, dw + 4 + 1)  # the previous slot's [what, where, pres], zero if absent
        rows = []
        for i in range(k):
            h, carry, *out = self._slot_step(
                image, h, carry, features[:, i], gamma[:, i], prev.temporal[:, i], prev.where[:, i],
                prev.what[:, i], prev.pres[:, i], mask[:, i], noise.normal[i], noise.uniform[i])
            rows.append(tuple(out))
        where, where_loc, where_scale, what, what_loc, what_scale, logit, pres, temporal = _stack(rows)

        was = prev.pres
        both = was * pres  # [N, K]
        log_q = (both * (normal_log_prob(what, what_loc, what_scale)
                         + normal_log_prob(where, where_loc, where_scale))).sum(1)
        log_p = (both * (normal_log_prob(what, prior.what_loc, prior.what_scale)
                         + normal_log_prob(where, prior.where_loc, prior.where_scale))).sum(1)
        pres_q = (was * bernoulli_log_prob(pres, logit)).sum(1)
        log_p = log_p + (was * bernoulli_log_prob(pres, prior.pres_logit)).sum(1)
        objects = Objects(
            what=what, where=where, where_before=prev.where, pres=pres, temporal=temporal, prior=prior.state,
            ids=torch.where(pres > 0, prev.ids, torch.full_like(prev.ids, -1)), relation=prev.relation,
        )
        return objects, StepTerms(log_q + pres_q, log_p, pres_q)

    def _slot_step(self, image: Tensor, h: Tensor, carry: Tensor, feature: Tensor, gamma: Tensor, s: Tensor,
                   prev_where: Tensor, prev_what: Tensor, was: Tensor, mask: Tensor, normal: Tensor,
                   uniform: Tensor) -> tuple[Tensor, ...]:
        """One object of the explaining-away chain; every tensor is [N, ...] for slot i."""
        dw = prev_what.shape[-1]
        h_new = self.core(torch.cat([feature, carry, gamma, s], -1), h)
        # Explaining away runs over objects alive at t-1 only: an absent slot leaves the core untouched.
        h = torch.where(was.unsqueeze(-1) > 0, h_new, h)
        delta, where_scale = self.where_head(torch.cat([h, prev_where, s], -1))
        where_loc = prev_where + delta
        where = where_loc + where_scale * normal[:, :4]
        glimpse_loc, glimpse_scale = self.encoder(image, where, mask)
        s_new = self.temporal(torch.cat([h, where, glimpse_loc, glimpse_scale], -1), s)
        temporal_loc, temporal_raw = self.what_head(s_new).chunk(2, -1)
        temporal_scale = torch.nn.functional.softplus(temporal_raw) + 0.01
        f, gi, gt = (0.9999 * torch.sigmoid(self.gates(s_new))).chunk(3, -1)
        what_loc = f * prev_what + (1 - gi) * glimpse_loc + (1 - gt) * temporal_loc
        what_scale = (1 - gi) * glimpse_scale + (1 - gt) * temporal_scale
        what = what_loc + what_scale * normal[:, 4:4 + dw]
        logit = self.pres_head(torch.cat([h, s, what], -1), was)
        pres = bernoulli_from_uniform(logit, uniform) * was
        both = (was * pres).unsqueeze(-1)
        carry = torch.cat([what * both, where * both, both], -1)
        return h, carry, where, where_loc, where_scale, what, what_loc, what_scale, logit, pres, s_new


class Residual:
    """What the objects found so far in a frame render, for `disc_input: residual` (ours, after
    DAIR in Eslami et al. 2016, which feeds AIR the image minus its reconstruction so far).

    Held without gradient: discovery reads it as input, and the frame's likelihood still trains the
    decoder through the full reconstruction. Why: at CPU scale discovery misses balls (docs/sqair.md,
    "Does it learn?"); seeing what is still unexplained lets each step look for a ball no earlier
    object covers. Measured there: coverage and the sampled frame improved for SQAIR and
    R-SQAIR(RMC), mostly in the later frames; the first frame's boxes barely moved.
    """

    def __init__(self, decoder: GlimpseDecoder, propagated: Objects) -> None:
        self.decoder = decoder
        self.explained = decoder.objects(propagated.what, propagated.where, propagated.pres).detach()  # [N, 1, H, W]

    def add(self, what: Tensor, where: Tensor, pres: Tensor) -> None:
        """One discovered object per row: what [N, Dw], where [N, 4], pres [N]."""
        drawn = self.decoder.objects(what.unsqueeze(1), where.unsqueeze(1), pres.unsqueeze(1))
        self.explained = self.explained + drawn.detach()

    def peak_shift(self, image: Tensor) -> Tensor:
        """The brightest unexplained spot as where-shift logits [N, 2] (x, y), for
        `disc_box_centre: residual_peak` (ours): image [N, 1, H, W].

        Why: discovery's MLP has to regress one ball's position out of a whole image that holds
        several, and at CPU scale it leaves the first frame's boxes between balls (docs/sqair.md,
        "Does it learn?"). The residual, smoothed over a ball-sized window, peaks on a ball nothing
        explains yet; its argmax is a proposal the where head only corrects. Not differentiable, and
        needs none: the correction and the box size still learn through the glimpse. First frame
        only: offered on every frame, the model stopped propagating and rediscovered every ball in
        every frame, so its prior predicted an empty frame (docs/sqair.md).
        """
        # A square mean as two 1-d means: the same values. One 7x7 pool, compiled, halved the learning
        # suite's step rate on this CPU (18 vs 38 seq/s at 10 frames); with these the rate was back to 38-41.
        k, pad = _PEAK_WINDOW_PX, _PEAK_WINDOW_PX // 2
        smooth = F.avg_pool2d(image - self.explained, (k, 1), stride=1, padding=(pad, 0))
        smooth = F.avg_pool2d(smooth, (1, k), stride=1, padding=(0, pad))  # [N, 1, H, W]
        n, _, h, w = smooth.shape
        index = smooth.view(n, h * w).argmax(1)  # [N]
        row, col = index // w, index % w
        centre = torch.stack([(2 * col + 1) / w - 1, (2 * row + 1) / h - 1], -1).to(image.dtype)  # pixel centres, [-1, 1]
        return shift_logits(centre, self.decoder.shift_max, edge=0.99)  # the logits of that box centre


class Discovery(nn.Module):
    """DISC posterior q^D(z_t^D | x_t, z_t^P): AIR conditioned on a summary of the propagated
    objects, at most K - (number propagated) new objects (sqair ref: DiscoveryCore)."""

    def __init__(self, cfg: ModelConfig, encoder: GlimpseEncoder) -> None:
        super().__init__()
        h, dw = cfg.n_hidden, cfg.z_what
        hiddens = [h] * cfg.n_layers
        self.encoder = encoder
        self.z_what = dw
        self.image_encoder = image_encoder(cfg.disc_image_encoder, cfg.image_size, hiddens)
        self.summary = mlp(dw + 4, hiddens)  # conditioning on propagated objects
        self.core = nn.RNNCell(h + h + dw + 4 + 1, h)
        self.core_init = nn.Parameter(torch.zeros(h))
        self.where_head = WhereHead(h, hiddens, cfg.transform_var_bias)
        self.pres_head = PresenceHead(h + dw, cfg.disc_step_bias)
        self.centre_at_peak = cfg.disc_box_centre == "residual_peak"
        if self.centre_at_peak:  # the head's shift is a correction to the peak: zero at start (box on the peak)
            with torch.no_grad():
                self.where_head.net[-1].weight[2:4].zero_()
                self.where_head.net[-1].bias[2:4].zero_()
        self.refine: nn.Module | None = None
        if cfg.disc_where_refine:
            # Ours (docs/sqair.md, "Switches"): a look at the proposed box moves it, as propagation's
            # proposal glimpse does; zero last layer, so an untrained refinement leaves the box where it is.
            self.refine = mlp(h + 2 * dw, [h], 4)
            nn.init.zeros_(self.refine[-1].weight)

    def summarise(self, propagated: Objects) -> Tensor:
        # [N, K, ...] -> [N, H]: sum of an MLP over present propagated objects
        feats = self.summary(torch.cat([propagated.what, propagated.where], -1))
        return (feats * propagated.pres.unsqueeze(-1)).sum(1)

    def forward(
        self, image: Tensor, img: Tensor | None, cond: Tensor, allowed: Tensor, slots: int, noise: SlotNoise,
        residual: Residual | None = None, first: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """image [N, 1, H, W] and its encoding img [N, H] (computed for all frames at once by the caller),
        or, under `disc_input: residual`, `residual` instead: every step then encodes the image minus
        what the propagated objects and the steps before it already render.
        Returns what [N,K,Dw], where [N,K,4], pres [N,K], log_q_continuous [N,K] (unmasked),
        log_q_discrete [N]. `allowed` [N] is how many objects may still be discovered. `first`: the
        sequence's first frame, the only one whose boxes start on the residual's peak under
        `disc_box_centre: residual_peak`."""
        n = image.shape[0]
        h = self.core_init.expand(n, -1).contiguous()  # strided like every later h: one compiled graph per N
        what, where = image.new_zeros(n, self.z_what), image.new_zeros(n, 4)
        pres = image.new_ones(n)
        slot_open = (allowed.unsqueeze(1) > torch.arange(slots, device=image.device)).to(image.dtype)  # [N, K]
        rows = []
        for k in range(slots):
            before = pres
            peak = None
            if residual is not None:
                img = self.image_encoder(image - residual.explained)  # [N, H]
                if self.centre_at_peak and first:
                    peak = residual.peak_shift(image)
            h, where, where_loc, where_scale, what, what_loc, what_scale, logit, pres = self._slot_step(
                image, h, img, cond, what, where, pres, slot_open[:, k], noise.normal[k], noise.uniform[k], peak)
            if residual is not None:
                residual.add(what, where, pres)
            rows.append((where, where_loc, where_scale, what, what_loc, what_scale, logit, pres, before))
        where, where_loc, where_scale, what, what_loc, what_scale, logit, pres, before = _stack(rows)
        log_q_cont = normal_log_prob(what, what_loc, what_scale) + normal_log_prob(where, where_loc, where_scale)
        # Only steps reached while still present are random; later ones are absent with probability 1.
        log_q_discrete = (before * bernoulli_log_prob(pres, logit)).sum(1)
        return what, where, pres, log_q_cont, log_q_discrete

    def _slot_step(self, image: Tensor, h: Tensor, img: Tensor, cond: Tensor, what: Tensor, where: Tensor,
                   pres: Tensor, slot_open: Tensor, normal: Tensor, uniform: Tensor,
                   peak: Tensor | None = None) -> tuple[Tensor, ...]:
        """One AIR step; `what`, `where`, `pres` are the previous slot's sample, every tensor [N, ...].
        `peak` [N, 2]: shift logits the where head's shift is added to (`disc_box_centre: residual_peak`)."""
        h = self.core(torch.cat([img, cond, what, where, pres.unsqueeze(-1)], -1), h)
        where_loc, where_scale = self.where_head(h)
        if peak is not None:
            where_loc = torch.cat([where_loc[:, :2], where_loc[:, 2:] + peak], -1)
        if self.refine is not None:
            seen_loc, seen_scale = self.encoder(image, where_loc)  # the glimpse at the proposed box, [N, Dw] each
            where_loc = where_loc + self.refine(torch.cat([h, seen_loc, seen_scale], -1))
        where = where_loc + where_scale * normal[:, :4]
        what_loc, what_scale = self.encoder(image, where)
        what = what_loc + what_scale * normal[:, 4:]
        gate = pres * slot_open  # stay absent once absent; respect the slot cap
        logit = self.pres_head(torch.cat([h, what], -1), gate)
        new_pres = bernoulli_from_uniform(logit, uniform) * gate
        return h, where, where_loc, where_scale, what, what_loc, what_scale, logit, new_pres


@dataclass
class Trace:
    """What `_run` leaves behind: per-frame outputs, the weights, and the state after the last frame."""

    canvas: Tensor  # [N, T, 1, H, W] Gaussian means of the rendered frames
    what: Tensor  # [N, T, K, Dw]
    where: Tensor  # [N, T, K, 4] raw where logits
    pres: Tensor  # [N, T, K]
    ids: Tensor  # [N, T, K] long
    log_w: Tensor  # [N] sum over frames of log p(x, z) - log q(z | x)
    log_q_discrete: Tensor  # [N]
    objects: Objects  # state after the last frame, carried into prediction
    last_id: Tensor  # [N] largest object id used so far
    prior_loc: Tensor  # [N, T, K, 4] frame t's propagation prior where loc (raw), in frame t-1's slot order; 0 at t = 0
    prior_scale: Tensor  # [N, T, K, 4] its scale
    prior_what_loc: Tensor  # [N, T, K, Dw] the same prior's what loc; 0 at t = 0
    prior_what_scale: Tensor  # [N, T, K, Dw] its scale

    def rows(self, index: Tensor) -> Trace:
        """The trace of the particles in `index` [M] (rows of N): importance resampling picks these."""
        obj = self.objects
        objects = Objects(
            what=obj.what[index], where=obj.where[index], where_before=obj.where_before[index], pres=obj.pres[index],
            temporal=obj.temporal[index],
            prior=obj.prior[index], ids=obj.ids[index], relation=_slots_map(lambda s: s[index], obj.relation),
        )
        return Trace(self.canvas[index], self.what[index], self.where[index], self.pres[index], self.ids[index],
                     self.log_w[index], self.log_q_discrete[index], objects, self.last_id[index],
                     self.prior_loc[index], self.prior_scale[index], self.prior_what_loc[index],
                     self.prior_what_scale[index])


def maybe_compile(fn, enabled: bool):
    """torch.compile for `SQAIR._frame` when `model_config.compile` is set; the plain function otherwise.

    A whole frame is the unit: compiling only the slot steps left most of the frame's small
    operations eager (bench, CPU-scale: 7% faster than eager; the frame: see docs/sqair.md).
    One graph for the first frame and one for every later frame; a curriculum stage does not
    recompile, since T is the Python loop and `_run` hands every frame the same strides. `_run` uses
    it only with gradients on (training steps). dynamic=None (automatic): the training batch compiles
    with static shapes; a second row count N (a smaller last batch) compiles once more with N symbolic,
    and that graph serves every later N.
    On CUDA, mode "reduce-overhead" adds CUDA graphs, which remove the per-kernel launch cost that
    dominates this model's small operations. On CPU, `UnfuseBiasAddmm` keeps each layer's bias add out
    of the matmul call (a fifth fewer profiler events per step; models/compile_passes.py says why).
    """
    if not enabled:
        return fn
    isolate_inductor_cache()  # a cache warmed under another ATEN_CPU_CAPABILITY crashes (core/inductor_cache.py)
    if torch.cuda.is_available():
        return torch.compile(fn, dynamic=None, mode="reduce-overhead")
    return torch.compile(fn, dynamic=None, options={"post_grad_custom_post_pass": UnfuseBiasAddmm()})


class SQAIR(nn.Module):
    """SQAIR with a relational module Gamma in the propagation step (Gamma = identity is plain SQAIR)."""

    def __init__(self, config: ModelConfig, relation: Relation) -> None:
        super().__init__()
        self.config = config
        self.relation = relation
        hiddens = [config.n_hidden] * config.n_layers
        encoder = GlimpseEncoder(config.glimpse_size, hiddens, config.z_what, config.where_scale_max,
                                 config.where_shift_max)
        self.propagation = Propagation(config, relation.out_dim, encoder)
        self.discovery = Discovery(config, encoder)
        self.prop_prior = PropagationPrior(relation.out_dim, config.z_what, config.n_hidden,
                                           config.prop_prior_step_bias, mode=config.prop_prior,
                                           scale_bias=config.prop_prior_scale_bias,
                                           velocity_space=config.prop_velocity_space, shift_max=config.where_shift_max)
        self.disc_prior = DiscoveryPrior(config.n_hidden, config.max_objects, config.scale_prior,
                                         config.shift_prior, config.where_prior_std)
        self.decoder = GlimpseDecoder(config.z_what, hiddens, config.glimpse_size, config.image_size,
                                      config.output_scale, config.where_scale_max, config.where_shift_max)
        self.frame = maybe_compile(self._frame, config.compile)

    # ------------------------------------------------------------------ public API
    def forward(
        self, x: Tensor, particles: int, generator: torch.Generator | None = None, max_objects: int | None = None
    ) -> SQAIROutput:
        """x: [B, T, 1, H, W] in [0, 1]. The loss is divided by T as in the reference (targets.py)."""
        b, t = x.shape[:2]
        trace = self._run(x, particles, generator, max_objects or self.config.max_objects)
        log_w = trace.log_w.view(b, particles)
        loss, bound = sqair_loss(log_w, trace.log_q_discrete.view(b, particles), variant=self.config.vimco)
        num_present = trace.pres.sum(-1).view(b, particles, t)
        return SQAIROutput(loss=loss / t, iwae_bound=bound, log_weights=log_w, num_present=num_present)

    @torch.no_grad()
    def generate(
        self, x: Tensor, n_observed: int, max_objects: int | None = None, generator: torch.Generator | None = None,
        particles: int = 1,
    ) -> Generation:
        """Infer frames 1..n_observed with `particles` posterior particles, keep one particle per
        sequence drawn by its importance weight (sqair ref: model.py resamples before predicting),
        then sample frames n_observed+1..T from the propagation prior with discovery off.
        Frames after n_observed never enter the weights."""
        b, t = x.shape[:2]
        if not 1 <= n_observed <= t:
            raise ValueError(f"n_observed must be in 1..{t}, found {n_observed}")
        k = max_objects or self.config.max_objects
        trace = self._run(x[:, :n_observed], particles, generator, k)
        if particles > 1:
            probs = torch.softmax(trace.log_w.view(b, particles), dim=-1)  # [B, P]
            pick = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # [B]
            trace = trace.rows(torch.arange(b, device=x.device) * particles + pick)
        predicted = self._predict(trace.objects, trace.last_id, t - n_observed, k, generator)
        canvas, what, where, pres, ids, prior_loc, prior_scale, what_loc, what_scale = (
            torch.cat([a, c], 1) for a, c in zip(
                (trace.canvas, trace.what, trace.where, trace.pres, trace.ids, trace.prior_loc, trace.prior_scale,
                 trace.prior_what_loc, trace.prior_what_scale), predicted))
        h, w = x.shape[-2:]
        where_c = transform_where(where, self.config.where_scale_max, self.config.where_shift_max)
        return Generation(frames=canvas, what=what, where=where_c, pres=pres,
                          boxes=where_to_boxes(where_c, (h, w)), ids=ids,
                          prior_where_loc=prior_loc, prior_where_scale=prior_scale,
                          prior_what_loc=what_loc, prior_what_scale=what_scale)

    def pixel_log_likelihood(self, x: Tensor, frames: Tensor) -> Tensor:
        """Per-pixel log N(x; frames, output_std^2), same shape as x; float32 under bf16 autocast."""
        std = self.config.output_std
        z = (full_precision(x) - full_precision(frames)) / std
        return -0.5 * z * z - math.log(std) - 0.5 * math.log(2.0 * math.pi)

    # ------------------------------------------------------------------ internals
    def _initial_objects(self, n: int, k: int, device: torch.device) -> Objects:
        dw, h = self.config.z_what, self.config.n_hidden
        opts = dict(device=device, dtype=self.core_dtype)
        return Objects(
            what=torch.zeros(n, k, dw, **opts), where=torch.zeros(n, k, 4, **opts),
            where_before=torch.zeros(n, k, 4, **opts), pres=torch.zeros(n, k, **opts),
            temporal=self.propagation.temporal_init.expand(n, k, h), prior=self.prop_prior.initial_state(n, k),
            ids=torch.full((n, k), -1, dtype=torch.long, device=device),
            relation=self.relation.initial_state(n, k, device),
        )

    @property
    def core_dtype(self) -> torch.dtype:
        """The parameters' dtype (float32 unless the model was cast, e.g. with .double())."""
        return self.propagation.core_init.dtype

    def _noise(self, k: int, n: int, like: Tensor, generator) -> SlotNoise:
        return SlotNoise.draw(k, n, self.config.z_what, like, generator)

    def _run(self, x: Tensor, particles: int, generator, k: int) -> Trace:
        """Posterior over every frame of x [B, T, 1, H, W] with `particles` particles (N = B * P rows)."""
        b, t = x.shape[:2]
        # Frame-major and contiguous, so every frame's image has the same strides whatever T is: a
        # compiled frame (model_config.compile) is specialised on strides and would recompile per T.
        xs = x.transpose(0, 1).repeat_interleave(particles, dim=1)  # [T, N, 1, H, W]
        n = xs.shape[1]
        if self.config.disc_input == "image":
            # The image encoding depends on the frame only: once per sequence and frame, not per particle.
            encoded = self.discovery.image_encoder(x).transpose(0, 1)  # [T, B, H]
            encoded = encoded.repeat_interleave(particles, dim=1)  # [T, N, H]
        else:  # disc_input: residual: discovery encodes what is left unexplained, per step (Residual)
            encoded = [None] * t
        objects = self._initial_objects(n, k, x.device)
        fresh = self._initial_objects(n, k, x.device)  # templates for newly discovered objects
        last_id = torch.full((n,), -1, dtype=torch.long, device=x.device)
        log_w = log_q_discrete = xs.new_zeros(n)
        # Compiled frames serve training steps only: validation and evaluation (no gradient, other batch
        # sizes and slot counts) would each add graphs, minutes of compilation on a CPU for seconds of use,
        # and past dynamo's recompile limit (8) it falls back to eager anyway.
        frame = self.frame if torch.is_grad_enabled() else self._frame
        per_frame = []
        for step in range(t):
            # Noise is drawn here, outside the (possibly compiled) frame: propagation's, then discovery's.
            prop_noise = None if step == 0 else self._noise(k, n, xs, generator)
            disc_noise = self._noise(k, n, xs, generator)
            objects, last_id, log_w, log_q_discrete, canvas, prior_record = frame(
                xs[step], encoded[step], objects, fresh, last_id, log_w, log_q_discrete, prop_noise, disc_noise)
            per_frame.append((canvas, objects.what, objects.where, objects.pres, objects.ids, *prior_record))
        canvas, what, where, pres, ids, *prior = (torch.stack(f, 1) for f in zip(*per_frame))  # each [N, T, ...]
        return Trace(canvas, what, where, pres, ids, log_w, log_q_discrete, objects, last_id, *prior)

    def _frame(self, image: Tensor, encoded: Tensor | None, objects: Objects, fresh: Objects, last_id: Tensor, log_w: Tensor,
               log_q_discrete: Tensor, prop_noise: SlotNoise | None, disc_noise: SlotNoise
               ) -> tuple[Objects, Tensor, Tensor, Tensor, Tensor, tuple[Tensor, ...]]:
        """One posterior frame: propagate (not on the first frame, `prop_noise` None), discover, merge,
        render, and add the frame's terms to the running log weight and discrete log q.

        A method of its own so that `model_config.compile` can compile a whole frame, forward and
        backward, into one graph: shapes are fixed within a run, so one graph serves every later frame.
        image [N, 1, H, W], encoded [N, H] (None under disc_input: residual); returns objects, last_id, log_w,
        log_q_discrete, canvas and the propagation prior's where loc, where scale [N, K, 4], what loc and what
        scale [N, K, Dw] (zeros on the first frame), which evaluation scores as a one-step prediction (Trace.prior_loc)."""
        n, k = objects.pres.shape
        first = prop_noise is None
        if first:
            propagated, terms, expected = fresh, None, image.new_zeros(n, 1)
            dw = objects.what.shape[-1]
            prior_record = (objects.where.new_zeros(n, k, 4), objects.where.new_zeros(n, k, 4),
                            objects.what.new_zeros(n, k, dw), objects.what.new_zeros(n, k, dw))
        else:
            gamma, prior = self._prior(objects)
            # Expected propagated count under the prior conditions the count prior (sqair ref).
            expected = (torch.sigmoid(prior.pres_logit) - 0.5).sum(1, keepdim=True) / k
            propagated, terms = self.propagation(image, objects, gamma, prior, prop_noise)
            prior_record = (prior.where_loc, prior.where_scale, prior.what_loc, prior.what_scale)
        disc, disc_terms = self._discover(image, encoded, propagated, expected, first, disc_noise)
        disc.ids = torch.where(disc.pres > 0, last_id.unsqueeze(1) + disc.pres.long().cumsum(1), disc.ids)
        last_id = last_id + disc.pres.long().sum(1)
        objects = self._merge(propagated, disc, k)
        canvas = self.decoder(objects.what, objects.where, objects.pres)
        log_px = self.pixel_log_likelihood(image, canvas).flatten(1).sum(1)
        log_w = log_w + log_px + disc_terms.log_p - disc_terms.log_q
        log_q_discrete = log_q_discrete + disc_terms.log_q_discrete
        if not first:
            log_w = log_w + terms.log_p - terms.log_q
            log_q_discrete = log_q_discrete + terms.log_q_discrete
        return objects, last_id, log_w, log_q_discrete, canvas, prior_record

    def _prior(self, objects: Objects) -> tuple[Tensor, PropPriorOutput]:
        """gamma_t = Gamma(z_{t-1}) and the propagation prior it conditions (paper eq. 3)."""
        gamma, objects.relation = self.relation(self._relation_input(objects), objects.pres > 0, objects.relation)
        return gamma, self.prop_prior(gamma, objects.pres, objects.prior, objects.where, objects.what,
                                      objects.where_before)

    def _relation_input(self, objects: Objects) -> Tensor:
        """z_{t-1} [N, K, D] for Gamma; with `relation_velocity` (ours) the box centre's last step in px
        is appended, so a relation can see where the other objects are heading, not only where they are
        (a collision depends on relative velocity; the reference's z holds positions only)."""
        z = objects.latent()
        if not self.config.relation_velocity:
            return z
        cfg = self.config
        step = where_shift(objects.where, cfg.where_shift_max) - where_shift(objects.where_before, cfg.where_shift_max)
        return torch.cat([z, step * (cfg.image_size / 2)], -1)  # [N, K, Dw + 7], px per frame

    def _predict(self, objects: Objects, last_id: Tensor, steps: int, k: int, generator) -> tuple[Tensor, ...]:
        """Sample `steps` frames from the propagation prior, discovery off (sqair ref: do_generate).

        Returns canvas, what, where, pres, ids, prior where loc and scale, prior what loc and scale (from
        the previous frame's objects, in its slot order), each [N, steps, ...]."""
        per_frame = []
        for _ in range(steps):
            _, prior = self._prior(objects)
            propagated = self._sample_prior(objects, prior, generator)
            objects = self._merge(propagated, propagated.absent_like(), k)  # packs present first
            canvas = self.decoder(objects.what, objects.where, objects.pres)
            per_frame.append((canvas, objects.what, objects.where, objects.pres, objects.ids,
                              prior.where_loc, prior.where_scale, prior.what_loc, prior.what_scale))
        if not per_frame:
            n = last_id.shape[0]
            hw = (self.config.image_size, self.config.image_size)
            empty, dw = objects.what.new_zeros, self.config.z_what
            return (empty(n, 0, 1, *hw), empty(n, 0, k, dw), empty(n, 0, k, 4), empty(n, 0, k),
                    objects.ids.new_zeros(n, 0, k), empty(n, 0, k, 4), empty(n, 0, k, 4), empty(n, 0, k, dw),
                    empty(n, 0, k, dw))
        return tuple(torch.stack(f, 1) for f in zip(*per_frame))

    def _discover(self, image, encoded: Tensor | None, propagated: Objects, expected: Tensor, first: bool,
                  noise: SlotNoise) -> tuple[Objects, StepTerms]:
        cond = self.discovery.summarise(propagated)
        n, k = propagated.pres.shape
        allowed = k - propagated.pres.sum(1)
        residual = Residual(self.decoder, propagated) if encoded is None else None
        what, where, pres, log_q_cont, log_q_disc = self.discovery(image, encoded, cond, allowed, k, noise, residual, first)
        log_p_cont = self.disc_prior.what_log_prob(what) + self.disc_prior.where_log_prob(where, cond, expected)
        n_disc = pres.sum(1)
        log_p = (pres * log_p_cont).sum(1) + self.disc_prior.count_log_prob(n_disc, expected, first, k)
        log_q = (pres * log_q_cont).sum(1) + log_q_disc
        hidden = self.config.n_hidden
        disc = Objects(
            what=what, where=where, where_before=where, pres=pres,
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
            where=sample_normal(prior.where_loc, prior.where_scale, generator), where_before=prev.where,
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
            where_before=pick(propagated.where_before, discovered.where_before),
            pres=gather_slots(pres, index), temporal=pick(propagated.temporal, discovered.temporal),
            prior=pick(propagated.prior, discovered.prior), ids=pick(propagated.ids, discovered.ids),
            relation=relation,
        )
