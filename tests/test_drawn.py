"""Drawn centres (evaluation/drawn.py) and the `*_drawn` blocks (evaluation/prior_error.py) on hand-made
objects: a decoder whose glimpse draws its ball off the box centre, so the answer is known by construction."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from rsqair_bench.config import ModelConfig
from rsqair_bench.data.ball_states import BallStates
from rsqair_bench.evaluation.drawn import MIN_DRAWN_MASS, centres_of_mass, drawn_centres, locate, object_images
from rsqair_bench.evaluation.matching import box_centres
from rsqair_bench.evaluation.prior_error import FALLBACKS, PriorErrorScorer
from rsqair_bench.models.stn import where_to_boxes

CROP, GLIMPSE, SIZE, OFFSET = 50, 10, 64, 7  # crop px = data px - 7 (tests/test_prior_error.py's states)
BOX = GLIMPSE / CROP  # box scale: a box of 10 x 10 crop pixels, so the glimpse is pasted pixel for pixel
DRAWN_OFFSET = (2.0, 0.0)  # where the glimpse's blob sits, from the box centre, in px


class OffCentreGlimpse(nn.Module):
    """what -> a 10 x 10 glimpse with a 2 x 2 blob of intensity 5 at columns 6-7, rows 4-5: its centre of mass
    is at glimpse (7, 5), 2 px right of the box centre (5, 5). An object whose what[0] < 0 draws nothing."""

    def forward(self, what: Tensor) -> Tensor:
        glimpse = torch.zeros(GLIMPSE, GLIMPSE, dtype=what.dtype)
        glimpse[4:6, 6:8] = 5.0  # mass 20, above MIN_DRAWN_MASS
        on = (what[..., :1] >= 0).to(what.dtype)  # [..., 1]
        return on * glimpse.flatten()  # [..., g*g]


def off_centre_decoder() -> nn.Module:
    decoder = nn.Module()
    decoder.glimpse_size, decoder.image_size = GLIMPSE, CROP
    decoder.net = OffCentreGlimpse()
    decoder.output_scale = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
    return decoder


def where_at(cx: float, cy: float) -> list[float]:
    """Transformed where (sx, sy, tx, ty) of the 10 x 10 box centred at crop pixel (cx, cy)."""
    return [BOX, BOX, 2 * cx / CROP - 1, 2 * cy / CROP - 1]


def raw_where(cx: float, cy: float, config: ModelConfig) -> list[float]:
    """The raw where the model's transform (sigmoid scale times where_scale_max, tanh shift) maps to `where_at`."""
    sx, _, tx, ty = where_at(cx, cy)
    s = sx / config.where_scale_max
    return [math.log(s / (1 - s))] * 2 + [math.atanh(tx), math.atanh(ty)]


# ----------------------------------------------------------------------------- drawn.py
def test_drawn_centre_sits_on_the_ball_the_box_centre_off_it() -> None:
    decoder = off_centre_decoder()
    where = torch.tensor([[where_at(13.0, 25.0), where_at(30.0, 30.0)]], dtype=torch.float64)  # [1, 2, 4]
    what = torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64)  # object 1 draws nothing
    with torch.no_grad():
        images = object_images(decoder, what, where)  # [1, 2, H, W]
    assert images.shape == (1, 2, CROP, CROP) and float(images[0, 0].sum()) == pytest.approx(20.0)
    centres, mass = centres_of_mass(images)
    torch.testing.assert_close(centres[0, 0], torch.tensor([15.0, 25.0], dtype=torch.float64))  # the ball
    box = box_centres(where_to_boxes(where, (CROP, CROP)).numpy())  # [1, 2, 2]
    assert box[0, 0].tolist() == pytest.approx([13.0, 25.0])  # 2 px off the ball
    assert float(mass[0, 1]) == 0.0 and torch.isnan(centres[0, 1]).all()
    drawn = drawn_centres(decoder, what, where, torch.ones(1, 2, dtype=torch.bool))
    located, fell_back = locate(drawn, box)
    assert located[0, 0].tolist() == pytest.approx([15.0, 25.0]) and located[0, 1].tolist() == pytest.approx([30.0, 30.0])
    assert fell_back.tolist() == [[False, True]]


