"""Cost before you start: the block `run SUITE --dry-run` ends with (`cost_lines`).

Per job and for the whole suite: the iterations the training protocol implies (runner/cost_model.py),
the throughput figure it is priced with and where that came from (runner/throughput.py, reading
`bench --json` files through runner/bench_file.py), hours per job and in total. Jobs are priced by
what they still need (`JobWork`, from their directories: runner/run.py `dry_run_work`): a finished
job costs nothing, a finished job whose evaluation is stale costs its evaluation only, any other
job a whole training. Every line says it is an estimate.

Why this module does not import torch: `run --dry-run`, `--help` and `validate` must stay light;
only `--throughput measure` loads it (runner/throughput.py `measure_throughput`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from rsqair_bench.config import SuiteConfig, TrainConfig
from rsqair_bench.runner.bench_file import Figure
from rsqair_bench.runner.cost_model import (
    IterationRange,
    JobTime,
    Rates,
    at_once,
    earliest_stop,
    iteration_range,
    job_time,
    makespan,
    rates_for,
    slowdown,
)
from rsqair_bench.runner.throughput import (
    BENCH_DIR,
    MEASURE,
    choose_figure,
    cuda_available_probe,
    job_threads,
    probe_device_kind,
)


@dataclass(frozen=True)
class JobWork:
    """What one job still needs, judged from its directory before anything runs."""

    model: str
    seed: int
    state: str = "train"  # "train" (also: resume, retry) | "evaluate again" | "done"
    splits: tuple[str, ...] = ()  # "evaluate again": the eval split keys whose entries are stale


def all_to_train(suite: SuiteConfig) -> list[JobWork]:
    """Every job of the suite as one to train, in the runner's order (seed by seed)."""
    return [JobWork(model, seed) for seed in suite.seeds for model in suite.models]


def _hours(seconds: float) -> str:
    hours = seconds / 3600.0
    if not math.isfinite(hours):
        return "more than 1e308 h"
    if hours < 10:
        return f"{hours:.1f} h"
    if hours < 1e6:
        return f"{hours:,.0f} h"
    return f"{hours:.3g} h"  # a rate near the lower bound: 5.56e+08 h, not 300 digits


def cost_lines(suite: SuiteConfig, workers: int, throughput: str | None = None, bench_dir: Path = BENCH_DIR,
               work: list[JobWork] | None = None) -> list[str]:
    """The dry run's cost block: device, figure, iteration range, per model, total. Estimates, labelled so.

    `work`: the jobs in the runner's order with what each still needs (default: all to train)."""
    tr = suite.train
    kind, device_note = probe_device_kind(suite.device)
    n_train = suite.data[suite.train_data].splits.get("training", 0)
    rng = iteration_range(tr, n_train)
    lines = ["cost (estimates, not measurements of this run):", f"  device: {device_note}"]
    lines += _iteration_lines(rng, tr)
    if tr.max_minutes is not None:
        lines.append(f"  time cap: train.max_minutes {tr.max_minutes:g} per job (training and validation; "
                     "evaluation after it), whichever of the cap and the iterations comes first")
    can_measure = kind == "cpu" or cuda_available_probe()
    figure = choose_figure(suite, workers, throughput, kind, bench_dir, can_measure=can_measure)
    if figure is None:
        measure = f", or --throughput {MEASURE} (a few eager steps timed here)" if can_measure else ""
        precision = suite.model_config.precision
        lines.append(f"  time: no throughput figure for {kind}, {precision} (none committed in {_rel(bench_dir)}"
                     f"{'' if can_measure else f', and no {kind} here to measure'}); pass --throughput FILE "
                     f"(a `bench --json` file) or --throughput IT_PER_S{measure}")
        return lines
    source = _rel(Path(figure.source)) if figure.kind == "from file" else figure.source
    match = "matches this run's setting" if not figure.differences else "differs: " + "; ".join(figure.differences)
    lines.append(f"  throughput {figure.kind}: {source} [{figure.device}]; {match}")
    if figure.caveat:
        lines.append(f"    {figure.caveat}")
    return lines + _job_lines(suite, workers, figure, rng, work if work is not None else all_to_train(suite))


