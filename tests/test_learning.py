"""It must learn: a small SQAIR trained through the real pipeline (generated data, train_job,
evaluate_checkpoint) improves its IWAE bound and puts objects on balls; and, with the learning
suite's switches, it covers the balls and its prior predicts the next frame better than copying the
last one.

Scale of the first check (CPU, minutes): 1-3 balls, 3-frame windows, n_hidden 64, 10x10 glimpses,
Adam, 1,200 iterations. It used to assert count accuracy above the majority answer; measured on
three seeds after the step-speed change (which reorders the random draws), count accuracy was
0.236 / 0.444 / 0.340 against a majority answer of 0.417, and an untrained model scores 0.354: at
this scale the count is noise, not a learning signal. Coverage (balls with an object centre within
5 px, `matching.inferred.coverage`) is: untrained 0.010, trained 0.285 / 0.378 / 0.295 (seeds 0-2).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from rsqair_bench.config import EvalConfig, EvalSplit, JobConfig, ModelConfig, TrainConfig
from rsqair_bench.data.h5 import generate_file
from rsqair_bench.data.loader import BallsDataset
from rsqair_bench.evaluate import evaluate_checkpoint
from rsqair_bench.scores import visible_objects
from rsqair_bench.train import train_job

ITERATIONS = 1200
BOUND_GAIN = 300.0  # nats per 3-frame sequence, last 100 iterations vs first 100
MIN_COVERAGE = 0.15  # untrained 0.010; after 1,200 iterations 0.285-0.378 over seeds 0-2


@pytest.mark.slow
def test_sqair_improves_its_bound_and_finds_the_balls(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    data = generate_file(tmp_path / "balls.h5", "1-3", {"training": 512, "validation": 32, "test": 96},
                         frames=4, size=64, seed=0, progress=False)
    job = JobConfig(
        model="sqair", seed=0, train_data=str(data), device="cpu",
        model_config=ModelConfig(max_objects=3, n_hidden=64, glimpse_size=10),
        train=TrainConfig(optimizer="adam", learning_rate=3e-4, batch_size=16, max_iterations=ITERATIONS,
                          curriculum_start=3, curriculum_max=3, validate_every=400, checkpoint_every=400,
                          log_every=100, early_stop_patience=100),
    )
    train_job(job, tmp_path / "job", progress=False)

    with (tmp_path / "job" / "train_log.csv").open() as fh:
        bounds = [float(row["iwae_bound"]) for row in csv.DictReader(fh)]
    assert bounds[-1] - bounds[0] > BOUND_GAIN, f"IWAE bound per 100 iterations: {bounds}"

    metrics = evaluate_checkpoint(tmp_path / "job" / "best.pt", str(data),
                                  EvalSplit(data="balls", split="test", frames=3), EvalConfig(samples=1),
                                  device="cpu")
    groups = torch.stack([item["groups"] for item in BallsDataset(str(data), "test", frames=3)])
    visible = visible_objects(groups).flatten()
    majority = max((visible == c).float().mean().item() for c in visible.unique())
    coverage = metrics["matching"]["inferred"]["coverage"]
    print(f"\nlearning check: IWAE bound {bounds[0]:.1f} -> {bounds[-1]:.1f} (per 100 iterations: "
          f"{[round(b, 1) for b in bounds]}); coverage {coverage:.3f}; count accuracy "
          f"{metrics['count_accuracy']:.3f} (majority answer {majority:.3f}, not asserted: see the module docstring)")
    assert coverage > MIN_COVERAGE, f"coverage {coverage:.3f}; bounds {bounds}"


DYNAMICS_ITERATIONS = 1000  # a fixed count keeps the check deterministic (eager, one thread)
MIN_DYNAMICS_COVERAGE = 0.9  # the learned-dynamics issue asks 0.95 of the learning suite; this run: 0.960
MAX_DYNAMICS_DUPLICATES = 0.05  # the target; this run: 0.011


@pytest.mark.slow
def test_sqair_learns_dynamics_its_sampled_frame_beats_copy_last(tmp_path: Path) -> None:
    """The learned-dynamics check: 4 balls, the learning suite's switches (velocity prior, small
    initial prior std, VIMCO, clipping, residual discovery with first-frame boxes on the residual's
    peak), eager, 1,000 iterations (curriculum 3 -> 10 frames by 980). The frame sampled from the
    propagation prior must score better than copying the last observed frame, on the same frames,
    and so must the prior's centre error on the balls the model tracks (`matching.sampled.tracked`;
    the capped error over all balls also charges missed balls, see docs/metrics.md); the inferred
    frames must cover the balls without duplicates. Data and evaluation as in docs/sqair.md; the run
    scored +151.3 nats against copy-last's -114.7, tracked prior error 2.83 px against 3.03, coverage
    0.960, duplicates 0.011 (5 min 47 s alone on the 2 cores; training is deterministic per seed on
    CPU)."""
    data = generate_file(tmp_path / "balls4.h5", "4", {"training": 4000, "validation": 100, "test": 100},
                         frames=12, size=64, seed=0, progress=False)
    job = JobConfig(
        model="sqair", seed=0, train_data=str(data), device="cpu",
        model_config=ModelConfig(n_hidden=64, glimpse_size=10, prop_prior="velocity", prop_prior_scale_bias=-3.0,
                                 disc_input="residual", disc_box_centre="residual_peak"),
        train=TrainConfig(optimizer="adam", learning_rate=3e-4, batch_size=16, max_iterations=DYNAMICS_ITERATIONS,
                          lr_decay_at=[], curriculum_every=140, grad_clip=10.0, validate_every=250,
                          validation_sequences=50, checkpoint_every=250, log_every=50, early_stop_patience=100,
                          torch_threads=1),
    )
    train_job(job, tmp_path / "job", progress=False)
    metrics = evaluate_checkpoint(tmp_path / "job" / "checkpoint.pt", str(data),
                                  EvalSplit(data="balls4", split="test", frames=10, sequences=50),
                                  EvalConfig(samples=5, particles=5), device="cpu")
    model_ll = metrics["data_ll"]["mean"]
    copy_ll = metrics["references"]["copy_last"]["data_ll"]
    sampled = metrics["matching"]["sampled"]
    print(f"\ndynamics check: sampled frame 10 data LL {model_ll:.1f} vs copy-last {copy_ll:.1f} "
          f"(const-velocity oracle {metrics['references']['const_velocity']['data_ll']:.1f}); prior centre error "
          f"{sampled['centre_error_px']['mean']:.2f} px (capped, copy-last "
          f"{metrics['references']['copy_last']['centre_error_px']:.2f}); tracked balls {sampled['tracked']}; "
          f"coverage {metrics['matching']['inferred']['coverage']:.3f}")
    assert model_ll > copy_ll, f"sampled frame {model_ll:.1f} nats does not beat copy-last {copy_ll:.1f}"
    tracked = sampled["tracked"]
    assert tracked["tracked_fraction"] > 0.5, f"the model tracks too few balls to judge its prior: {tracked}"
    assert tracked["prior_error_px"] < tracked["copy_last_error_px"], f"prior no better than copy-last: {tracked}"
    inferred = metrics["matching"]["inferred"]
    assert inferred["coverage"] >= MIN_DYNAMICS_COVERAGE, f"coverage {inferred['coverage']:.3f}"
    assert inferred["duplicates"] <= MAX_DYNAMICS_DUPLICATES, f"duplicates {inferred['duplicates']:.3f}"