def test_drawn_centres_render_only_what_is_asked_in_chunks() -> None:
    """Objects not asked for are NaN with mass 0 (and fall back); chunking does not change a centre."""
    decoder = off_centre_decoder()
    where = torch.tensor([[where_at(10.0 + 3 * k, 20.0) for k in range(5)]], dtype=torch.float64)  # [1, 5, 4]
    what = torch.ones(1, 5, 1, dtype=torch.float64)
    asked = torch.tensor([[True, False, True, True, False]])
    drawn = drawn_centres(decoder, what, where, asked, chunk=2)
    assert np.isnan(drawn.centres[0, [1, 4]]).all() and drawn.mass[0, [1, 4]].tolist() == [0.0, 0.0]
    assert drawn.centres[0, [0, 2, 3], 0].tolist() == pytest.approx([12.0, 18.0, 21.0])
    assert drawn.mass[0, 0] == pytest.approx(20.0) and 20.0 > MIN_DRAWN_MASS


# ----------------------------------------------------------------------------- the blocks on a hand-built sequence
def hand_built() -> tuple[SimpleNamespace, Tensor, BallStates]:
    """One sequence of T = 4 frames, two balls, two slots:
    - ball 0 moves +2 px a frame along x (15, 17, 19, 21 at y 25); object id 0 draws it 2 px right of its
      box centre (13, 15, 17 inferred, 19 sampled at T); the prior's mean box is there too (the box centre
      of the object's next frame), so every box figure is 2 px off and every drawn one exact;
    - ball 1 stands still at (35, 40); object id 1 draws nothing (what < 0) from a box centred on it: its
      drawn centre falls back to that box centre, so its errors are 0 both ways.
    The prior's where scale is 0 on the box size and 0.05 (raw) on its shift: the sample moves the box and
    the drawn centre alike."""
    config = ModelConfig()
    t_count = 4
    ball0 = [(15.0 + 2 * t, 25.0) for t in range(t_count)]
    boxes0 = [(x - DRAWN_OFFSET[0], y) for x, y in ball0]
    ball1 = (35.0, 40.0)
    where = torch.tensor([[[where_at(*boxes0[t]), where_at(*ball1)] for t in range(t_count)]], dtype=torch.float64)
    what = torch.tensor([[1.0], [-1.0]], dtype=torch.float64).expand(1, t_count, 2, 1).clone()  # [1, T, K, 1]
    loc = torch.zeros(1, t_count, 2, 4, dtype=torch.float64)
    for t in range(1, t_count):  # frame t's prior, in frame t-1's slots: where the object is at t
        loc[0, t] = torch.tensor([raw_where(*boxes0[t], config), raw_where(*ball1, config)])
    scale = torch.zeros_like(loc)
    scale[..., 2:] = 0.05
    gen = SimpleNamespace(
        frames=torch.zeros(1, t_count, 1, CROP, CROP), what=what, where=where, pres=torch.ones(1, t_count, 2),
        boxes=where_to_boxes(where, (CROP, CROP)), ids=torch.tensor([0, 1]).expand(1, t_count, 2).clone(),
        prior_where_loc=loc, prior_where_scale=scale, prior_what_loc=what.clone(), prior_what_scale=torch.zeros_like(what))
    groups = torch.zeros(1, t_count, 1, CROP, CROP, dtype=torch.long)
    truth = np.array([[ball0[t], ball1] for t in range(t_count)])[None]  # [1, T, 2, 2] crop px
    for t in range(t_count):
        for ball, (x, y) in enumerate(truth[0, t]):
            groups[0, t, 0, int(y), int(x)] = ball + 1
    velocity = np.broadcast_to(np.array([[2.0, 0.0], [0.0, 0.0]]), truth.shape).copy()
    states = BallStates((truth + OFFSET) / SIZE, velocity / SIZE, np.ones((1, 2), bool), SIZE, CROP, 4 / SIZE)
    return gen, groups, states


def _scorer(states: BallStates, decoder: nn.Module | None) -> PriorErrorScorer:
    return PriorErrorScorer(states, ModelConfig(), torch.Generator().manual_seed(0), decoder,
                            torch.Generator().manual_seed(1))