def _job_lines(suite: SuiteConfig, workers: int, figure: Figure, rng: IterationRange, work: list[JobWork]) -> list[str]:
    """Per model (a whole job) and in total (what each job still needs, `running` at a time)."""
    tr = suite.train
    todo = [w for w in work if w.state != "done"]
    running = at_once(workers, len(todo))
    threads = job_threads(suite, workers)  # the runner sets them from --workers (runner/run.py `_run_jobs`)
    factor = slowdown(figure.device_kind, running, threads)
    lines = []
    if factor > 1:
        why = ("jobs share one GPU" if figure.device_kind == "cuda"
               else f"{running} jobs x {threads} threads on {os.cpu_count()} cores")
        lines.append(f"  workers: {running} at a time, each {factor:.2f}x slower ({why})")
    span = _span(f"{rng.earliest:,}", f"{rng.latest:,}")
    lines.append(f"  per job (train it/s at {tr.curriculum_max} frames from the figure; hours at {span} iterations, "
                 "validation and evaluation included):")
    per_model: dict[str, tuple[JobTime, JobTime, Rates]] = {}
    for model in suite.models:
        rates = rates_for(suite, figure, model, factor)
        low = job_time(rng.earliest, suite, rates, rng.validate_every)
        high = job_time(rng.latest, suite, rates, rng.validate_every)
        per_model[model] = (low, high, rates)
        it_per_s = factor / (rates.seconds_per_frame_iteration * tr.curriculum_max)  # before the workers' slowdown
        cap = "" if not high.capped else f" (time cap at ~{_span(f'{low.iterations:,}', f'{high.iterations:,}')} iterations)"
        own = figure.rates(model)[2] or figure.kind == "assumed"  # an assumed rate is every model's
        note = "" if own else f" ({figure.stand_in()}'s figure: none for {model})"
        lines.append(f"    {model:<20} {it_per_s:8.3f} it/s  {_span(_hours(low.seconds), _hours(high.seconds))}{cap}{note}")
    low_total = makespan([_seconds(per_model[w.model], w, 0) for w in todo], workers)
    high_total = makespan([_seconds(per_model[w.model], w, 1) for w in todo], workers)
    label = f"{figure.kind} throughput" + (", another architecture" if figure.caveat else "")
    lines.append(f"  total: {len(work)} jobs{_breakdown(work)}, {running} at a time: "
                 f"{_span(_hours(low_total), _hours(high_total))} (estimate, {label})")
    return lines


def _seconds(model_times: tuple[JobTime, JobTime, Rates], work: JobWork, end: int) -> float:
    """A job's predicted seconds at the low (0) or high (1) end: a whole job, or its stale splits' evaluation."""
    low, high, rates = model_times
    if work.state == "evaluate again":
        return rates.evaluation_of(list(work.splits))
    return (low, high)[end].seconds


def _breakdown(work: list[JobWork]) -> str:
    """' (20 done, 3 to evaluate again, 2 to train)', or '' when every job is to train."""
    counts = {state: sum(w.state == state for w in work) for state in ("done", "evaluate again", "train")}
    if counts["train"] == len(work):
        return ""
    parts = [f"{counts['done']} done" if counts["done"] else "",
             f"{counts['evaluate again']} to evaluate again" if counts["evaluate again"] else "",
             f"{counts['train']} to train" if counts["train"] else ""]
    return f" ({', '.join(p for p in parts if p)})"


def _span(low: str, high: str) -> str:
    """'low .. high', or one value when both ends are the same."""
    return low if low == high else f"{low} .. {high}"


def _iteration_lines(rng: IterationRange, tr: TrainConfig) -> list[str]:
    """The iteration range and why its ends are where they are (`earliest_stop`)."""
    validating = f"one every {rng.validate_every:,} iterations ({rng.validate_every_why})"
    curriculum = f"the curriculum reaches {tr.curriculum_max} frames at iteration {rng.curriculum_done:,}"
    first = earliest_stop(tr, rng.validate_every)
    if not rng.early_stop_possible:
        return [f"  iterations per job: {rng.latest:,} (train.max_iterations)",
                f"    early stopping cannot end a job sooner: it needs {tr.early_stop_patience} + 1 validations "
                f"({first:,} iterations), {validating}; {curriculum}"]
    wait = "early stopping does not wait for it" if rng.curriculum_done > rng.earliest else "before that"
    return [f"  iterations per job: {rng.earliest:,} .. {rng.latest:,}",
            f"    earliest: early stopping after {tr.early_stop_patience} + 1 validations with the first one best, "
            f"{validating}; {curriculum} ({wait})",
            "    latest: train.max_iterations"]


def _rel(path: Path) -> str:
    """`path` relative to the working directory when inside it (shorter lines), else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
