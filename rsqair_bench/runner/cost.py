"""Cost before you start: what `run SUITE --dry-run` predicts a suite will take.

Two things, per job and for the whole suite:

- the iterations the training protocol implies, as a range: the earliest iteration at which
  training/loop.py can stop a job (early stopping, `earliest_stop`) to `train.max_iterations`, plus the
  `train.max_minutes` time cap when one is set;
- the wall time those iterations take on the suite's device, from a throughput figure: a
  `bench --json` file (`--throughput FILE`, else the best match of the suite's precision among the
  committed results/bench/*.json; a file holds one figure per precision and mode it measured), an
  assumed rate (`--throughput IT_PER_S`), or, when no figure fits, a few
  training steps measured here at the suite's setting. Every figure printed says which of these it
  came from; all are estimates, never a measurement of the run itself.

Why this module does not import torch at import time: `run --dry-run`, `--help` and `validate`
must stay light. torch is imported only inside `measure_throughput`, which runs only when no file
or assumed rate fits the suite; the device probe (`probe_device_kind`) uses torch only when the
process has already loaded it.

The model of a job's time (each assumption is a knob a reader can check against a real run):
- a training step's time is proportional to the frames in its sequences (the curriculum grows them
  from `curriculum_start` to `curriculum_max`) and to batch x particles when the figure was
  measured at another batch or particle count (linear: right on a CPU, pessimistic on a GPU);
- one validation is `validation_sequences` forward passes at `curriculum_max` frames (training/loop.py
  `validation_bound`), at the figure's evaluation rate;
- evaluation of a split costs (`eval.samples` + 1) forward passes per sequence (the batched sampled
  frames and the whole-sequence bound, evaluation/evaluate.py `_score_batches`), scaled by frames, particles and
  object slots;
- `workers` jobs run at once, in the runner's order (`runner.seed_major`); on a CPU, jobs whose
  threads outnumber the cores slow down in proportion, and on a GPU parallel jobs share the one
  device, so they are assumed to gain nothing over running one after another.
"""

from __future__ import annotations

import heapq
import importlib.metadata
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rsqair_bench.config import SuiteConfig, TrainConfig
from rsqair_bench.errors import ConfigError

BENCH_DIR = Path(__file__).resolve().parents[2] / "results" / "bench"  # the committed `bench --json` files
BASE_MODEL = "sqair"  # whose figure stands in for a model a bench file does not list
# Evaluation sequences/s per training sequence/s, for an assumed rate (`--throughput IT_PER_S`), which
# gives no evaluation figure: a forward pass without backward or update. The committed CPU files
# measured 2.3-2.7 (eager 2.7 / 2.5, compiled training 2.3).
EVAL_PER_TRAIN_SEQUENCES = 2.5
# Settings a throughput figure must share with the suite to stand for it unscaled: a different
# architecture changes the step's cost by an unknown factor, so a committed file that differs in one
# of these is not used (a measurement is made instead); an explicit --throughput file is used anyway.
ARCHITECTURE = ("n_hidden", "glimpse_size", "max_objects", "z_what")
# How much each other setting counts when choosing among committed files of the right architecture. A
# committed figure must also have the suite's precision (bf16's gain over fp32 depends on the step's size and
# on the device's bf16 instructions, from none to several-fold: no factor converts one into the other); in a
# file given with --throughput, precision outweighs all the other settings together.
MATCH_WEIGHTS = {"precision": 16, "compile": 4, "batch": 3, "particles": 3, "threads": 1, "optimizer": 1}
MEASURE_WARMUP = 1  # untimed steps before timing (the first allocates, and compiles when compiled)
MEASURE_STEPS = 2  # timed training steps of a dry-run measurement: enough for hours-scale estimates


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


