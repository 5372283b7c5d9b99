"""The slow learning checks: how each one trains and scores, and what it asserts, in one place.

Why a module of its own: `tests/test_learning.py` runs each check once (seed 0, this machine's kernels),
and `tools/learning_margins.py` runs the same function over seeds x kernel families x a rounding
perturbation to measure how far each figure is from its threshold. Both read the check from `CHECKS`,
so a threshold the tool measured is the threshold the test asserts. Adding a check is one entry: a
`LearningCheck` with its run function (workdir, seed, model factory -> named figures), its thresholds
and its thread count.

A check's figures are deterministic for a given seed, thread count, torch build and kernel family
(`ATEN_CPU_CAPABILITY`, `MKL_ENABLE_INSTRUCTIONS`, `ONEDNN_MAX_CPU_ISA`, and the CPU that picks the
default ones), and differ between families by float rounding that grows along the trajectory. A
threshold must therefore hold by a margin over seeds and families, not on one trajectory
(docs/reproducibility.md).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rsqair_bench.config import EvalConfig, EvalSplit, JobConfig, SuiteConfig, load_config
from rsqair_bench.data.h5 import generate_file
from rsqair_bench.evaluation.evaluate import evaluate_checkpoint
from rsqair_bench.registry import ModelFactory
from rsqair_bench.runner.suite import validate_suite
from rsqair_bench.training.loop import train_job

LEARN_SUITE = Path(__file__).resolve().parents[1] / "suites" / "learn.yaml"


@dataclass(frozen=True)
class Threshold:
    """One assertion on a named figure: `figure > bound` (`above`) or `figure < bound`, `>=`/`<=` when inclusive."""

    figure: str
    bound: float
    above: bool
    inclusive: bool = False

    def margin(self, value: float) -> float:
        """How far `value` is on the passing side of the bound (negative: it fails)."""
        return value - self.bound if self.above else self.bound - value

    def holds(self, value: float) -> bool:
        return self.margin(value) >= 0 if self.inclusive else self.margin(value) > 0

    def __str__(self) -> str:
        op = (">" if self.above else "<") + ("=" if self.inclusive else "")
        return f"{self.figure} {op} {self.bound:g}"


@dataclass(frozen=True)
class LearningCheck:
    """A slow learning check: `run(workdir, seed, model_factory)` trains and scores, returning named figures."""

    name: str
    test: str  # the pytest node that asserts it (seed 0)
    run: Callable[[Path, int, ModelFactory | None], dict[str, float]]
    thresholds: tuple[Threshold, ...]
    threads: int  # torch threads: part of what makes the trajectory deterministic
    printed: tuple[str, ...] = ()  # figures reported beside the margins but not asserted

    def failures(self, figures: dict[str, float]) -> list[str]:
        """One line per threshold that `figures` break."""
        return [f"{t}: {figures[t.figure]:.4g}" for t in self.thresholds if not t.holds(figures[t.figure])]


def run_check(check: LearningCheck, workdir: Path, seed: int = 0, model_factory: ModelFactory | None = None) -> dict[str, float]:
    """Run `check` at its own thread count (the caller restores its own count afterwards)."""
    torch.set_num_threads(check.threads)
    return check.run(workdir, seed, model_factory)


def learn_suite() -> SuiteConfig:
    return validate_suite(load_config(SuiteConfig, LEARN_SUITE), LEARN_SUITE)


def _bounds(log: Path) -> list[float]:
    """The training IWAE bound column of a train_log.csv (one row per `log_every` iterations)."""
    with log.open() as fh:
        return [float(row["iwae_bound"]) for row in csv.DictReader(fh)]


# ----------------------------------------------------------------------------- 1: bound and coverage, 3 frames
BOUND_ITERATIONS = 600


def learn_data(workdir: Path) -> Path:
    """suites/learn.yaml's 4-ball training file (4,000 sequences of 12 frames, its seed), generated in `workdir`."""
    suite = learn_suite()
    ds = suite.data[suite.train_data]
    return generate_file(workdir / "balls4.h5", ds.balls, dict(ds.splits), frames=ds.frames, size=ds.size,
                         seed=ds.seed, progress=False)


def bound_check_job(data: Path, seed: int = 0) -> JobConfig:
    """suites/learn.yaml's model and optimizer (read, not copied) on 3-frame windows of its data: eager, no
    lr decay, no curriculum, BOUND_ITERATIONS iterations."""
    suite = learn_suite()
    return JobConfig(
        model="sqair", seed=seed, train_data=str(data), device="cpu",
        model_config=dataclasses.replace(suite.model_config, compile=False),
        train=dataclasses.replace(suite.train, max_iterations=BOUND_ITERATIONS, max_minutes=None, lr_decay_at=[],
                                  curriculum_start=3, curriculum_max=3, validate_every=200, checkpoint_every=200,
                                  log_every=100, torch_threads=torch.get_num_threads()),  # the check's count (run_check)
    )


