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
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rsqair_bench.config import EvalConfig, EvalSplit, JobConfig, ModelConfig, SuiteConfig, TrainConfig, load_config
from rsqair_bench.data.h5 import generate_file
from rsqair_bench.data.loader import BallsDataset
from rsqair_bench.evaluation.evaluate import evaluate_checkpoint
from rsqair_bench.evaluation.scores import visible_objects
from rsqair_bench.registry import ModelFactory
from rsqair_bench.runner.suite import validate_suite
from rsqair_bench.training.loop import train_job

ITERATIONS = 1200
BOUND_GAIN = 300.0  # nats per 3-frame sequence, last 100 iterations vs first 100
MIN_COVERAGE = 0.15  # untrained 0.010; after 1,200 iterations 0.285-0.378 over seeds 0-2


@pytest.mark.slow
def test_sqair_improves_its_bound_and_finds_the_balls(tmp_path: Path, restore_torch_threads: None) -> None:
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
# Thresholds and the runs that set them: see `test_sqair_learns_dynamics_its_sampled_frame_beats_copy_last`.
MIN_GAIN_OVER_COPY_LAST = 150.0  # nats, sampled frame 10; worst measured run 209.7
MIN_TRACKED_FRACTION = 0.5  # worst 0.862
MIN_DYNAMICS_COVERAGE = 0.75  # worst 0.873 (it was 0.9, which seed 1 fails)
MAX_DYNAMICS_DUPLICATES = 0.2  # worst 0.097 (it was 0.05, which seed 1 fails)
LEARN_SUITE = Path(__file__).resolve().parents[1] / "suites" / "learn.yaml"


@pytest.fixture
def restore_torch_threads() -> Iterator[None]:
    """The check sets the thread count it was measured with; put the caller's back afterwards."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def dynamics_check_job(data: Path, seed: int = 0, threads: int = 1) -> JobConfig:
    """suites/learn.yaml's model and training settings (read, not copied), shortened to a test:
    1,000 iterations, the curriculum 3 -> 10 frames by iteration 980 (every 140), no lr decay (the
    suite's first is at 2,000), no time limit, eager (no compiler needed, no compile time)."""
    suite = validate_suite(load_config(SuiteConfig, LEARN_SUITE), LEARN_SUITE)
    return JobConfig(
        model="sqair", seed=seed, train_data=str(data), device="cpu",
        model_config=dataclasses.replace(suite.model_config, compile=False),
        train=dataclasses.replace(suite.train, max_iterations=DYNAMICS_ITERATIONS, max_minutes=None, lr_decay_at=[],
                                  curriculum_every=140, torch_threads=threads),
    )


def run_dynamics_check(workdir: Path, seed: int = 0, threads: int = 1, model_factory: ModelFactory | None = None) -> dict:
    """Train the check's job and evaluate its best.pt on learn.yaml's 4-ball test split (50 sequences)."""
    suite = validate_suite(load_config(SuiteConfig, LEARN_SUITE), LEARN_SUITE)
    ds = suite.data[suite.train_data]
    data = generate_file(workdir / "balls4.h5", ds.balls, dict(ds.splits), frames=ds.frames, size=ds.size,
                         seed=ds.seed, progress=False)
    train_job(dynamics_check_job(data, seed, threads), workdir / "job", progress=False, model_factory=model_factory)
    return evaluate_checkpoint(workdir / "job" / "best.pt", str(data),
                               EvalSplit(data="balls4", split="test", frames=10, sequences=50),
                               EvalConfig(samples=5, particles=5), device="cpu")


@pytest.mark.slow
def test_sqair_learns_dynamics_its_sampled_frame_beats_copy_last(tmp_path: Path, restore_torch_threads: None) -> None:
    """The learned-dynamics check: 4 balls, the learning suite's switches (velocity prior, small
    initial prior std, VIMCO, clipping, residual discovery with first-frame boxes on the residual's
    peak), eager, 1,000 iterations. The frame sampled from the propagation prior must beat copying the
    last observed frame by MIN_GAIN_OVER_COPY_LAST nats on the same frames; the inferred frames must
    cover the balls without duplicates; the model must track most balls.

    Measured (`python tools/learning_margins.py SEED THREADS`, the same function; sampled frame 10,
    copy-last -114.7 nats on these 50 sequences):

    | run | gain over copy-last (nats) | tracked fraction | coverage | duplicates | tracked prior / copy-last px |
    |---|---|---|---|---|---|
    | seed 0 | 266.1 | 0.949 | 0.960 | 0.011 | 2.83 / 3.03 |
    | seed 1 | 209.7 | 0.862 | 0.873 | 0.097 | 3.01 / 3.04 |
    | seed 2 | 278.9 | 0.924 | 0.930 | 0.028 | 2.82 / 3.04 |
    | seed 0, rounding perturbed (`--perturb`) | 226.2 | 0.944 | 0.944 | 0.017 | 3.05 / 3.03 |
    | threshold | > 150 | > 0.5 | >= 0.75 | <= 0.2 | not asserted |
    | margin of the worst run | 59.7 | 0.36 | 0.12 | 0.10 | — |

    Every threshold is cleared by the worst of the four runs by the margin in the last row, and is far
    from what an untrained model scores (coverage 0.01, gain below 0: it draws nothing). The tracked
    prior error against copy-last's is printed, not asserted: the rounding-perturbed run of seed 0
    has it 0.02 px worse than copy-last and seed 1 only 0.03 px better, so one rounding change flips
    it (a float32 change once did, docs/sqair.md); the data LL gain carries the claim "the prior
    predicts the next frame better than copying the last one" with a margin of 60 nats."""
    metrics = run_dynamics_check(tmp_path)
    model_ll = metrics["data_ll"]["mean"]
    copy_ll = metrics["references"]["copy_last"]["data_ll"]
    sampled = metrics["matching"]["sampled"]
    print(f"\ndynamics check: sampled frame 10 data LL {model_ll:.1f} vs copy-last {copy_ll:.1f} "
          f"(const-velocity oracle {metrics['references']['const_velocity']['data_ll']:.1f}); prior centre error "
          f"{sampled['centre_error_px']['mean']:.2f} px (capped, copy-last "
          f"{metrics['references']['copy_last']['centre_error_px']:.2f}); tracked balls {sampled['tracked']}; "
          f"coverage {metrics['matching']['inferred']['coverage']:.3f}")
    assert model_ll - copy_ll > MIN_GAIN_OVER_COPY_LAST, f"sampled frame {model_ll:.1f} nats vs copy-last {copy_ll:.1f}"
    tracked = sampled["tracked"]
    assert tracked["tracked_fraction"] > MIN_TRACKED_FRACTION, f"the model tracks too few balls: {tracked}"
    inferred = metrics["matching"]["inferred"]
    assert inferred["coverage"] >= MIN_DYNAMICS_COVERAGE, f"coverage {inferred['coverage']:.3f}"
    assert inferred["duplicates"] <= MAX_DYNAMICS_DUPLICATES, f"duplicates {inferred['duplicates']:.3f}"
