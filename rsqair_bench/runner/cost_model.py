"""The arithmetic of `run --dry-run`'s cost: iterations a job may take, seconds per unit of work, a
job's time, and the wall time of jobs run a few at a time.

The model of a job's time (each assumption is a knob a reader can check against a real run):
- the iterations the training protocol implies, as a range: the earliest iteration at which
  training/loop.py can stop a job (early stopping, `earliest_stop`) to `train.max_iterations`, plus the
  `train.max_minutes` time cap when one is set;
- a training step's time is proportional to the frames in its sequences (the curriculum grows them
  from `curriculum_start` to `curriculum_max`) and to batch x particles when the figure was
  measured at another batch or particle count (linear: right on a CPU, pessimistic on a GPU);
- one validation is `validation_sequences` forward passes at `curriculum_max` frames (training/loop.py
  `validation_bound`), at the figure's evaluation rate;
- evaluation of a split costs (`eval.samples` + 1) forward passes per sequence (the batched sampled
  frames and the whole-sequence bound, evaluation/evaluate.py `_score_batches`), scaled by frames, particles and
  object slots;
- the jobs that run at once are min(`workers`, jobs to run), in the runner's order (`runner.seed_major`);
  on a CPU, jobs whose threads outnumber the cores slow down in proportion, and on a GPU parallel jobs
  share the one device, so they are assumed to gain nothing over running one after another.

Pure arithmetic on a validated suite and a checked figure (runner/bench_file.py): no files, no torch.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field

from rsqair_bench.config import SuiteConfig, TrainConfig
from rsqair_bench.runner.bench_file import Figure


# ----------------------------------------------------------------------------- iterations
@dataclass(frozen=True)
class IterationRange:
    """What the protocol implies about one job's iterations (see `iteration_range`)."""

    earliest: int  # the earliest iteration at which training/loop.py can stop a job that does not diverge
    latest: int  # train.max_iterations
    validate_every: int
    validate_every_why: str  # "train.validate_every" or "one epoch: N // batch"
    curriculum_done: int  # first iteration at curriculum_max frames
    early_stop_possible: bool  # False: early stopping cannot act before max_iterations


