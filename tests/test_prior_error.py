"""The prior's error decomposition at frame T and its one-step scores at every frame (evaluation/prior_error.py):
each figure on hand-made frames whose answer is known by construction, the model's prior record, the
evaluator's blocks on the committed checkpoint, the schema, the suite check and the report sections."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rsqair_bench.config import EvalConfig, EvalSplit, ModelConfig, SuiteConfig, load_config
from rsqair_bench.data.ball_states import BallStates
from rsqair_bench.data.h5 import generate_file
from rsqair_bench.errors import ConfigError, DataError
from rsqair_bench.evaluation.evaluate import evaluate_checkpoint, job_info_from_checkpoint
from rsqair_bench.evaluation.matching import box_centres
from rsqair_bench.evaluation.prior_error import (
    DecompositionScorer,
    FrameRows,
    OneStepScorer,
    PriorCentres,
    centre_std_px,
    crop_regions,
    tracked_balls,
    velocity_rule,
    where_centres_px,
)
from rsqair_bench.metrics import write_metrics
from rsqair_bench.metrics_schema import check_metrics
from rsqair_bench.registry import build_model
from rsqair_bench.report import significance
from rsqair_bench.report.write import write_report
from rsqair_bench.runner.suite import validate_suite

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "results" / "study" / "checkpoints" / "sqair-seed0.pt"
SIZE, CROP, OFFSET = 64, 50, 7  # the crop's pixel x is x_box * 64 - 7


def states_from_px(px: np.ndarray, velocity_px: np.ndarray | None = None) -> BallStates:
    """BallStates of true centres given in crop pixels, px [N, T, n, 2]; radius 4 px (the data set's)."""
    positions = (px + OFFSET) / SIZE
    velocities = np.zeros_like(px) if velocity_px is None else velocity_px / SIZE
    return BallStates(positions, velocities, np.ones((px.shape[0], px.shape[2]), bool), SIZE, CROP, 4 / SIZE)


# ----------------------------------------------------------------------------- hand-made frames
def test_crop_regions_follow_the_definition_at_their_boundaries() -> None:
    before = np.array([[10, 10], [4, 46], [3.9, 20], [0, 25], [-0.1, 25], [25, 25], [30, 49]], float)
    after = np.array([[12, 12], [4, 46], [5, 20], [1, 25], [1, 25], [25, 50.2], [30, 50]], float)
    regions = crop_regions(before, after, CROP)
    assert regions["interior"].tolist() == [True, True, False, False, False, False, False]
    assert regions["outside"].tolist() == [False, False, False, False, True, True, False]  # on the edge: inside
    assert regions["edge"].tolist() == [False, False, True, True, False, False, True]


def _three_frames() -> tuple[FrameRows, BallStates]:
    """One sequence, frames 1-3 (T = 3), three balls and four object slots. By construction:
    ball 0 interior, tracked by id 5 (slot 0 throughout); ball 1 outside, tracked by id 7, discovered at
    frame 2 (no velocity) and in slot 2 at frame 3; ball 2 at the edge, its object (id 9) dropped at T,
    so not a row; id 11 is a stray far from every ball."""
    truth = np.array([[[20, 20], [1, 30], [46, 10]],
                      [[22, 20], [-0.5, 30], [46.5, 10]],
                      [[24, 20], [-2, 30], [47, 10]]], float)[None]  # [1, T, n, 2]
    velocity = np.broadcast_to(np.array([[2, 0], [-1.5, 0], [0.5, 0]], float), truth.shape).copy()
    centres = np.zeros((1, 3, 4, 2))
    present = np.zeros((1, 3, 4), bool)
    ids = np.full((1, 3, 4), -1)
    for t, slot, ident, xy in [(0, 0, 5, (20, 21)), (1, 0, 5, (22, 21)), (2, 0, 5, (25, 21)),
                               (1, 1, 7, (0.5, 30)), (2, 2, 7, (0, 30)),
                               (0, 2, 9, (46, 12)), (1, 2, 9, (46.5, 12)),
                               (1, 3, 11, (40, 40)), (2, 1, 11, (40, 40))]:
        centres[0, t, slot], present[0, t, slot], ids[0, t, slot] = xy, True, ident
    mean, std = np.zeros((1, 3, 4, 2)), np.ones((1, 3, 4, 2))
    mean[0, 2, 0], std[0, 2, 0] = (24, 21), (0.5, 0.25)  # the prior of id 5 (its slot at frame 2)
    mean[0, 2, 1], std[0, 2, 1] = (1, 30), (1.0, 1.0)  # the prior of id 7
    rows = FrameRows(centres, present, ids, PriorCentres(mean, std, mean.copy()), truth, np.ones((1, 3, 3), bool),
                     np.array([0]))
    return rows, states_from_px(truth, velocity)


def test_tracked_balls_need_an_object_on_the_ball_at_t_minus_1_and_its_id_at_t() -> None:
    rows, _ = _three_frames()
    tracked = tracked_balls(rows.centres, rows.present, rows.ids, rows.truth, rows.visible, 2)
    assert sorted(zip(tracked.ball, tracked.before, tracked.after)) == [(0, 0, 0), (1, 1, 2)]
    hidden = rows.visible.copy()
    hidden[0, 2, 0] = False  # ball 0 not seen at T: not a candidate
    assert tracked_balls(rows.centres, rows.present, rows.ids, rows.truth, hidden, 2).ball.tolist() == [1]


def test_velocity_rule_uses_the_same_id_two_frames_back_or_no_velocity() -> None:
    rows, _ = _three_frames()
    tracked = tracked_balls(rows.centres, rows.present, rows.ids, rows.truth, rows.visible, 2)
    rule = velocity_rule(rows.centres, rows.present, rows.ids, tracked, 2)
    by_ball = dict(zip(tracked.ball.tolist(), rule.tolist()))
    assert by_ball[0] == [24, 21]  # 2 (22, 21) - (20, 21)
    assert by_ball[1] == [0.5, 30]  # discovered at frame 2: its own centre, as the model's where_before


def test_decomposition_figures_on_hand_made_frames() -> None:
    rows, states = _three_frames()
    scorer = DecompositionScorer(states)
    scorer.add(rows)
    out = scorer.result()
    assert out["frame"] == 3 and out["rows"] == {"all": 2, "interior": 1, "edge": 0, "outside": 1}
    expected = {  # interior (ball 0), outside (ball 1)
        "sample_error_px": (math.sqrt(2), 2.0), "mean_error_px": (1.0, 3.0), "where_std_px_x": (0.5, 1.0),
        "where_std_px_y": (0.25, 1.0), "posterior_error_px": (1.0, 1.0), "velocity_rule_error_px": (1.0, 2.5),
        "const_velocity_error_px": (0.0, 0.0),
    }
    for key, (interior, outside) in expected.items():
        assert out[key]["interior"] == pytest.approx(interior, abs=1e-9), key
        assert out[key]["outside"] == pytest.approx(outside, abs=1e-9), key
        assert out[key]["all"] == pytest.approx((interior + outside) / 2, abs=1e-9), key
        assert out[key]["edge"] is None, key


def test_one_step_counts_colliding_balls_per_frame() -> None:
    """Two balls, four frames; they touch (8 px apart, 2r) at frame 4 only, so frame 3 scores them free and
    frame 4 colliding; frames 1-2 are not scored. The prior mean is 1 px off in x, std 1 px."""
    truth = np.array([[[10, 20], [30, 20]], [[12, 20], [28, 20]], [[14, 20], [26, 20]], [[17, 20], [25, 20]]], float)[None]
    t_count, k = truth.shape[1], 2
    centres = truth.copy()  # the posterior sits on the balls
    ids = np.broadcast_to(np.array([3, 4]), (1, t_count, k)).copy()
    mean = np.concatenate([truth[:, :1], truth[:, 1:] + [1.0, 0.0]], 1)
    std = np.ones_like(truth)
    sample = mean + [0.0, 2.0]
    rows = FrameRows(centres, np.ones((1, t_count, k), bool), ids, PriorCentres(mean, std, sample), truth,
                     np.ones((1, t_count, 2), bool), np.array([0]))
    scorer = OneStepScorer(states_from_px(truth))
    scorer.add(rows)
    out = scorer.result()
    assert out["frames"] == [3, 4] and out["sequences"] == 1
    assert [(f["frame"], f["rows"], f["colliding_rows"]) for f in out["by_frame"]] == [(3, 2, 0), (4, 2, 2)]
    assert out["rows"] == {"all": 4, "colliding": 2, "free": 2}
    assert out["mean_error_px"] == pytest.approx({"all": 1.0, "colliding": 1.0, "free": 1.0})
    assert out["sample_error_px"]["all"] == pytest.approx(math.sqrt(5))
    assert out["log_density"]["colliding"] == pytest.approx(-0.5 - math.log(2 * math.pi))
    assert out["log_density_median"]["free"] == pytest.approx(-0.5 - math.log(2 * math.pi))


def test_centre_std_is_the_spread_of_decoded_samples() -> None:
    """The linearised px std against the std of many decoded draws (no assumption on the transform)."""
    config = ModelConfig()
    loc = torch.tensor([[0.2, -0.4, 0.3, -1.2], [0.0, 0.0, 2.0, 0.1]], dtype=torch.float64)
    scale = torch.tensor([[0.1, 0.1, 0.02, 0.05], [0.3, 0.3, 0.01, 0.03]], dtype=torch.float64)
    draws = loc + scale * torch.randn(200_000, *loc.shape, generator=torch.Generator().manual_seed(0), dtype=loc.dtype)
    empirical = where_centres_px(draws, config, (CROP, CROP)).std(0)  # [2, 2]
    torch.testing.assert_close(centre_std_px(loc, scale, config, (CROP, CROP)), empirical, rtol=0.02, atol=1e-4)


# ----------------------------------------------------------------------------- the model's record
def test_generation_records_the_prior_in_the_previous_frames_slots() -> None:
    """With the residual prior untrained (delta exactly 0), frame t's prior loc is the where of frame t-1's
    objects; decoded with `where_centres_px` it must sit on those objects' box centres, slot by slot, for
    the inferred frames and for the frame sampled from the prior."""
    cfg = ModelConfig(max_objects=3, z_what=3, glimpse_size=4, n_hidden=8, n_layers=1, image_size=16,
                      prop_prior="residual")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("sqair", cfg).eval()
    x = (torch.rand(2, 5, 1, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.8).float()
    gen = model.generate(x, n_observed=4, generator=torch.Generator().manual_seed(2), particles=3)
    assert gen.prior_where_loc.shape == gen.prior_where_scale.shape == (2, 5, 3, 4)
    assert torch.all(gen.prior_where_loc[:, 0] == 0) and torch.all(gen.prior_where_scale[:, 1:] > 0)
    decoded = where_centres_px(gen.prior_where_loc[:, 1:], model.config, (16, 16))  # [2, 4, K, 2]
    torch.testing.assert_close(decoded, box_centres(gen.boxes[:, :-1]), rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- the evaluator's blocks
@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prior")
    return generate_file(root / "b4.h5", "4", {"test": 7}, frames=5, seed=3, progress=False)


def _evaluate(data: Path, **split) -> dict:
    return evaluate_checkpoint(CHECKPOINT, str(data), EvalSplit(data="b4", frames=5, max_objects=4, **split),
                               EvalConfig(samples=2, particles=2, batch_size=2), device="cpu", seed=0)


def test_evaluation_adds_both_blocks_and_leaves_the_papers_scores_alone(small_file: Path) -> None:
    plain = _evaluate(small_file, sequences=3)
    wide = _evaluate(small_file, sequences=3, onestep_sequences=7)
    for key in ("data_ll", "relational_ll", "iwae_bound", "matching", "references", "prior_decomposition"):
        assert wide[key] == plain[key], key  # the extra pass draws from streams of its own
    one = wide["one_step"]
    assert (one["sequences"], one["extra_sequences"], plain["one_step"]["sequences"]) == (7, 4, 3)
    assert one["frames"] == [3, 5] and [f["frame"] for f in one["by_frame"]] == [3, 4, 5]
    assert one["rows"]["all"] == sum(f["rows"] for f in one["by_frame"]) > plain["one_step"]["rows"]["all"]
    assert one["rows"]["colliding"] == sum(f["colliding_rows"] for f in one["by_frame"])
    assert one["rows"]["all"] == one["rows"]["colliding"] + one["rows"]["free"]
    parts = wide["prior_decomposition"]
    assert parts["rows"]["all"] == sum(parts["rows"][g] for g in ("interior", "edge", "outside")) > 0
    assert parts["rows"]["all"] <= wide["matching"]["sampled"]["tracked"]["tracked_balls"]
    assert _evaluate(small_file, sequences=3, onestep_sequences=2)["one_step"]["sequences"] == 2


def test_schema_checks_the_new_blocks(small_file: Path, tmp_path: Path) -> None:
    entry = _evaluate(small_file, sequences=2)
    written = write_metrics(tmp_path / "metrics.json", job_info_from_checkpoint(CHECKPOINT, device="cpu"),
                            {"b4/test": entry})
    bad = copy.deepcopy(written)
    bad["splits"]["b4/test"]["one_step"]["rows"]["colliding"] = "many"
    with pytest.raises(DataError, match=r"splits\.b4/test\.one_step\.rows\.colliding: expected a finite number"):
        check_metrics(bad, tmp_path / "metrics.json")


def test_validate_refuses_more_one_step_sequences_than_the_split_holds(tmp_path: Path) -> None:
    doc = {"name": "t", "models": ["sqair"], "seeds": [0],
           "data": {"balls4": {"path": "data/b4.h5", "frames": 12,
                               "splits": {"training": 10, "validation": 5, "test": 50}}},
           "train": {"curriculum_max": 10, "batch_size": 4},
           "eval": {"splits": {"balls4/test": {"data": "balls4", "sequences": 20, "onestep_sequences": 51}}}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"eval\.splits\.balls4/test\.onestep_sequences: 51 sequences but "
                                          r"data\.balls4\.splits\.test has 50"):
        validate_suite(load_config(SuiteConfig, path), path)
    doc["eval"]["splits"]["balls4/test"]["onestep_sequences"] = 50
    path.write_text(yaml.safe_dump(doc))
    validate_suite(load_config(SuiteConfig, path), path)


# ----------------------------------------------------------------------------- the report
def test_report_shows_both_sections_and_the_colliding_error_with_its_mdd(small_file: Path, tmp_path: Path) -> None:
    entry = _evaluate(small_file, sequences=2)
    colliding = {"sqair": [1.9, 2.0, 2.2], "sqair+in": [1.7, 1.75, 1.9]}
    for model, values in colliding.items():
        for seed, value in enumerate(values):
            split = copy.deepcopy(entry)
            split["one_step"]["mean_error_px"]["colliding"] = value
            info = job_info_from_checkpoint(CHECKPOINT, device="cpu") | {"seed": seed, "model": model,
                                                                         "paper_name": model}
            out = tmp_path / "results" / model / f"seed{seed}"
            out.mkdir(parents=True)
            write_metrics(out / "metrics.json", info, {"balls4/test": split})
    write_report(tmp_path / "results")
    report = tmp_path / "results" / "report"
    dynamics = (report / "dynamics.md").read_text()
    assert "taken apart" in dynamics and "velocity rule" in dynamics and "One-step prediction" in dynamics
    mdd = significance.minimum_detectable_difference(colliding["sqair"], colliding["sqair+in"])
    one_step = dynamics.split("# One-step prediction")[1].splitlines()
    base = next(line for line in one_step if line.startswith("| sqair "))
    row = next(line for line in one_step if line.startswith("| sqair+in "))
    assert "(baseline)" in base and f"| {mdd:.2f} " in row and f"| {np.mean(colliding['sqair+in']):.2f} ± " in row
    assert "one-step prior mean error px, colliding balls" in (report / "significance.md").read_text()
    table = (report / "one_step.csv").read_text().splitlines()
    assert "colliding ball-frames" in table[0] and len(table) == 3