def run_bound_check(workdir: Path, seed: int = 0, model_factory: ModelFactory | None = None) -> dict[str, float]:
    """Train; the training bound's gain (mean of the last 100 iterations minus the first 100) and best.pt's
    coverage, duplicates and count accuracy on learn.yaml's 100 test sequences, 3 frames."""
    data = learn_data(workdir)
    train_job(bound_check_job(data, seed), workdir / "job", progress=False, model_factory=model_factory)
    bounds = _bounds(workdir / "job" / "train_log.csv")
    metrics = evaluate_checkpoint(workdir / "job" / "best.pt", str(data),
                                  EvalSplit(data="balls4", split="test", frames=3), EvalConfig(samples=1), device="cpu")
    return {"bound_first": bounds[0], "bound_last": bounds[-1], "bound_gain": bounds[-1] - bounds[0],
            "coverage": metrics["matching"]["inferred"]["coverage"],
            "duplicates": metrics["matching"]["inferred"]["duplicates"], "count_accuracy": metrics["count_accuracy"]}


# ----------------------------------------------------------------------------- 2: learned dynamics, 4 balls
DYNAMICS_ITERATIONS = 1000  # a fixed count keeps the check deterministic (eager, one thread)


def dynamics_check_job(data: Path, seed: int = 0) -> JobConfig:
    """suites/learn.yaml's model and training settings (read, not copied), shortened to a test:
    1,000 iterations, the curriculum 3 -> 10 frames by iteration 980 (every 140), no lr decay (the
    suite's first is at 2,000), no time limit, eager (no compiler needed, no compile time)."""
    suite = learn_suite()
    return JobConfig(
        model="sqair", seed=seed, train_data=str(data), device="cpu",
        model_config=dataclasses.replace(suite.model_config, compile=False),
        train=dataclasses.replace(suite.train, max_iterations=DYNAMICS_ITERATIONS, max_minutes=None, lr_decay_at=[],
                                  curriculum_every=140, torch_threads=torch.get_num_threads()),  # run_check's count
    )


def run_dynamics_check(workdir: Path, seed: int = 0, model_factory: ModelFactory | None = None) -> dict[str, float]:
    """Train the check's job and evaluate its best.pt on learn.yaml's 4-ball test split (50 sequences)."""
    data = learn_data(workdir)
    train_job(dynamics_check_job(data, seed), workdir / "job", progress=False, model_factory=model_factory)
    m = evaluate_checkpoint(workdir / "job" / "best.pt", str(data),
                            EvalSplit(data="balls4", split="test", frames=10, sequences=50),
                            EvalConfig(samples=5, particles=5), device="cpu")
    sampled, inferred, refs = m["matching"]["sampled"], m["matching"]["inferred"], m["references"]
    return {"data_ll": m["data_ll"]["mean"], "copy_last": refs["copy_last"]["data_ll"],
            "gain_over_copy_last": m["data_ll"]["mean"] - refs["copy_last"]["data_ll"],
            "const_velocity": refs["const_velocity"]["data_ll"],
            "tracked_fraction": sampled["tracked"]["tracked_fraction"],
            "tracked_prior_px": sampled["tracked"]["prior_error_px"],
            "tracked_copy_last_px": sampled["tracked"]["copy_last_error_px"],
            "prior_centre_error_px": sampled["centre_error_px"]["mean"],
            "copy_last_centre_error_px": refs["copy_last"]["centre_error_px"],
            "coverage": inferred["coverage"], "duplicates": inferred["duplicates"]}


# ----------------------------------------------------------------------------- the checks
# Thresholds: each set from the measured runs in its test's docstring (the worst run and its margin).
BOUND_GAIN = 500.0  # nats per 3-frame window, last 100 iterations minus the first 100; worst measured 1,903.0
MIN_BOUND_COVERAGE = 0.5  # worst measured 0.916
MIN_GAIN_OVER_COPY_LAST = 150.0  # nats, sampled frame 10; worst measured 209.7
MIN_TRACKED_FRACTION = 0.5  # worst 0.862
MIN_DYNAMICS_COVERAGE = 0.75  # worst 0.873
MAX_DYNAMICS_DUPLICATES = 0.2  # worst 0.097

BOUNDS = LearningCheck(
    name="bound", test="tests/test_learning.py::test_sqair_improves_its_bound_and_finds_the_balls",
    run=run_bound_check, threads=1,
    thresholds=(Threshold("bound_gain", BOUND_GAIN, above=True), Threshold("coverage", MIN_BOUND_COVERAGE, above=True)),
    printed=("bound_first", "bound_last", "duplicates", "count_accuracy"),
)
DYNAMICS = LearningCheck(
    name="dynamics", test="tests/test_learning.py::test_sqair_learns_dynamics_its_sampled_frame_beats_copy_last",
    run=run_dynamics_check, threads=1,
    thresholds=(Threshold("gain_over_copy_last", MIN_GAIN_OVER_COPY_LAST, above=True),
                Threshold("tracked_fraction", MIN_TRACKED_FRACTION, above=True),
                Threshold("coverage", MIN_DYNAMICS_COVERAGE, above=True, inclusive=True),
                Threshold("duplicates", MAX_DYNAMICS_DUPLICATES, above=False, inclusive=True)),
    printed=("tracked_prior_px", "tracked_copy_last_px"),
)
CHECKS: dict[str, LearningCheck] = {c.name: c for c in (BOUNDS, DYNAMICS)}
