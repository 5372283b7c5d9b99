"""Reference predictors on generated 4-ball data: the scale in docs/reference.md, and crop coordinates."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rsqair_bench.config import ModelConfig
from rsqair_bench.data.ball_states import read_ball_states
from rsqair_bench.data.h5 import generate_file
from rsqair_bench.data.loader import BallsDataset
from rsqair_bench.evaluation.dynamics import ReferenceScorer
from rsqair_bench.evaluation.references import reference_frames
from rsqair_bench.models.sqair import SQAIR

SEQUENCES, FRAMES = 160, 10


def model_density(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """SQAIR's own per-pixel likelihood at the default output_std 0.3 (what the evaluator passes)."""
    return SQAIR.pixel_log_likelihood(SimpleNamespace(config=ModelConfig()), x, mu)


@pytest.fixture(scope="module")
def balls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    path = generate_file(tmp_path_factory.mktemp("refs") / "b4.h5", "4", {"test": SEQUENCES}, frames=FRAMES,
                         seed=3, progress=False)
    ds = BallsDataset(path, "test", FRAMES, 50)
    items = [ds[i] for i in range(SEQUENCES)]
    return path, {k: torch.stack([it[k] for it in items]) for k in ("features", "groups", "collisions")}


def test_ball_centres_land_on_their_own_pixels_in_the_crop(balls) -> None:
    path, batch = balls
    states = read_ball_states(path, "test", FRAMES, SEQUENCES, 50)
    assert states is not None and states.offset == 7
    centres = states.centres_px()  # [N, T, n, 2] (x, y) crop pixels
    groups = batch["groups"][:, :, 0].numpy()  # [N, T, 50, 50]
    col, row = np.floor(centres[..., 0]).astype(int), np.floor(centres[..., 1]).astype(int)
    inside = (col >= 0) & (col < 50) & (row >= 0) & (row < 50)
    n, t, k = np.nonzero(inside)
    ids = groups[n, t, row[inside], col[inside]]
    assert inside.sum() > 0.7 * inside.size
    assert (ids == k + 1).mean() > 0.99  # only an overlapping higher-index ball may cover a centre


def test_reference_scores_match_the_documented_scale(balls) -> None:
    path, batch = balls
    states = read_ball_states(path, "test", FRAMES, SEQUENCES, 50)
    scorer = ReferenceScorer(states, model_density)
    for lo in range(0, SEQUENCES, 64):  # in batches, as the evaluator does
        idx = np.arange(lo, min(lo + 64, SEQUENCES))
        scorer.add(batch["features"][idx], batch["groups"][idx], batch["collisions"][idx], idx)
    refs = scorer.result()
    data = {name: refs[name]["data_ll"] for name in refs}
    # docs/reference.md, 240 sequences: perfect +712.6, const-velocity +670.7, copy-last -117.7, empty -170.2
    assert data["perfect"] == pytest.approx(712.6, abs=0.1)
    assert 630 < data["const_velocity"] < 705
    assert -160 < data["copy_last"] < -80
    assert -200 < data["empty"] < -140
    assert data["empty"] < data["copy_last"] < data["const_velocity"] < data["perfect"]
    assert all(refs["perfect"]["relational_ll"] >= refs[n]["relational_ll"] for n in refs)
    # balls move ~3.2 px per frame; the oracle is off only where a collision or wall intervened
    assert 2.0 < refs["copy_last"]["centre_error_px"] < 4.5
    assert refs["const_velocity"]["centre_error_px"] < 1.0


def test_oracle_is_the_renderer_applied_to_moved_balls(balls) -> None:
    path, batch = balls
    states = read_ball_states(path, "test", FRAMES, SEQUENCES, 50)
    idx = np.arange(8)
    x = batch["features"][idx]
    preds = reference_frames(x, states, idx)
    assert preds["const_velocity"].shape == x[:, -1].shape
    assert set(preds["const_velocity"].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(preds["copy_last"], x[:, -2]) and torch.equal(preds["perfect"], x[:, -1])
    # where no ball met a ball or a wall between T-1 and T, the oracle reproduces frame T (up to float32 rounding)
    agree = (preds["const_velocity"] == x[:, -1]).flatten(1).float().mean(1)
    assert (agree > 0.99).float().mean() > 0.7
    assert reference_frames(x, None, idx)["const_velocity"] is None