# ----------------------------------------------------------------------------- throughput figures
@dataclass
class Figure:
    """A throughput figure and where it came from.

    `settings` holds the keys of a `bench --json` file's settings (batch, particles, frames,
    n_hidden, glimpse_size, max_objects, z_what, optimizer), `threads`, and the variant's `precision`
    and `compile`; the rates are per model at those settings.
    """

    kind: str  # "from file" | "measured" | "assumed"
    source: str  # the file, or how it was measured or assumed
    device: str  # the figure's device, as bench writes it
    device_kind: str  # cpu | cuda: what the figure stands for
    settings: dict[str, Any]
    train_iterations_per_s: dict[str, float]
    eval_sequences_per_s: dict[str, float]
    differences: list[str] = field(default_factory=list)  # settings that differ from the suite's run

    def rates(self, model: str) -> tuple[float, float, bool]:
        """(train it/s, eval sequences/s, whether the figure is this model's own) for `model`."""
        name = model if model in self.train_iterations_per_s else self.stand_in()
        return self.train_iterations_per_s[name], self.eval_sequences_per_s[name], name == model

    def stand_in(self) -> str:
        """The model whose figure stands in for one the figure lacks: sqair, else the first listed."""
        return BASE_MODEL if BASE_MODEL in self.train_iterations_per_s else next(iter(self.train_iterations_per_s))


def run_settings(suite: SuiteConfig, workers: int, threads: int | None = None) -> dict[str, Any]:
    """The suite's run in the keys of a bench file's settings (frames: the curriculum's maximum)."""
    mc, tr = suite.model_config, suite.train
    return {
        "batch": tr.batch_size, "particles": tr.particles, "frames": tr.curriculum_max,
        "n_hidden": mc.n_hidden, "glimpse_size": mc.glimpse_size, "max_objects": mc.max_objects,
        "z_what": mc.z_what, "compile": mc.compile, "optimizer": tr.optimizer, "precision": mc.precision,
        "threads": threads if threads is not None else job_threads(suite, workers),
    }


