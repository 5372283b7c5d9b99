"""The evaluator's dynamics blocks end to end: references, object-ball matching, the trained
horizon, importance-resampling particles, and their rows in the report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from scipy import ndimage
from torch import Tensor

from rsqair_bench.checkpoint import load_checkpoint
from rsqair_bench.config import EvalConfig, EvalSplit, ModelConfig
from rsqair_bench.data.h5 import generate_file
from rsqair_bench.evaluation.evaluate import evaluate_checkpoint, job_info_from_checkpoint
from rsqair_bench.metrics import write_metrics
from rsqair_bench.models.sqair import Generation
from rsqair_bench.report.write import write_report
from rsqair_bench.training.loop import train_job
from tests.fakes import FakeSQAIR, fake_factory, tiny_job, write_fake_h5


class CentroidModel(FakeSQAIR):
    """Finds balls as connected components: one box per component centroid on observed frames;
    for unobserved frames it repeats the last observed frame and its boxes (a copy-last model)."""

    particles_seen: list[int] = []

    def generate(self, x: Tensor, n_observed: int, max_objects: int | None = None,
                 generator: torch.Generator | None = None, particles: int = 1) -> Generation:
        CentroidModel.particles_seen.append(particles)
        b, t = x.shape[:2]
        k = max_objects or self.config.max_objects
        boxes, pres = torch.zeros(b, t, k, 4), torch.zeros(b, t, k)
        for i in range(b):
            for s in range(t):
                image = x[i, min(s, n_observed - 1), 0].numpy() > 0.5
                labels, count = ndimage.label(image)
                for j, (r, c) in enumerate(ndimage.center_of_mass(image, labels, range(1, count + 1))[:k]):
                    cx, cy = c + 0.5, r + 0.5  # pixel index -> continuous pixel coordinates
                    boxes[i, s, j] = torch.tensor([cx - 4, cy - 4, cx + 4, cy + 4])
                    pres[i, s, j] = 1.0
        frames = x.clone()
        frames[:, n_observed:] = x[:, n_observed - 1 : n_observed]
        z = torch.zeros(b, t, k)
        fields = dict(frames=frames, what=z[..., None].expand(b, t, k, self.config.z_what),
                      where=z[..., None].expand(b, t, k, 4), pres=pres, boxes=boxes,
                      ids=torch.arange(k).expand(b, t, k))
        names = {f.name for f in dataclasses.fields(Generation)}
        return Generation(**{key: v for key, v in fields.items() if key in names})


def centroid_factory(name: str, config: ModelConfig) -> CentroidModel:
    return CentroidModel(config)


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dyn")
    data = generate_file(root / "b4.h5", "4", {"training": 8, "validation": 4, "test": 24}, frames=8, seed=5,
                         progress=False)
    train_job(tiny_job(data, max_iterations=4), root / "job", progress=False, model_factory=fake_factory())
    return data, root / "job" / "best.pt"


def run_eval(data: Path, ckpt: Path, frames: int, factory=centroid_factory, particles: int = 3) -> dict:
    return evaluate_checkpoint(ckpt, str(data), EvalSplit(data="b4", frames=frames, max_objects=4),
                               EvalConfig(samples=2, particles=particles, batch_size=10), device="cpu",
                               model_factory=factory)


def test_checkpoint_records_its_horizon_and_evaluation_marks_longer_ones(job) -> None:
    data, ckpt = job
    horizon = load_checkpoint(ckpt)["trained_horizon"]
    assert horizon == 2  # tiny_job: curriculum 2, +1 every 4 iterations, 4 iterations
    beyond = run_eval(data, ckpt, frames=6)
    assert (beyond["trained_horizon"], beyond["beyond_trained_horizon"]) == (2, True)
    within = run_eval(data, ckpt, frames=2)
    assert within["beyond_trained_horizon"] is False


def test_particles_reach_generate_and_references_use_the_same_frames(job) -> None:
    data, ckpt = job
    CentroidModel.particles_seen.clear()
    entry = run_eval(data, ckpt, frames=6, particles=3)
    assert CentroidModel.particles_seen and set(CentroidModel.particles_seen) == {3}
    refs = entry["references"]
    assert set(refs) == {"empty", "copy_last", "const_velocity", "perfect"}
    # the model repeats frame T-1, so it must score exactly what the copy-last reference scores
    assert entry["data_ll"]["mean"] == pytest.approx(refs["copy_last"]["data_ll"], abs=1e-6)
    assert entry["relational_ll"]["mean"] == pytest.approx(refs["copy_last"]["relational_ll"], abs=1e-6)
    assert refs["empty"]["data_ll"] == pytest.approx(entry["empty_frame_data_ll"])
    assert refs["perfect"]["data_ll"] == pytest.approx(2500 * 0.28503, abs=0.05)
    assert refs["empty"]["data_ll"] < refs["copy_last"]["data_ll"] < refs["const_velocity"]["data_ll"]


def test_matching_sees_centroids_as_found_balls(job) -> None:
    data, ckpt = job
    m = run_eval(data, ckpt, frames=6)["matching"]
    inferred = m["inferred"]
    assert inferred["coverage"] > 0.85  # touching balls merge into one component: a few misses
    assert inferred["duplicates"] == 0.0
    assert inferred["centre_error_px"] < 1.0
    frames = inferred["by_frame"]
    assert [f["frame"] for f in frames] == [1, 2, 3, 4, 5]  # frames 1..T-1 of T = 6
    assert min(f["coverage"] for f in frames) <= inferred["coverage"] <= max(f["coverage"] for f in frames)
    assert all(f["strays"] == 0.0 for f in frames)  # every centroid sits on a ball
    # its sampled frame reuses frame T-1's centroids: the prior's error is copy-last's
    prior = m["sampled"]["centre_error_px"]
    assert len(prior["per_sample"]) == 2 and 1.5 < prior["mean"] < 5.0
    assert m["radius_px"] == 5.0 and m["error_cap_px"] == 10.0


def test_a_model_without_a_prior_record_gets_null_prior_blocks(job) -> None:
    """The centroid model's Generation has no `prior_where_loc`: ball states exist, yet nothing is made up."""
    data, ckpt = job
    entry = run_eval(data, ckpt, frames=6)
    assert entry["matching"] is not None
    assert entry["prior_decomposition"] is None and entry["one_step"] is None
    assert entry["prior_decomposition_drawn"] is None and entry["one_step_drawn"] is None