def test_decomposition_and_one_step_by_both_locators_come_out_as_constructed() -> None:
    gen, groups, states = hand_built()
    scorer = _scorer(states, off_centre_decoder())
    scorer.add(gen, groups, np.array([0]), samples=1, one_step_below=1)
    out = scorer.result()
    box, drawn = out["prior_decomposition"], out["prior_decomposition_drawn"]
    assert box["rows"] == drawn["rows"] == {"all": 2, "interior": 2, "edge": 0, "outside": 0}
    for key in ("mean_error_px", "posterior_error_px", "velocity_rule_error_px"):
        assert box[key]["all"] == pytest.approx(1.0, abs=1e-6), key  # (2 + 0) / 2: the box is 2 px off ball 0
        assert drawn[key]["all"] == pytest.approx(0.0, abs=1e-6), key
    assert box["const_velocity_error_px"]["all"] == pytest.approx(0.0, abs=1e-9) == drawn["const_velocity_error_px"]["all"]
    assert drawn["fallback_posterior"]["all"] == drawn["fallback_sample"]["all"] == drawn["fallback_prior_mean"]["all"] == 0.5
    assert not any(key in box for key in FALLBACKS)
    one_box, one_drawn = out["one_step"], out["one_step_drawn"]
    assert one_box["rows"] == one_drawn["rows"] == {"all": 4, "colliding": 0, "free": 4}  # 2 balls x frames 3, 4
    assert one_box["mean_error_px"]["free"] == pytest.approx(1.0, abs=1e-6)
    assert one_drawn["mean_error_px"]["free"] == pytest.approx(0.0, abs=1e-6)
    assert one_drawn["fallback_prior_mean"]["all"] == 0.5 and one_drawn["min_drawn_mass"] == MIN_DRAWN_MASS


def test_the_drawn_sample_is_the_box_samples_where_draw() -> None:
    """The sample's shift noise moves the box and what it draws alike, so a drawn sample sits the blob's offset
    from the box sample: the two locators score one and the same draw."""
    from rsqair_bench.evaluation import prior_error

    gen, groups, states = hand_built()
    seen = []
    original = prior_error.DecompositionScorer.add

    def spy(self, rows):  # noqa: ANN001
        seen.append(rows)
        original(self, rows)

    prior_error.DecompositionScorer.add = spy
    try:
        _scorer(states, off_centre_decoder()).add(gen, groups, np.array([0]), samples=1, one_step_below=1)
    finally:
        prior_error.DecompositionScorer.add = original
    box, drawn = seen
    scored = slice(2, None)  # frames 3..T: the one-step score's, the only ones whose sample is rendered
    moved = box.prior.sample[0, scored, 0] - box.prior.mean[0, scored, 0]  # [2, 2], ball 0's object
    assert np.abs(moved).max() > 0.1  # the sample did move
    np.testing.assert_allclose(drawn.prior.sample[0, scored, 0] - box.prior.sample[0, scored, 0],
                               np.broadcast_to(DRAWN_OFFSET, moved.shape), atol=1e-6)
    np.testing.assert_array_equal(drawn.prior.sample[0, scored, 1], box.prior.sample[0, scored, 1])  # fell back
    assert drawn.fallback.sample[0, scored].tolist() == [[False, True]] * 2


def test_box_blocks_do_not_depend_on_the_drawn_ones() -> None:
    """Without a decoder the drawn blocks are null and the box blocks are the same numbers."""
    gen, groups, states = hand_built()
    results = []
    for decoder in (off_centre_decoder(), None):
        scorer = _scorer(states, decoder)
        scorer.add(gen, groups, np.array([0]), samples=1, one_step_below=1)
        results.append(scorer.result())
    assert results[1]["prior_decomposition_drawn"] is None and results[1]["one_step_drawn"] is None
    for key in ("prior_decomposition", "one_step"):
        assert results[0][key] == results[1][key], key


def test_prior_where_follows_the_models_shift_range() -> None:
    """With `where_shift_max` 1.25 a raw shift of atanh(0.9) puts the box centre at 0.9 x 1.25 half-crops
    right of the middle, 3.125 px outside the 50 px crop: the conversion the drawn renders share with the
    box figures (`where_from_raw`) reads the model's range, as `SQAIR.generate` does."""
    import dataclasses

    from rsqair_bench.evaluation.prior_error import where_centres_px, where_from_raw

    config = dataclasses.replace(ModelConfig(), where_shift_max=1.25)
    raw = torch.tensor([[0.0, 0.0, math.atanh(0.9), 0.0]], dtype=torch.float64)
    assert where_from_raw(raw, config)[0, 2].item() == pytest.approx(0.9 * 1.25)
    assert where_centres_px(raw, config, (CROP, CROP))[0].tolist() == pytest.approx([53.125, 25.0])
    assert where_centres_px(raw, ModelConfig(), (CROP, CROP))[0, 0].item() == pytest.approx(47.5)  # tanh alone
