"""Correctness of the SQAIR model: shapes, gradients, presence masking, slot limits, determinism."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rsqair_bench.config import ModelConfig
from rsqair_bench.models.relation import Relation
from rsqair_bench.models.sqair import SQAIR, Objects, Residual, SlotNoise, object_latent_dim
from rsqair_bench.models.stn import transform_where

TINY = ModelConfig(max_objects=3, z_what=4, glimpse_size=8, n_hidden=32, image_size=50)


class MaskedIdentity(Relation):
    """gamma = z for present objects, 0 for absent ones (what baselines/identity.py does)."""

    def __init__(self, obj_dim: int) -> None:
        super().__init__(obj_dim)
        self.out_dim = obj_dim

    def forward(self, z, present, state):
        return z * present.unsqueeze(-1), state


def make_model(cfg: ModelConfig = TINY, seed: int = 0) -> SQAIR:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return SQAIR(cfg, MaskedIdentity(object_latent_dim(cfg)))


def batch(b: int = 2, t: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, t, 1, 50, 50, generator=g) > 0.9).float()


def test_shapes_finite_and_every_parameter_gets_a_gradient():
    model = make_model()
    out = model(batch(), particles=3, generator=torch.Generator().manual_seed(1))
    assert out.log_weights.shape == (2, 3)
    assert out.iwae_bound.shape == (2,)
    assert out.num_present.shape == (2, 3, 3)
    assert torch.isfinite(out.log_weights).all() and torch.isfinite(out.loss)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"


def test_same_seed_same_loss_bitwise_and_different_seed_differs():
    x = batch()
    losses = [make_model()(x, 2, torch.Generator().manual_seed(s)).loss.item() for s in (5, 5, 6)]
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]


def test_count_never_exceeds_max_objects_and_merge_keeps_every_present_object():
    model = make_model()
    # Bias discovery towards "present" so the slot cap is what limits the count.
    with torch.no_grad():
        model.discovery.pres_head.net[-1].bias.fill_(20.0)
        model.propagation.pres_head.net[-1].bias.fill_(20.0)
    out = model(batch(t=4), particles=2, generator=torch.Generator().manual_seed(0))
    assert out.num_present.max() <= TINY.max_objects
    assert out.num_present[..., 0].min() == TINY.max_objects  # all slots used at frame 1
    gen = model.generate(batch(t=4), n_observed=2, max_objects=5, generator=torch.Generator().manual_seed(0))
    assert gen.pres.shape[-1] == 5 and gen.pres.sum(-1).max() <= 5


def test_merge_packs_present_first_in_order_and_truncates():
    n, k = 1, 3

    def objects(pres, ids):
        pres = torch.tensor([pres], dtype=torch.float)
        z = torch.zeros(n, k, 2)
        return Objects(what=z, where=z, where_before=z, pres=pres, temporal=z, prior=z, ids=torch.tensor([ids]),
                       relation=None)

    merged = SQAIR._merge(objects([1, 0, 1], [7, -1, 9]), objects([1, 0, 0], [10, -1, -1]), k)
    assert merged.ids.tolist() == [[7, 9, 10]]
    assert merged.pres.tolist() == [[1, 1, 1]]


def test_absent_object_contributes_nothing_to_propagation_terms():
    """Changing the latents of an object absent at t-1 changes neither log p nor log q of the step."""
    model = make_model()
    n, k, cfg = 2, TINY.max_objects, TINY
    g = torch.Generator().manual_seed(3)
    prev = model._initial_objects(n, k, torch.device("cpu"))
    prev.pres = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    prev.what = torch.randn(n, k, cfg.z_what, generator=g)
    prev.where = torch.randn(n, k, 4, generator=g)
    image = batch(b=n)[:, 0]

    def step_terms(objects: Objects):
        gamma, _ = model.relation(objects.latent(), objects.pres > 0, None)
        prior = model.prop_prior(gamma, objects.pres, objects.prior, objects.where, objects.what)
        noise = SlotNoise.draw(k, n, cfg.z_what, image, torch.Generator().manual_seed(11))
        _, terms = model.propagation(image, objects, gamma, prior, noise)
        return terms

    changed = dataclasses.replace(prev, what=prev.what.clone(), where=prev.where.clone())
    absent = prev.pres == 0
    changed.what[absent] += 5.0
    changed.where[absent] -= 2.0
    a, b = step_terms(prev), step_terms(changed)
    for name in ("log_p", "log_q", "log_q_discrete"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    # Sanity: changing a present object does change the terms.
    moved = dataclasses.replace(prev, what=prev.what.clone())
    moved.what[~absent] += 5.0
    assert not torch.equal(step_terms(moved).log_p, a.log_p)


def test_generation_discovers_nothing_after_the_observed_frames():
    model = make_model()
    with torch.no_grad():
        model.discovery.pres_head.net[-1].bias.fill_(20.0)
        model.prop_prior.step_bias = -20.0  # prior kills every propagated object
    gen = model.generate(batch(t=4), n_observed=2, generator=torch.Generator().manual_seed(0))
    assert gen.pres[:, :2].sum() > 0
    assert gen.pres[:, 2:].sum() == 0  # no discovery, and the prior removed everything
    assert gen.frames.shape == (2, 4, 1, 50, 50)
    assert gen.boxes.shape == (2, 4, TINY.max_objects, 4)


@pytest.mark.parametrize("k", [1, 4, 8])
def test_model_runs_with_more_slots_than_trained(k):
    model = make_model()
    out = model(batch(), particles=2, generator=torch.Generator().manual_seed(0), max_objects=k)
    assert torch.isfinite(out.log_weights).all()
    assert out.num_present.max() <= k


def test_conv_image_encoder_trains_and_the_mlp_keeps_its_parameter_names():
    """`disc_image_encoder: conv` builds, every conv weight gets a gradient; `mlp` (the reference)
    keeps the names older checkpoints were saved with."""
    model = make_model(dataclasses.replace(TINY, disc_image_encoder="conv"))
    out = model(batch(), particles=2, generator=torch.Generator().manual_seed(1))
    out.loss.backward()
    convs = {n: p for n, p in model.named_parameters() if n.startswith("discovery.image_encoder.convs")}
    assert convs and all(p.grad is not None and p.grad.abs().sum() > 0 for p in convs.values())
    names = {n for n, _ in make_model().named_parameters() if n.startswith("discovery.image_encoder")}
    assert names == {f"discovery.image_encoder.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")}


def test_residual_discovery_encodes_what_is_still_unexplained():
    """`disc_input: residual`: discovery's first step encodes the frame itself, the second the frame
    minus the object the first step found (rendered by the model's own decoder), and every parameter
    still trains."""
    model = make_model(dataclasses.replace(TINY, disc_input="residual"))
    seen: list[torch.Tensor] = []
    model.discovery.image_encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    x = batch(b=2, t=1)
    trace = model._run(x, 1, torch.Generator().manual_seed(2), TINY.max_objects)
    assert len(seen) == TINY.max_objects  # once per discovery step, not once per frame
    torch.testing.assert_close(seen[0], x[:, 0])
    first = model.decoder.objects(trace.what[:, 0, :1], trace.where[:, 0, :1], trace.pres[:, 0, :1])
    assert trace.pres[:, 0, 0].sum() > 0 and first.abs().sum() > 0  # the case is not vacuous
    torch.testing.assert_close(seen[1], x[:, 0] - first)
    out = model(batch(), particles=2, generator=torch.Generator().manual_seed(1))
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_discovery_where_refinement_starts_as_the_reference_and_moves_the_box():
    """`disc_where_refine`: untrained, the glimpse-based correction is zero (the reference's box);
    its output shifts the first discovered box by exactly its value, and the loss trains it."""
    model = make_model(dataclasses.replace(TINY, disc_where_refine=True))
    x = batch(b=2, t=1)

    def first_box() -> torch.Tensor:  # frame 1, slot 0: discovery's first step, same noise every call
        trace = model._run(x, 1, torch.Generator().manual_seed(3), TINY.max_objects)
        present = trace.pres[:, 0, 0] > 0  # merged slot 0 is discovery's first step when that is present
        assert present.any()
        return trace.where[present, 0, 0]

    refine, model.discovery.refine = model.discovery.refine, None
    reference = first_box()
    model.discovery.refine = refine
    torch.testing.assert_close(first_box(), reference)
    shift = torch.tensor([0.0, 0.0, 0.3, -0.2])
    with torch.no_grad():
        refine[-1].bias.copy_(shift)
    torch.testing.assert_close(first_box(), reference + shift)
    out = model(batch(), particles=2, generator=torch.Generator().manual_seed(1))
    out.loss.backward()
    assert refine[-1].weight.grad.abs().sum() > 0


def _ball(centre_xy: tuple[int, int], size: int = 50, radius: float = 4.0) -> torch.Tensor:
    """A bright disc around pixel (col, row) `centre_xy`: [1, 1, size, size]."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((cols - centre_xy[0]) ** 2 + (rows - centre_xy[1]) ** 2 <= radius ** 2).float()
    return disc.view(1, 1, size, size)


def test_residual_peak_boxes_the_brightest_unexplained_ball(monkeypatch):
    """`disc_box_centre: residual_peak`: the proposal is the peak of what is still unexplained (a
    ball already drawn is skipped), an untrained discovery centres its first box on that ball, and
    only the first frame's discovery uses it."""
    model = make_model(dataclasses.replace(TINY, disc_input="residual", disc_box_centre="residual_peak"))
    first, second = _ball((30, 12)), _ball((8, 40))
    empty = model._initial_objects(1, TINY.max_objects, torch.device("cpu"))
    residual = Residual(model.decoder, empty)
    centre = torch.tanh(residual.peak_shift(first + second))  # no object yet: either ball, not between them
    pixel = (centre + 1) * 25 - 0.5  # normalised pixel centre -> pixel index
    assert min((pixel - torch.tensor(b)).abs().max() for b in ([30.0, 12.0], [8.0, 40.0])) < 0.01
    residual.explained = first  # the first ball drawn: the peak moves to the second
    pixel = (torch.tanh(residual.peak_shift(first + second)) + 1) * 25 - 0.5
    torch.testing.assert_close(pixel, torch.tensor([[8.0, 40.0]]))
    trace = model._run(first.unsqueeze(1), 1, torch.Generator().manual_seed(0), TINY.max_objects)
    box = transform_where(trace.where[0, 0, 0], TINY.where_scale_max)  # slot 0 of frame 1: the first step
    assert trace.pres[0, 0, 0] > 0
    # The where sample adds the posterior's noise (std ~0.05 in logits, ~0.6 px): within 2 px of the ball.
    assert ((box[2:] + 1) * 25 - 0.5 - torch.tensor([30.0, 12.0])).abs().max() < 2.0
    # First frame only: later frames' discovery steps use the where head alone.
    calls: list[int] = []
    peak_shift = Residual.peak_shift
    monkeypatch.setattr(Residual, "peak_shift", lambda self, image: calls.append(1) or peak_shift(self, image))
    model._run(batch(b=2, t=3), 1, torch.Generator().manual_seed(0), TINY.max_objects)
    assert len(calls) == TINY.max_objects