def test_files_without_ball_states_skip_only_what_needs_them(tmp_path: Path) -> None:
    from tests.fakes import FakeBallsDataset

    data = write_fake_h5(tmp_path / "fake.h5", sizes={"training": 4, "validation": 2, "test": 3})
    train_job(tiny_job(data, max_iterations=4), tmp_path / "job", progress=False, model_factory=fake_factory(),
              dataset_factory=FakeBallsDataset)
    entry = evaluate_checkpoint(tmp_path / "job" / "best.pt", str(data), EvalSplit(data="f", frames=4),
                                EvalConfig(samples=2, particles=2, batch_size=4), device="cpu",
                                model_factory=fake_factory(), dataset_factory=FakeBallsDataset)
    assert entry["matching"] is None and entry["references"]["const_velocity"] is None
    assert entry["prior_decomposition"] is None and entry["one_step"] is None
    assert entry["prior_decomposition_drawn"] is None and entry["one_step_drawn"] is None
    assert entry["references"]["copy_last"]["centre_error_px"] is None
    assert entry["references"]["perfect"]["data_ll"] > entry["references"]["empty"]["data_ll"]


def test_report_has_reference_rows_dynamics_table_and_horizon_marks(job, tmp_path: Path) -> None:
    data, ckpt = job
    entry = run_eval(data, ckpt, frames=6)
    for seed in (0, 1):
        info = job_info_from_checkpoint(ckpt, suite="t", device="cpu") | {"seed": seed}
        out = tmp_path / "results" / "fake" / f"seed{seed}"
        out.mkdir(parents=True)
        write_metrics(out / "metrics.json", info, {"balls4/test": entry})
    json.loads((tmp_path / "results" / "fake" / "seed0" / "metrics.json").read_text())  # valid JSON (no NaN)
    write_report(tmp_path / "results")
    report = tmp_path / "results" / "report"
    table = (report / "table.md").read_text()
    for label in ("reference: empty", "reference: copy-last", "reference: const-velocity", "reference: perfect"):
        assert label in table and label in (report / "table.csv").read_text() and label in (report / "table.tex").read_text()
    assert f"{entry['references']['perfect']['data_ll']:.2f}" in table
    assert "†" in table and "trained on" in table
    dynamics = (report / "dynamics.md").read_text()
    assert "coverage balls4/test" in dynamics and "reference: copy-last" in dynamics
    assert f"{entry['references']['copy_last']['centre_error_px']:.2f}" in dynamics
    frames = entry["matching"]["inferred"]["by_frame"]
    assert "strays balls4/test" in dynamics
    assert f"{frames[0]['coverage']:.2f} / {frames[-1]['coverage']:.2f}" in dynamics  # first / last inferred frame
    assert (report / "dynamics.tex").is_file() and (report / "figures" / "fig4_ll.png").is_file()
