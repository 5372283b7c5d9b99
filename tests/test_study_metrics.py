"""The study's measures: colliding/free centre errors, the relation knock-out, the relation's output size
by neighbours, the minimum detectable difference, and re-evaluation of finished jobs (docs/metrics.md)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rsqair_bench.baselines.interaction import InteractionNetwork
from rsqair_bench.baselines.rmc import RelationalMemoryCore
from rsqair_bench.baselines.rnn import ObjectGRU

from rsqair_bench.config import SuiteConfig, load_config
from rsqair_bench.data.ball_states import BallStates
from rsqair_bench.errors import ConfigError
from rsqair_bench.evaluation.matching import ErrorTally, TrackedTally
from rsqair_bench.evaluation.relation_use import RelationProbe
from rsqair_bench.models.knockout import AloneInScene
from rsqair_bench.report.relations import knockout_drops
from rsqair_bench.report.significance import compare, minimum_detectable_difference
from rsqair_bench.runner.run import run_suite
from rsqair_bench.runner.suite import validate_suite
from tests.test_runner import FAKES


# ----------------------------------------------------------------------------- colliding / free
def _states(positions: np.ndarray, radius: float = 0.0625, size: int = 64) -> BallStates:
    """positions [N, T, n, 2] box units; every ball active."""
    n_seq, _, n, _ = positions.shape
    return BallStates(positions, np.zeros_like(positions), np.ones((n_seq, n), bool), size, 50, radius)


def test_colliding_balls_are_those_in_contact_at_frame_t_minus_1_or_t() -> None:
    r = 0.0625  # 4 px
    pos = np.zeros((1, 3, 4, 2))
    pos[0, :, :, 1] = 0.5
    pos[0, :, 0, 0], pos[0, :, 1, 0] = 0.2, 0.2 + 2 * r  # balls 0 and 1 touch in every frame
    pos[0, :, 2, 0] = 0.5  # ball 2 touches ball 3 only at the last frame (T)
    pos[0, :, 3, 0] = [0.9, 0.9, 0.5 + 2 * r]
    pos[0, 0, 1, 0] = 0.6  # frame 1 (not T-1 or T): ball 1 elsewhere, which must not matter
    colliding = _states(pos, r).colliding(np.array([0]), frames=3)
    assert colliding.tolist() == [[True, True, True, True]]
    pos[0, 2, 3, 0] = 0.9  # now ball 3 never touches; ball 2 neither
    assert _states(pos, r).colliding(np.array([0]), frames=3).tolist() == [[True, True, False, False]]


def test_error_tally_splits_capped_errors_into_colliding_and_free() -> None:
    tally = ErrorTally(cap=10.0)
    balls = np.array([[0.0, 0.0], [20.0, 0.0], [40.0, 0.0]])
    objects = np.array([[3.0, 4.0], [20.0, 1.0]])  # 5 px from ball 0, 1 px from ball 1, none on ball 2 (capped 10)
    tally.add(objects, balls, np.array([True, False, True]))
    assert tally.mean() == pytest.approx((5 + 1 + 10) / 3)
    assert tally.group_mean("colliding") == pytest.approx((5 + 10) / 2) and tally.group_count("colliding") == 2
    assert tally.group_mean("free") == pytest.approx(1.0) and tally.group_count("free") == 1
    empty = ErrorTally()
    empty.add(objects, balls)  # no mask: no group counted
    assert empty.group_mean("colliding") is None and empty.group_count("free") == 0


def test_tracked_tally_splits_by_contact() -> None:
    tally = TrackedTally()
    before = np.array([[0.0, 0.0], [20.0, 0.0]])
    after = np.array([[2.0, 0.0], [20.0, 3.0]])
    ids = np.array([7, 8])
    balls_before, balls_after = before.copy(), np.array([[1.0, 0.0], [20.0, 1.0]])
    tally.add(before, ids, after, ids, balls_before, balls_after, np.array([False, True]))
    out = tally.summary()
    assert out["prior_error_px_free"] == pytest.approx(1.0) and out["copy_last_error_px_free"] == pytest.approx(1.0)
    assert out["prior_error_px_colliding"] == pytest.approx(2.0) and out["tracked_balls_colliding"] == 1


# ----------------------------------------------------------------------------- knock-out
class NeighbourSum(torch.nn.Module):
    """A fake relation: gamma_k = [z_k; sum of the other present z; steps seen]; state counts steps per slot."""

    obj_dim, out_dim = 2, 5

    def initial_state(self, batch: int, num_objects: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(batch, num_objects)

    def forward(self, z: torch.Tensor, present: torch.Tensor, state: torch.Tensor | None):
        state = self.initial_state(*z.shape[:2], z.device) if state is None else state
        masked = torch.where(present.unsqueeze(-1), z, torch.zeros(()))
        others = masked.sum(1, keepdim=True) - masked  # [B, K, D]
        state = torch.where(present, state + 1, state)
        gamma = torch.cat([z, others, state.unsqueeze(-1)], -1)
        return torch.where(present.unsqueeze(-1), gamma, torch.zeros(())), state


def test_knockout_gives_each_object_the_output_of_a_scene_where_it_is_alone() -> None:
    z = torch.arange(12.0).view(2, 3, 2)
    present = torch.tensor([[True, True, False], [True, True, True]])
    wrapped = AloneInScene(NeighbourSum())  # type: ignore[arg-type]
    gamma, state = wrapped(z, present, wrapped.initial_state(2, 3, torch.device("cpu")))
    assert torch.equal(gamma[..., :2], torch.where(present.unsqueeze(-1), z, torch.zeros(())))
    assert torch.count_nonzero(gamma[..., 2:4]) == 0  # no neighbours: the sum over others is zero
    assert torch.equal(state, present.float())  # each slot's own state advanced once, in the [B, K] layout
    gamma, state = wrapped(z, present, state)
    assert torch.equal(state, 2 * present.float()) and torch.equal(gamma[..., 4], state * present)


@pytest.mark.parametrize("relation", [InteractionNetwork(4), RelationalMemoryCore(4, heads=2, head_size=3), ObjectGRU(4, 6)])
def test_knockout_of_each_paper_relation_equals_running_it_on_one_object(relation: torch.nn.Module) -> None:
    torch.manual_seed(0)
    z, present = torch.randn(2, 3, 4), torch.tensor([[True, True, True], [True, False, True]])
    state = relation.initial_state(2, 3, torch.device("cpu"))
    gamma, _ = AloneInScene(relation)(z, present, state)
    for k in range(3):
        only = torch.zeros_like(present)
        only[:, k] = present[:, k]
        alone, _ = relation(z, only, state)
        assert torch.allclose(gamma[:, k], alone[:, k], atol=1e-6)
    full, _ = relation(z, present, state)
    assert not torch.allclose(full, gamma, atol=1e-4)  # with neighbours the output differs: the test can fail


def test_relation_probe_groups_output_size_by_neighbours() -> None:
    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relation = InteractionNetwork(2)

    holder = Holder()
    z = torch.randn(2, 3, 2)
    present = torch.tensor([[True, True, True], [True, False, False]])
    with RelationProbe(holder) as probe:
        gamma, _ = holder.relation(z, present, None)
    context = gamma[..., 2:].double().norm(dim=-1)
    result = probe.result()["by_neighbours"]
    assert result["2"]["objects"] == 3 and result["2"]["mean_norm"] == pytest.approx(float(context[0].mean()))
    assert result["0"] == {"mean_norm": 0.0, "objects": 1}
    holder.relation(z, present, None)  # after the block: not recorded
    assert probe.result()["by_neighbours"]["2"]["objects"] == 3


def test_knockout_drops_are_full_minus_knocked_out() -> None:
    run = {"splits": {"s": {
        "data_ll": {"mean": 0.0, "per_sample": [10.0, 12.0]}, "relational_ll": {"mean": -1.0, "per_sample": [-1.0, -1.0]},
        "matching": {"sampled": {"centre_error_px": {"per_sample": [2.0, 2.0]},
                                 "centre_error_px_colliding": {"per_sample": [3.0, 5.0]}}},
        "knockout": {"data_ll": {"per_sample": [4.0, 6.0]}, "relational_ll": {"per_sample": [-3.0, -3.0]},
                     "centre_error_px": {"per_sample": [2.5, 2.5]}, "centre_error_px_colliding": {"per_sample": [6.0, 6.0]}}}}}
    drops = knockout_drops(run, "s")
    assert drops == {"data LL drop": 6.0, "relational LL drop": 2.0, "prior err. increase px": 0.5,
                     "prior err. increase px, colliding": 2.0}
    assert set(knockout_drops({"splits": {}}, "s").values()) == {None}


# ----------------------------------------------------------------------------- minimum detectable difference
def test_minimum_detectable_difference_matches_the_textbook_formula() -> None:
    a, b = [-1.0, -0.5, 0.0, 0.5, 1.0], [9.0, 9.5, 10.0, 10.5, 11.0]  # sd 0.7906 each, n 5
    sd2 = np.var(a, ddof=1)
    # equal n and sd: df = 2(n - 1) = 8; t_{0.975, 8} = 2.3060, t_{0.80, 8} = 0.8889 (t tables)
    expected = (2.3060 + 0.8889) * math.sqrt(2 * sd2 / 5)
    assert minimum_detectable_difference(a, b) == pytest.approx(expected, abs=2e-3)
    rng = np.random.default_rng(0)  # many seeds: the normal approximation (z_.975 + z_.8) * se
    big_a, big_b = rng.normal(0, 2, 4000), rng.normal(0, 3, 4000)
    se = math.sqrt(big_a.var(ddof=1) / 4000 + big_b.var(ddof=1) / 4000)
    assert minimum_detectable_difference(big_a, big_b) == pytest.approx((1.95996 + 0.84162) * se, rel=1e-3)
    assert math.isnan(minimum_detectable_difference([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]))
    assert compare(a, b).mdd == pytest.approx(expected, abs=2e-3)
    assert math.isnan(compare(a[:2], b[:2]).mdd)  # below MIN_SEEDS nothing is estimated


# ----------------------------------------------------------------------------- re-evaluation of finished jobs
def _suite_file(tmp_path: Path, **eval_changes: object) -> Path:
    doc = {
        "name": "fake", "models": ["sqair"], "seeds": [0], "results": str(tmp_path / "results"),
        "data": {"balls4": {"path": str(tmp_path / "b4.h5"), "frames": 12,
                            "splits": {"training": 10, "validation": 5, "test": 5}}},
        "train": {"curriculum_max": 10, "batch_size": 4},
        "eval": {"samples": 2, "splits": {"balls4/test": {"data": "balls4"}}, **eval_changes},
    }
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _run(path: Path, **fakes: object) -> str:
    out = io.StringIO()
    run_suite(validate_suite(load_config(SuiteConfig, path), path), out=out, report=False, **{**FAKES, **fakes})
    return out.getvalue()


def _calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "results" / "fake" / "calls.log").read_text().splitlines()


def test_changed_eval_settings_are_evaluated_again_from_best_pt_without_training(tmp_path: Path) -> None:
    path = _suite_file(tmp_path)
    _run(path)
    assert _calls(tmp_path) == ["train-start sqair/seed0", "train-end sqair/seed0", "eval:balls4 sqair/seed0"]
    assert "1 already done" in _run(path)  # nothing changed: skipped, nothing called
    assert len(_calls(tmp_path)) == 3
    _suite_file(tmp_path, samples=3)
    text = _run(path)
    assert "1 to evaluate again" in text and "samples changed" in text
    assert _calls(tmp_path)[3:] == ["eval:balls4 sqair/seed0"]  # evaluated, not trained
    metrics = json.loads((tmp_path / "results/fake/sqair/seed0/metrics.json").read_text())
    assert metrics["splits"]["balls4/test"]["samples"] == 3 and metrics["train"]["iterations"] == 2
    two = {"balls4/test": {"data": "balls4"}, "balls4/val": {"data": "balls4", "split": "validation"}}
    _suite_file(tmp_path, samples=3, splits=two)
    _run(path)
    assert _calls(tmp_path)[4:] == ["eval:balls4 sqair/seed0"]  # only the new split
    metrics = json.loads((tmp_path / "results/fake/sqair/seed0/metrics.json").read_text())
    assert set(metrics["splits"]) == {"balls4/test", "balls4/val"}


def test_an_older_evaluation_version_is_evaluated_again(tmp_path: Path) -> None:
    path = _suite_file(tmp_path)
    _run(path)
    metrics_path = tmp_path / "results/fake/sqair/seed0/metrics.json"
    metrics = json.loads(metrics_path.read_text())
    del metrics["splits"]["balls4/test"]["settings"]  # as written before evaluation versions existed
    metrics_path.write_text(json.dumps(metrics))
    assert "evaluated by an older version" in _run(path)
    assert _calls(tmp_path)[3:] == ["eval:balls4 sqair/seed0"]


def fake_prepare_with_checksum(ds):  # noqa: ANN001, ANN201 - module level: picklable
    return Path(ds.path)


def test_finished_job_trained_on_a_regenerated_data_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rsqair_bench.runner.run as runner

    path = _suite_file(tmp_path)
    monkeypatch.setattr(runner, "data_checksum", lambda p: "aaaa")
    _run(path)
    monkeypatch.setattr(runner, "data_checksum", lambda p: "bbbb")  # same path, other content
    with pytest.raises(ConfigError, match="trained on another data file"):
        _run(path)
    assert len(_calls(tmp_path)) == 3  # nothing ran


# ----------------------------------------------------------------------------- end to end on a real model
def test_evaluation_of_a_relational_model_has_the_study_blocks(tmp_path: Path) -> None:
    """A tiny R-SQAIR(IN) trained 2 steps on generated balls: every new block is filled, on real ball states."""
    from rsqair_bench.config import EvalConfig, EvalSplit, JobConfig, ModelConfig, TrainConfig
    from rsqair_bench.data.h5 import generate_file
    from rsqair_bench.evaluation.evaluate import evaluate_checkpoint
    from rsqair_bench.training.loop import train_job

    data = generate_file(tmp_path / "b.h5", "4", {"training": 4, "validation": 2, "test": 6}, 6, 64, 0, False)
    job = JobConfig(model="sqair+in", seed=0, train_data=str(data), device="cpu",
                    model_config=ModelConfig(n_hidden=16, glimpse_size=5),
                    train=TrainConfig(batch_size=2, particles=2, max_iterations=2, curriculum_start=3,
                                      curriculum_max=3, validate_every=2, checkpoint_every=2, torch_threads=1))
    train_job(job, tmp_path / "job", progress=False)
    entry = evaluate_checkpoint(tmp_path / "job" / "best.pt", str(data), EvalSplit(data=str(data), frames=5),
                                EvalConfig(samples=2, particles=2, batch_size=6), device="cpu", knockout=True)
    ko = entry["knockout"]
    assert len(ko["data_ll"]["per_sample"]) == 2 and set(ko) >= {"relational_ll", "centre_error_px_colliding"}
    sampled = entry["matching"]["sampled"]
    assert sampled["colliding_balls"] + sampled["free_balls"] == 6 * 4  # every ball of frame T in one group
    oracle = entry["references"]["const_velocity"]
    assert oracle["centre_error_px_free"] is not None
    neighbours = entry["relation_output"]["by_neighbours"]
    assert neighbours and all(v["objects"] > 0 for v in neighbours.values())


def test_in_mean_averages_the_effects_where_in_sums_them() -> None:
    """in_mean (a remedy behind its own name) = in's effect sum divided by the number of present neighbours."""
    from rsqair_bench.baselines.interaction import InteractionNetworkMean

    torch.manual_seed(0)
    summed, mean = InteractionNetwork(4), InteractionNetworkMean(4)
    mean.load_state_dict(summed.state_dict())
    z = torch.randn(2, 4, 4)
    present = torch.tensor([[True, True, True, True], [True, True, False, False]])
    e_sum, e_mean = summed(z, present, None)[0][..., 4:], mean(z, present, None)[0][..., 4:]
    assert torch.allclose(e_mean[0], e_sum[0] / 3) and torch.allclose(e_mean[1, :2], e_sum[1, :2] / 1)
    assert torch.count_nonzero(e_mean[1, 2:]) == 0