def job_threads(suite: SuiteConfig, workers: int) -> int:
    """torch threads per job on a CPU, as the runner sets them (`runner._run_jobs`; torch's default in-process)."""
    cores = os.cpu_count() or 1
    if suite.train.torch_threads:
        return suite.train.torch_threads
    return cores if workers == 1 else max(1, cores // workers)


def differences(figure_settings: dict[str, Any], run: dict[str, Any],
                scaled: tuple[str, ...] = ("batch", "particles", "frames")) -> list[str]:
    """Settings where the figure differs from the run, as 'key FIGURE (run: RUN; scaled|not scaled)'."""
    out = []
    for key, wanted in run.items():
        have = figure_settings.get(key)
        if have is None or have == wanted:
            continue
        how = "scaled" if key in scaled else "not scaled"
        out.append(f"{key} {_show(have)} (run: {_show(wanted)}; {how})")
    return out


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def read_bench_figures(path: Path) -> list[Figure]:
    """Every training variant of a `bench --json` file, one Figure per precision and mode (its rows'
    `precision` and `compiled`; a file written before bench measured bf16 has neither: fp32, and the
    mode of its settings' `compile`). A file that is not one is a one-line ConfigError."""
    try:
        doc = json.loads(Path(path).read_text())
        settings = {k: v for k, v in doc["settings"].items() if k not in ("precisions", "modes")}
        settings["threads"] = doc.get("threads")
        groups: dict[tuple[str, bool], tuple[dict[str, float], dict[str, float]]] = {}
        for m in doc["models"]:
            train, evals = groups.setdefault((str(m.get("precision", "fp32")), bool(m.get("compiled", settings.get("compile")))),
                                             ({}, {}))
            train[m["model"]], evals[m["model"]] = float(m["train_iterations_per_s"]), float(m["eval_sequences_per_s"])
        device = str(doc["device"])
    except OSError as err:
        raise ConfigError(f"--throughput {path}: cannot read it ({err.strerror or err})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"--throughput {path}: not a `bench --json` file ({type(err).__name__}: {err})") from None
    rates = [v for train, evals in groups.values() for v in [*train.values(), *evals.values()]]
    if not groups or not all(v > 0 for v in rates):
        raise ConfigError(f"--throughput {path}: expected positive rates for at least one model")
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return [Figure("from file", str(path), device, kind, settings | {"precision": precision, "compile": compiled}, train, evals)
            for (precision, compiled), (train, evals) in groups.items()]


def read_bench_file(path: Path, run: dict[str, Any] | None = None) -> Figure:
    """The figure of a `bench --json` file that matches `run` best (MATCH_WEIGHTS; ties to the file's first
    variant), or its first variant without a run."""
    figures = read_bench_figures(path)
    return figures[0] if run is None else max(figures, key=lambda f: _match_score(f, run))


def _match_score(figure: Figure, run: dict[str, Any]) -> int:
    return sum(w for key, w in MATCH_WEIGHTS.items() if figure.settings.get(key) == run.get(key))


def best_committed_file(bench_dir: Path, device_kind: str, run: dict[str, Any]) -> Figure | None:
    """The committed figure for `device_kind` with the suite's architecture and precision that matches the
    run best: one variant (precision x mode) of one file.

    Ties go to the first file by name, then the file's first variant, so the choice does not depend on the
    directory's order."""
    best: tuple[int, Figure] | None = None
    for path in sorted(Path(bench_dir).glob("*.json")) if Path(bench_dir).is_dir() else []:
        try:
            figures = read_bench_figures(path)
        except ConfigError:
            continue  # not a bench file: not a candidate
        for figure in figures:
            if figure.device_kind != device_kind or figure.settings["precision"] != run.get("precision", "fp32"):
                continue
            if any(figure.settings.get(k) != run[k] for k in ARCHITECTURE if figure.settings.get(k) is not None):
                continue
            score = _match_score(figure, run)
            if best is None or score > best[0]:
                best = (score, figure)
    return None if best is None else best[1]


def assumed_figure(rate: float, suite: SuiteConfig, run: dict[str, Any], device_kind: str) -> Figure:
    """An assumed training rate at the suite's own setting (`--throughput IT_PER_S`)."""
    evals = rate * suite.train.batch_size * EVAL_PER_TRAIN_SEQUENCES
    return Figure("assumed", f"--throughput {rate:g} it/s at {run['frames']} frames, on whatever device the run gets "
                  f"(evaluation: {EVAL_PER_TRAIN_SEQUENCES:g}x the training sequences/s)", "not measured", device_kind,
                  dict(run), {BASE_MODEL: rate}, {BASE_MODEL: evals})


def measure_throughput(suite: SuiteConfig, device_name: str, run: dict[str, Any]) -> Figure:
    """A few eager training steps and one evaluation pass of the suite's first model, here, at its setting.

    Eager even when the suite compiles: compiling takes minutes, which a dry run must not. torch is
    imported here and nowhere else in this module."""
    import torch

    from rsqair_bench.core.device import device_description, resolve_device
    from rsqair_bench.registry import build_model, load_plugins
    from rsqair_bench.runner.bench import make_train_step
    from rsqair_bench.training.optim import build_optimizer, optimizer_update

    device = resolve_device(device_name)
    load_plugins(list(suite.plugins))
    model_name = suite.models[0]
    config = replace(suite.model_config, compile=False)
    tr = suite.train
    generator = torch.Generator().manual_seed(0)
    model = build_model(model_name, config).to(device)
    optimizer = build_optimizer(model, tr, False)
    update = optimizer_update(optimizer, False)
    size = config.image_size
    x = (torch.rand(tr.batch_size, tr.curriculum_max, 1, size, size, generator=generator) > 0.92).float().to(device)
    sample_gen = torch.Generator(device=device).manual_seed(0)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step = make_train_step(model, optimizer, update, x, tr.particles, sample_gen, config.precision)

    old_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(run["threads"])  # the job's own thread count (`job_threads`)
    try:
        for _ in range(MEASURE_WARMUP):
            step()
        sync()
        t0 = time.perf_counter()
        for _ in range(MEASURE_STEPS):
            step()
        sync()
        step_seconds = (time.perf_counter() - t0) / MEASURE_STEPS
        with torch.no_grad():
            t0 = time.perf_counter()
            model(x, tr.particles, sample_gen)
            sync()
            eval_seconds = time.perf_counter() - t0
        settings = dict(run) | {"compile": False, "threads": torch.get_num_threads()}
        description = device_description(device)
    finally:
        torch.set_num_threads(old_threads)
    how = (f"{MEASURE_STEPS} eager training steps of {model_name} here, {config.precision}, after {MEASURE_WARMUP} warm-up, "
           f"{tr.batch_size} sequences of {tr.curriculum_max} frames (whatever else runs here slows them too)")
    return Figure("measured", how, description, device.type, settings, {model_name: 1.0 / step_seconds},
                  {model_name: tr.batch_size / eval_seconds})


# ----------------------------------------------------------------------------- the device
def probe_device_kind(setting: str) -> tuple[str, str]:
    """(cpu | cuda, a note) for a suite's `device` setting on this machine, without importing torch.

    Why a probe: the dry run must not load torch only to ask whether CUDA exists. When torch is
    already loaded its answer is used; otherwise CUDA is taken to be present when the installed torch
    is not a '+cpu' build and an NVIDIA driver is loaded (/proc/driver/nvidia/version or /dev/nvidia0).
    `run` itself asks torch (`device.check_run_device`)."""
    if setting == "cpu":
        return "cpu", "cpu"
    available = cuda_available_probe()
    if setting == "auto":
        return ("cuda", "auto -> cuda") if available else ("cpu", "auto -> cpu (no CUDA here)")
    return "cuda", setting if available else f"{setting} (no CUDA here: `run` will refuse to start)"


def cuda_available_probe() -> bool:
    """Whether CUDA looks usable here: torch's answer when torch is loaded, else the build and the driver."""
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return False
    if "+cpu" in version:
        return False
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def choose_figure(suite: SuiteConfig, workers: int, throughput: str | None, device_kind: str,
                  bench_dir: Path = BENCH_DIR, can_measure: bool = True) -> Figure | None:
    """The figure the estimate uses: --throughput (a file or a rate), a committed file, else a measurement.

    None when there is none and nothing can be measured here (a CUDA suite on a machine without CUDA)."""
    run = run_settings(suite, workers)
    if throughput is not None:
        try:
            rate = float(throughput)
        except ValueError:
            figure = read_bench_file(Path(throughput), run)
        else:
            if not rate > 0:
                raise ConfigError(f"--throughput: expected a bench --json file or a positive it/s, found {throughput!r}")
            return assumed_figure(rate, suite, run, device_kind)
    else:
        figure = best_committed_file(bench_dir, device_kind, run)
        if figure is None:
            if not can_measure:
                return None
            figure = measure_throughput(suite, suite.device, run)
    if figure.device_kind == "cuda" or device_kind == "cuda":
        run = {k: v for k, v in run.items() if k != "threads"}  # CPU threads say nothing about a GPU's rate
    figure.differences = differences(figure.settings, run)
    return figure


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
    evaluation = 0.0
    for split in suite.eval.splits.values():
        ds = suite.data.get(split.data)
        n = ds.splits.get(split.split, 0) if ds is not None else 0  # an .h5 path: size unknown here
        if split.sequences is not None:
            n = min(n, split.sequences)
        split_slots = split.max_objects or suite.model_config.max_objects
        evaluation += (n * (suite.eval.samples + 1) * split.frames * forward
                       * suite.eval.particles / particles * split_slots / slots)
    return Rates(per_frame * slower, validation * slower, evaluation * slower)


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


def slowdown(device_kind: str, workers: int, threads: int, cores: int | None = None) -> float:
    """How much slower each job runs with `workers` at once: CPU cores oversubscribed, or one GPU shared."""
    if workers <= 1:
        return 1.0
    if device_kind == "cuda":
        return float(workers)  # one GPU: parallel jobs assumed to share it without gain
    return max(1.0, workers * threads / (cores or os.cpu_count() or 1))


# ----------------------------------------------------------------------------- the dry run's lines
def _hours(seconds: float) -> str:
    hours = seconds / 3600.0
    if hours < 10:
        return f"{hours:.1f} h"
    return f"{hours:,.0f} h"


def cost_lines(suite: SuiteConfig, workers: int, throughput: str | None = None, bench_dir: Path = BENCH_DIR) -> list[str]:
    """The dry run's cost block: device, figure, iteration range, per model, total. Estimates, labelled so."""
    tr = suite.train
    kind, device_note = probe_device_kind(suite.device)
    n_train = suite.data[suite.train_data].splits.get("training", 0)
    rng = iteration_range(tr, n_train)
    lines = ["cost (estimates, not measurements of this run):", f"  device: {device_note}"]
    lines += _iteration_lines(rng, tr)
    if tr.max_minutes is not None:
        lines.append(f"  time cap: train.max_minutes {tr.max_minutes:g} per job (training and validation; "
                     "evaluation after it), whichever of the cap and the iterations comes first")
    figure = choose_figure(suite, workers, throughput, kind, bench_dir, can_measure=kind == "cpu" or cuda_available_probe())
    if figure is None:
        lines.append(f"  time: no throughput figure for {kind} (none committed in {_rel(bench_dir)}, and no {kind} "
                     "here to measure); pass --throughput FILE (a `bench --json` file) or --throughput IT_PER_S")
        return lines
    source = _rel(Path(figure.source)) if figure.kind == "from file" else figure.source
    match = "matches this run's setting" if not figure.differences else "differs: " + "; ".join(figure.differences)
    lines.append(f"  throughput {figure.kind}: {source} [{figure.device}]; {match}")
    threads = job_threads(suite, workers)
    factor = slowdown(figure.device_kind, workers, threads)
    if factor > 1:
        why = ("jobs share one GPU" if figure.device_kind == "cuda"
               else f"{workers} jobs x {threads} threads on {os.cpu_count()} cores")
        lines.append(f"  workers: {workers} at a time, each {factor:.2f}x slower ({why})")
    span = _span(f"{rng.earliest:,}", f"{rng.latest:,}")
    lines.append(f"  per job (train it/s at {tr.curriculum_max} frames from the figure; hours at {span} iterations, "
                 "validation and evaluation included):")
    per_model: dict[str, tuple[JobTime, JobTime]] = {}
    for model in suite.models:
        rates = rates_for(suite, figure, model, factor)
        low = job_time(rng.earliest, suite, rates, rng.validate_every)
        high = job_time(rng.latest, suite, rates, rng.validate_every)
        per_model[model] = (low, high)
        it_per_s = factor / (rates.seconds_per_frame_iteration * tr.curriculum_max)  # before the workers' slowdown
        cap = "" if not high.capped else f" (time cap at ~{_span(f'{low.iterations:,}', f'{high.iterations:,}')} iterations)"
        own = figure.rates(model)[2] or figure.kind == "assumed"  # an assumed rate is every model's
        note = "" if own else f" ({figure.stand_in()}'s figure: none for {model})"
        lines.append(f"    {model:<20} {it_per_s:8.3f} it/s  {_span(_hours(low.seconds), _hours(high.seconds))}{cap}{note}")
    order = [per_model[model] for _seed in suite.seeds for model in suite.models]  # the runner's: seed by seed
    low_total = makespan([low.seconds for low, _ in order], workers)
    high_total = makespan([high.seconds for _, high in order], workers)
    lines.append(f"  total: {len(order)} jobs, {min(workers, len(order))} at a time: "
                 f"{_span(_hours(low_total), _hours(high_total))} (estimate, {figure.kind} throughput)")
    return lines


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