def validate_every(train: TrainConfig, training_sequences: int) -> tuple[int, str]:
    """Iterations between validations, as training/loop.py `_train_loop` sets them, and why."""
    if train.validate_every:
        return train.validate_every, "train.validate_every"
    per_epoch = max(1, training_sequences // train.batch_size)  # training/loop.py refuses fewer sequences than a batch
    return per_epoch, f"one epoch: {training_sequences:,} // {train.batch_size}"


def earliest_stop(train: TrainConfig, every: int) -> int:
    """The earliest iteration early stopping can end a job: (patience + 1) validations.

    Why not later: training/loop.py validates at every multiple of `every` (`_validate_and_checkpoint`)
    whatever the curriculum's length, and `EarlyStopping` stops after `patience` consecutive
    validations without a strictly higher score. The first finite validation is always an
    improvement (there is no best yet), so the earliest stop is when the first validation is the
    best and the next `patience` all fail to beat it: iteration every x (patience + 1). Early
    stopping does not wait for the curriculum, so this can come before `curriculum_max` is reached
    (the validation score is always on `curriculum_max` frames, so it usually keeps improving
    while the curriculum grows, but nothing enforces that). The one earlier stop, every x patience,
    needs a non-finite first validation, i.e. a model that has already broken; it is left out.
    """
    return every * (train.early_stop_patience + 1)


def iteration_range(train: TrainConfig, training_sequences: int) -> IterationRange:
    """The iteration range of one job: earliest possible early stop (capped at the max) to max_iterations."""
    every, why = validate_every(train, training_sequences)
    first = earliest_stop(train, every)
    done = (train.curriculum_max - train.curriculum_start) * train.curriculum_every
    return IterationRange(
        earliest=min(first, train.max_iterations), latest=train.max_iterations, validate_every=every,
        validate_every_why=why, curriculum_done=max(done, 0), early_stop_possible=first < train.max_iterations,
    )


def frame_iterations(iterations: int, train: TrainConfig) -> int:
    """Sum over the first `iterations` steps of the frames per sequence (training/schedule.py `curriculum_length`)."""
    total, length, start = 0, train.curriculum_start, 0
    while start < iterations:
        if length >= train.curriculum_max:
            return total + (iterations - start) * train.curriculum_max
        end = min(iterations, start + train.curriculum_every)
        total += (end - start) * length
        start, length = end, length + 1
    return total


def validations(iterations: int, train: TrainConfig, every: int) -> int:
    """Validations run in `iterations` steps: every `every`, plus one at max_iterations when it is off the grid."""
    extra = iterations == train.max_iterations and iterations % every != 0
    return iterations // every + int(extra)


# ----------------------------------------------------------------------------- per job and in total
@dataclass(frozen=True)
class JobTime:
    """Predicted seconds of one job for a given iteration count."""

    iterations: int  # iterations reached (fewer than asked when the time cap comes first)
    train_seconds: float  # training steps
    validation_seconds: float
    eval_seconds: float
    capped: bool  # train.max_minutes ended training first

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.validation_seconds + self.eval_seconds


@dataclass(frozen=True)
class Rates:
    """Seconds per unit of work for one model on one figure, already scaled to the suite's settings."""

    seconds_per_frame_iteration: float  # a training step of one frame per sequence
    seconds_per_validation: float
    seconds_per_evaluation: float  # every eval split of one job
    seconds_per_split: dict[str, float] = field(default_factory=dict)  # eval split key -> its seconds

    def evaluation_of(self, splits: list[str]) -> float:
        """Seconds to evaluate these splits again (a finished job whose evaluation is stale)."""
        return sum(self.seconds_per_split.get(key, 0.0) for key in splits)


def rates_for(suite: SuiteConfig, figure: Figure, model: str, slower: float = 1.0) -> Rates:
    """Scale a figure to the suite: frames (curriculum), batch x particles, and for evaluation particles and
    slots; `slower` (`slowdown`) stretches every cost, before the time cap applies to it."""
    train_rate, eval_rate, _ = figure.rates(model)
    s, tr = figure.settings, suite.train
    work = (tr.batch_size * tr.particles) / (s.get("batch", tr.batch_size) * s.get("particles", tr.particles))
    frames = s.get("frames", tr.curriculum_max)
    per_frame = work / (train_rate * frames)
    particles = s.get("particles", tr.particles)
    slots = s.get("max_objects", suite.model_config.max_objects)
    # seconds per sequence-frame of a forward pass at `particles` particles and `slots` slots
    forward = 1.0 / (eval_rate * frames)
    n_val = suite.data[suite.train_data].splits.get("validation", 0)
    if tr.validation_sequences is not None:
        n_val = min(n_val, tr.validation_sequences)
    validation = n_val * tr.curriculum_max * forward * tr.particles / particles
    per_split = {}
    for key, split in suite.eval.splits.items():
        ds = suite.data.get(split.data)
        n = ds.splits.get(split.split, 0) if ds is not None else 0  # an .h5 path: size unknown here
        if split.sequences is not None:
            n = min(n, split.sequences)
        split_slots = split.max_objects or suite.model_config.max_objects
        per_split[key] = (n * (suite.eval.samples + 1) * split.frames * forward
                          * suite.eval.particles / particles * split_slots / slots) * slower
    return Rates(per_frame * slower, validation * slower, sum(per_split.values()), per_split)


def job_time(iterations: int, suite: SuiteConfig, rates: Rates, every: int) -> JobTime:
    """Predicted time of one job stopping at `iterations`, with train.max_minutes applied to training."""
    tr = suite.train
    train = frame_iterations(iterations, tr) * rates.seconds_per_frame_iteration
    val = validations(iterations, tr, every) * rates.seconds_per_validation
    cap = None if tr.max_minutes is None else 60.0 * tr.max_minutes
    if cap is None or train + val <= cap:
        return JobTime(iterations, train, val, rates.seconds_per_evaluation, False)
    reached = _iterations_within(cap, suite, rates, every, iterations)
    train = min(frame_iterations(reached, tr) * rates.seconds_per_frame_iteration, cap)
    return JobTime(reached, train, cap - train, rates.seconds_per_evaluation, True)


def _iterations_within(cap: float, suite: SuiteConfig, rates: Rates, every: int, upper: int) -> int:
    """The most iterations whose steps and validations fit in `cap` seconds (bisection; time grows with iterations)."""
    tr = suite.train
    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        t = frame_iterations(mid, tr) * rates.seconds_per_frame_iteration + mid // every * rates.seconds_per_validation
        lo, hi = (mid, hi) if t <= cap else (lo, mid - 1)
    return lo


def makespan(durations: list[float], workers: int) -> float:
    """Wall time of jobs started in order, each on the first free one of `workers` slots."""
    slots = [0.0] * max(1, min(workers, len(durations) or 1))
    for d in durations:
        heapq.heapreplace(slots, slots[0] + d)
    return max(slots)


def at_once(workers: int, jobs: int) -> int:
    """Jobs that run at the same time: `workers`, but never more than there are jobs to run.

    Why: `--workers 1000` on 25 jobs runs 25 at once, as `--workers 25` does; counting the idle
    workers predicted 277 h instead of 6.9 h for suites/study.yaml."""
    return max(1, min(workers, jobs))


def slowdown(device_kind: str, running: int, threads: int, cores: int | None = None) -> float:
    """How much slower each job runs with `running` jobs at once (`at_once`): CPU cores oversubscribed
    (each job has `threads` threads), or one GPU shared."""
    if running <= 1:
        return 1.0
    if device_kind == "cuda":
        return float(running)  # one GPU: parallel jobs assumed to share it without gain
    return max(1.0, running * threads / (cores or os.cpu_count() or 1))