# ----------------------------------------------------------------------------- which jobs learned
def test_learning_note_lists_jobs_below_the_bar_with_their_curve(tmp_path: Path) -> None:
    from rsqair_bench.report.learning import learning_note

    def run(seed: int, model_ll: float, bounds: list[float]) -> dict:
        job = tmp_path / f"seed{seed}"
        job.mkdir()
        rows = "\n".join(f"{50 * (i + 1)},3,{b},0,0,0,0" for i, b in enumerate(bounds))
        (job / "train_log.csv").write_text("iteration,seq_len,iwae_bound,loss,lr,seconds,sequences_per_s\n" + rows + "\n")
        split = {"data_ll": {"mean": model_ll}, "references": {"copy_last": {"data_ll": -100.0}},
                 "matching": {"inferred": {"coverage": 0.5, "duplicates": 0.01}}}
        return {"model": "sqair", "paper_name": "SQAIR", "seed": seed, "splits": {"balls4/test": split}, "_dir": job}

    runs = [run(0, 250.0, [-500, 100, 2000]), run(1, -90.0, [-500, -400, -450]), run(2, 50.0, [-500, 3000, 900])]
    note = learning_note(runs)
    assert "1 of 3 jobs beat copy-last by 300 nats or more (smallest margin +10.0)" in note
    assert "SQAIR seed 1: +10.0 nats; never took off (bound -450 at iteration 150); coverage 0.50" in note
    assert "SQAIR seed 2: +150.0 nats; took off at iteration 100; collapsed after iteration 100 (bound 3000 -> 900)" in note
    assert "seed 0" not in note
    assert learning_note([{"model": "m", "seed": 0, "splits": {}}]) == ""
