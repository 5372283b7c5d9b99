"""The noise-floor switches (docs/sqair.md, "Switches"): box centres that may leave the crop
(`where_shift_max`), the velocity rule on box centres (`prop_velocity_space: shift`) and the last
displacement in the relation's input (`relation_velocity`)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rsqair_bench.config import ConfigError, ModelConfig, check_model_config
from rsqair_bench.models.priors import PropagationPrior
from rsqair_bench.models.sqair import object_latent_dim
from rsqair_bench.models.stn import shift_logits, transform_where, where_shift
from tests.test_sqair import TINY, batch, make_model


def test_shift_range_reaches_past_the_frame_and_inverts():
    raw = torch.tensor([[0.0, 0.0, 3.0, -3.0]])
    assert transform_where(raw)[0, 2:].abs().max() < 1  # SQAIR: the centre stays inside the frame
    wide = transform_where(raw, shift_max=1.25)[0, 2:]
    assert wide.abs().min() > 1.2  # 1.25 * tanh(3) = 1.244: outside the frame
    centres = torch.tensor([[-1.1, 0.3], [0.0, 1.05]])
    back = where_shift(torch.cat([torch.zeros(2, 2), shift_logits(centres, 1.25)], -1), 1.25)
    assert torch.allclose(back, centres, atol=1e-6)


def test_shift_logits_clamp_keeps_far_centres_finite():
    logits = shift_logits(torch.tensor([5.0, -5.0]), 1.25)
    assert torch.isfinite(logits).all()
    assert torch.allclose(torch.tanh(logits).abs(), torch.tensor(0.98))


def _prior(space: str, shift_max: float) -> PropagationPrior:
    return PropagationPrior(gamma_dim=6, z_what=2, hidden=8, step_bias=0.0, mode="velocity",
                            velocity_space=space, shift_max=shift_max)


@pytest.mark.parametrize("shift_max", [1.0, 1.2])
def test_shift_space_rule_continues_a_straight_path_of_box_centres(shift_max: float):
    """With the delta at its initial zero, the prior's mean centre is 2 c_{t-1} - c_{t-2} exactly;
    the logit rule bends the same path towards the frame centre."""
    centres = torch.tensor([[[[0.50, -0.70]]], [[[0.62, -0.80]]]])  # c_{t-2}, c_{t-1}: [2, 1, 1, 2] (one object)
    where = [torch.cat([torch.zeros(1, 1, 2), shift_logits(c, shift_max)], -1) for c in centres]  # [1, 1, 4]
    expected = (2 * centres[1] - centres[0])[0]  # [1, 2]: (0.74, -0.90)
    for space, exact in (("shift", True), ("logit", False)):
        prior = _prior(space, shift_max)
        out = prior(torch.zeros(1, 1, 6), torch.ones(1, 1), prior.initial_state(1, 1), where[1],
                    torch.zeros(1, 1, 2), where[0])
        predicted = where_shift(out.where_loc, shift_max)[0]
        error = (predicted - expected).abs().max().item()
        assert (error < 1e-5) == exact, f"{space}: error {error}"


def test_logit_space_is_the_reference_rule_bit_for_bit():
    prior = _prior("logit", 1.0)
    before, now = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert torch.equal(prior.velocity_step(now, before), now - before)


def test_relation_velocity_appends_the_last_step_in_pixels():
    cfg = dataclasses.replace(TINY, relation_velocity=True, prop_prior="velocity")
    assert object_latent_dim(cfg) == object_latent_dim(TINY) + 2
    model = make_model(cfg)
    objects = model._initial_objects(1, 3, torch.device("cpu"))
    objects.where_before = torch.zeros(1, 3, 4)
    objects.where = torch.zeros(1, 3, 4)
    objects.where[0, 0, 2:] = shift_logits(torch.tensor([0.1, -0.2]))  # moved 0.1 and -0.2 half-frames
    z = model._relation_input(objects)
    assert z.shape == (1, 3, object_latent_dim(cfg))
    half = cfg.image_size / 2
    assert torch.allclose(z[0, 0, -2:], torch.tensor([0.1 * half, -0.2 * half]), atol=1e-4)
    assert torch.equal(z[0, 1:, -2:], torch.zeros(2, 2))  # not moved


def test_a_model_with_every_switch_trains_a_step():
    cfg = dataclasses.replace(TINY, where_shift_max=1.2, prop_prior="velocity", prop_velocity_space="shift",
                              relation_velocity=True)
    model = make_model(cfg)
    out = model(batch(t=4), particles=2, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("change, key", [
    ({"where_shift_max": 0.9}, "where_shift_max"),
    ({"where_shift_max": 2.5}, "where_shift_max"),
    ({"prop_velocity_space": "shift"}, "prop_velocity_space"),  # the default prior is 'rnn'
])
def test_bad_switch_values_are_refused_naming_the_key(change: dict, key: str):
    with pytest.raises(ConfigError, match=f"model_config.{key}"):
        check_model_config(dataclasses.replace(ModelConfig(), **change))
