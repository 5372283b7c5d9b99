"""`run SUITE`: train and evaluate every model x seed of a suite, then write the report.

A job is (model, seed). Its directory (results/<suite>/<model>/seed<k>) holds config.yaml,
checkpoint.pt, best.pt, train_log.csv, metrics.json and DONE, plus error.txt while it is
failed. `DONE` is written last, so a job is finished iff `DONE` exists; a rerun skips those
and resumes the others from their checkpoints (train_job resumes by itself). A per-job file
lock keeps two runners on one results directory from running the same job twice.

The job function (`execute_job`) is the same under every executor; its train and eval
steps are parameters so tests can run the runner with fake ones.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsqair_bench.config import (
    DataSetConfig,
    SuiteConfig,
    first_changed_setting,
    load_config,
)
from rsqair_bench.config_files import load_yaml
from rsqair_bench.core.progress import progress_enabled
from rsqair_bench.errors import ConfigError
from rsqair_bench.runner.executors import RAY_MISSING, run_local, run_ray
from rsqair_bench.runner.job import (
    EvalFn,
    JobOutcome,
    MetricsFn,
    Status,
    TrainFn,
    execute_job,
    refuse_changed_training_data,
    stale_splits,
)
from rsqair_bench.runner.live_progress import LiveProgress, TrackedJob
from rsqair_bench.runner.suite import Job, expand_jobs, validate_suite

if TYPE_CHECKING:
    from rsqair_bench.runner.cost import JobWork

log = logging.getLogger(__name__)

PrepareDataFn = Callable[[DataSetConfig], Path]


@dataclass
class RunSummary:
    outcomes: list[JobOutcome]
    report_dir: Path | None = None

    def count(self, status: Status) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        return 1 if self.count("failed") else 0


# ----------------------------------------------------------------------------- the run
def job_state(job: Job) -> str:
    """done | failed | partial (a checkpoint to resume from) | pending, from the job directory only."""
    d = job.directory
    if (d / "DONE").exists():
        return "done"
    if (d / "error.txt").exists():
        return "failed"
    if (d / "checkpoint.pt").exists():
        return "partial"
    return "pending"


FILE_DIGEST = "file-sha256:"  # prefix of a checksum taken over a data file's bytes (a file without a stored one)


def data_checksum(path: Path | None) -> str | None:
    """The data file's identity: its stored checksum attribute (data/h5.py), or for a file without one
    (R-NEM's files, say) `file-sha256:<hex>` of its bytes; None when there is no file.

    Why the fallback: a file without the attribute recorded null, so regenerating or replacing it went
    unnoticed and its splits kept their old numbers."""
    if path is None or not Path(path).is_file():
        return None
    from rsqair_bench.data.h5 import stored_checksum

    stored = stored_checksum(path)
    if stored is not None:
        return stored
    digest = hashlib.sha256()
    with open(path, "rb") as fh:  # a regular file (is_file above): no FIFO to block on
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    return FILE_DIGEST + digest.hexdigest()


def _data_sets_used(suite: SuiteConfig) -> list[str]:
    names = [suite.train_data] + [s.data for s in suite.eval.splits.values() if s.data in suite.data]
    return list(dict.fromkeys(names))


def _files_given_by_path(suite: SuiteConfig, where: str) -> dict[str, str]:
    """The eval splits' data given as an .h5 path (not a data set name): path -> its checksum, keyed as
    the split names it (`Job.data_checksums`). A missing file is refused now, before any training.

    Why: these files are read by every job's evaluation like the suite's data sets, but only the data
    sets' checksums were recorded, so a regenerated file left its splits "done" with the old numbers."""
    checksums = {}
    for key, split in suite.eval.splits.items():
        if split.data in suite.data or split.data in checksums:
            continue
        if not Path(split.data).is_file():
            raise ConfigError(f"{where}: eval.splits.{key}.data: {split.data!r} is not a file; expected an .h5 data "
                              "file (a split given by path is read, never generated)")
        checksums[split.data] = data_checksum(Path(split.data))
    return checksums


def _default_prepare(ds: DataSetConfig) -> Path:
    from rsqair_bench.data.commands import ensure_dataset

    return ensure_dataset(ds, progress=progress_enabled())


def _refuse_stale_done_jobs(jobs: list[Job], results_dir: Path) -> None:
    """Refuse to reuse a finished job whose training settings the suite has changed since.

    Why: a rerun skips DONE jobs, so after an edit (a new switch, another lr) the report would show
    the old run's numbers under the new settings, silently. Only training settings are compared
    (the job's config.yaml); a job directory without one (older runners) is trusted."""
    stale = []
    for job in jobs:
        saved_path = job.directory / "config.yaml"
        if not (job.directory / "DONE").exists() or not saved_path.exists():
            continue
        key = first_changed_setting(load_yaml(saved_path), job.config)
        if key is not None:
            stale.append(f"{job.name} ({key})")
    if stale:
        raise ConfigError(
            f"{results_dir}: {len(stale)} finished job(s) ran with other settings than the suite now sets: "
            f"{', '.join(stale)}. Their results would be reported under the new settings. To rerun them, move "
            f"{results_dir} aside or delete those job directories; to keep them, undo the change."
        )


def run_suite(
    suite: SuiteConfig,
    *,
    workers: int | None = None,
    executor: str | None = None,
    dry_run: bool = False,
    report: bool = True,
    train_fn: TrainFn | None = None,
    eval_fn: EvalFn | None = None,
    metrics_fn: MetricsFn | None = None,
    prepare_data: PrepareDataFn | None = None,
    out: Any = None,
    throughput: str | None = None,
) -> RunSummary:
    """Run the unfinished jobs of a validated suite. Train/eval/data steps are injectable (tests).

    Functions passed in must be importable module-level functions when workers > 1 or
    executor == 'ray' (they are pickled into the workers).
    """
    out = out or sys.stdout
    workers = suite.workers if workers is None else workers  # --workers 0 is an error, not "the suite's value"
    executor = executor or suite.executor
    if workers < 1:
        raise ConfigError(f"--workers: expected >= 1, found {workers}")
    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor: expected 'local' or 'ray', found {executor!r}")
    jobs = expand_jobs(suite)
    results_dir = Path(suite.results) / suite.name
    if dry_run:
        _print_dry_run(suite, jobs, executor, workers, results_dir, out, throughput)
        return RunSummary([])
    if executor == "ray":
        try:
            import ray  # noqa: F401 - fail before generating data
        except ImportError:
            raise ConfigError(RAY_MISSING) from None
    _refuse_stale_done_jobs(jobs, results_dir)
    checksums = _files_given_by_path(suite, f"suite {suite.name!r}")
    for name in _data_sets_used(suite):
        checksums[name] = data_checksum((prepare_data or _default_prepare)(suite.data[name]))
    for job in jobs:
        job.data_checksums = dict(checksums)
    refuse_changed_training_data(jobs, results_dir)

    finished = [j for j in jobs if (j.directory / "DONE").exists()]
    reevaluate = {j.name: stale_splits(j) for j in finished}
    reevaluate = {name: why for name, why in reevaluate.items() if why}
    done_names = {j.name for j in finished}
    todo = seed_major([j for j in jobs if j.name not in done_names or j.name in reevaluate], suite)
    skipped = [JobOutcome(j.name, "skipped", str(j.directory)) for j in finished if j.name not in reevaluate]
    print(
        f"{suite.name}: {len(jobs)} jobs, {len(skipped)} already done, {len(todo) - len(reevaluate)} to run, "
        f"{len(reevaluate)} to evaluate again from best.pt ({executor}, {workers} worker{'s' if workers > 1 else ''})",
        file=out,
    )
    for name, why in list(reevaluate.items())[:3]:
        print(f"  {name}: " + "; ".join(f"{k}: {v}" for k, v in why.items()), file=out)
    # no per-job tqdm bar: the live display draws every job, in-process or not
    job_fn = functools.partial(execute_job, progress=False, train_fn=train_fn, eval_fn=eval_fn, metrics_fn=metrics_fn)
    outcomes = _run_jobs(suite, todo, len(jobs), len(skipped), job_fn, executor, workers, out)
    summary = RunSummary(skipped + outcomes)
    _print_summary(suite.name, summary, out)
    if report and any(results_dir.glob("*/seed*/metrics.json")):
        summary.report_dir = _write_suite_report(suite, results_dir, out)
    return summary


def seed_major(jobs: list[Job], suite: SuiteConfig) -> list[Job]:
    """The order jobs start in: every model of the first seed, then every model of the next seed, ...

    Why: the first job of each model compiles its frames cold (tens of seconds, minutes on a loaded
    machine); started one seed at a time, no two jobs of one model compile together, and every later
    seed finds inductor's on-disk cache warm. A run stopped halfway also has whole seeds to report."""
    return sorted(jobs, key=lambda j: (suite.seeds.index(j.seed), suite.models.index(j.model)))


def _print_dry_run(suite: SuiteConfig, jobs: list[Job], executor: str, workers: int, results_dir: Path, out: Any,
                   throughput: str | None = None) -> None:
    """The jobs, their states and data, then what they will cost (cost.py: iterations and predicted hours)."""
    from rsqair_bench.runner.cost import cost_lines  # lazy: only the dry run needs it

    work, states, stale = dry_run_work(suite, jobs)
    if suite.states is not None:  # the state-space track: its size; its measured time is in docs/states.md
        cost = _states_cost_lines(suite, len(jobs), workers)
    else:
        cost = cost_lines(suite, workers, throughput, work=work)  # first: a bad --throughput fails before any output
    print(
        f"{len(jobs)} jobs ({len(suite.models)} models x {len(suite.seeds)} seeds), executor {executor}, "
        f"workers {workers}, results in {results_dir}",
        file=out,
    )
    for job in jobs:
        print(f"  {job.name:<28} {states[job.name]:<8} -> {job.directory}", file=out)
    for name, why in list(stale.items())[:3]:
        print(f"  {name}: " + "; ".join(f"{k}: {v}" for k, v in why.items()), file=out)
    for name in _data_sets_used(suite):
        path = Path(suite.data[name].path)
        print(f"  data {name}: {path} ({'exists' if path.exists() else 'will be generated'})", file=out)
    print("\n".join(cost), file=out)


def _states_cost_lines(suite: SuiteConfig, jobs: int, workers: int) -> list[str]:
    """The state-space track's cost: its size, and where its measured wall time is (docs/states.md).

    No throughput model here: a state-space training is a few thousand small steps, and the whole
    suite's measured time says more than a per-step figure would."""
    states, train = suite.states, suite.train
    trainings = jobs * len(states.noise_px)  # type: ignore[union-attr]
    return [
        "cost (state-space track):",
        f"  {jobs} jobs x {len(states.noise_px)} models (one per states.noise_px) = {trainings} trainings of "  # type: ignore[union-attr]
        f"{train.max_iterations:,} steps x {train.batch_size} windows, {workers} at a time",
        "  measured wall time of suites/states.yaml: docs/states.md, \"Cost\"",
    ]


def dry_run_work(suite: SuiteConfig, jobs: list[Job]) -> tuple[list[JobWork], dict[str, str], dict[str, dict[str, str]]]:
    """What each job still needs, as `run` would judge it, without running anything: the cost's JobWork
    list in the runner's order, each job's state for the listing (`job_state`, with `evaluate again`
    for a finished job whose evaluation is stale) and, for those, which splits and why (`stale_splits`).

    Why: the dry run priced finished jobs as if they would train again and showed a stale one as
    `done`. A data file not generated yet is taken to be the file the job evaluated (the generator is a
    pure function of its settings; `run` compares the checksums once it exists)."""
    from rsqair_bench.runner.cost import JobWork

    finished = [j for j in jobs if (j.directory / "DONE").exists()]
    present = {n: data_checksum(Path(suite.data[n].path)) for n in _data_sets_used(suite)
               if Path(suite.data[n].path).exists()} if finished else {}
    states, stale = {}, {}
    for job in jobs:
        states[job.name] = job_state(job)
        if states[job.name] != "done":
            continue
        job.data_checksums = _recorded_data_checksums(job) | present
        why = stale_splits(job)
        if why:
            states[job.name], stale[job.name] = "evaluate again", why
    cost_state = {"done": "done", "evaluate again": "evaluate again"}
    work = [JobWork(j.model, j.seed, cost_state.get(states[j.name], "train"), tuple(stale.get(j.name, {})))
            for j in seed_major(jobs, suite)]
    return work, states, stale


def _recorded_data_checksums(job: Job) -> dict[str, str | None]:
    """Data set name -> the checksum a finished job's metrics.json recorded for it ({} when unreadable)."""
    from rsqair_bench.core.io import read_regular_file

    try:
        splits = json.loads(read_regular_file(job.directory / "metrics.json")).get("splits")
        recorded = {}
        for entry in splits.values():
            settings = entry["settings"]
            recorded[settings["split"]["data"]] = settings["data_checksum"]
        return recorded
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def _run_jobs(suite: SuiteConfig, todo: list[Job], total: int, already_done: int, job_fn: Callable[[Job], JobOutcome],
              executor: str, workers: int, out: Any) -> list[JobOutcome]:
    """Run `todo` on the executor under the live display; one line per finished job."""
    in_process = executor == "local" and workers == 1
    threads = suite.train.torch_threads or (max(1, (os.cpu_count() or 1) // workers) if not in_process else None)
    tracked = [TrackedJob(j.name, j.directory, j.config.train.max_iterations) for j in todo]
    display = LiveProgress(suite.name, tracked, total=total, already_done=already_done, out=out).start()
    finished = [already_done]

    def on_done(outcome: JobOutcome) -> None:
        finished[0] += 1
        msg = f"[{finished[0]}/{total}] {outcome.name}: {outcome.status}"
        if outcome.status == "done":
            msg += f" in {outcome.seconds:.0f}s"
        elif outcome.error:
            msg += (
                f" ({outcome.error}; see {Path(outcome.directory) / 'error.txt'})"
                if outcome.status == "failed"
                else f" ({outcome.error})"
            )
        display.finished(outcome.name, msg)

    try:
        if executor == "ray":
            return run_ray(todo, job_fn, suite, threads, on_done)
        return run_local(todo, job_fn, workers, threads, on_done)
    finally:
        display.stop()


def _print_summary(name: str, summary: RunSummary, out: Any) -> None:
    failed = [o for o in summary.outcomes if o.status == "failed"]
    locked = [o for o in summary.outcomes if o.status == "locked"]
    print(
        f"{name}: {summary.count('done')} done, {summary.count('skipped')} skipped (already done), "
        f"{len(failed)} failed, {len(locked)} locked by another runner",
        file=out,
    )
    for o in failed:
        print(f"  FAILED {o.name}: {o.error} (details: {Path(o.directory) / 'error.txt'}; rerun to retry)", file=out)
    for o in locked:
        print(f"  LOCKED {o.name}: another runner holds {Path(o.directory) / '.lock'}", file=out)


def _write_suite_report(suite: SuiteConfig, results_dir: Path, out: Any) -> Path:
    """report/ from every metrics.json of the suite (report.write_report); returns the report directory."""
    from rsqair_bench.report.write import write_report

    pixel_results = suite.states.pixel_results if suite.states is not None else None
    written = write_report(results_dir, expected_seeds=len(suite.seeds), baseline=suite.baseline, pixel_results=pixel_results)
    report_dir = results_dir / "report"
    tables = ", ".join(p.name for p in written if p.parent == report_dir and p.suffix != ".pdf")
    headline = report_dir / "table.md"  # the sampled frame's LL per model, with the reference predictors' rows
    if headline.is_file():
        print(headline.read_text().rstrip("\n") + "\n", file=out)
    print(f"report: tables in {report_dir} ({tables})", file=out)
    figs = report_dir / "figures"
    if figs.is_dir():
        print(f"report: figures in {figs}", file=out)
    return report_dir


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="suite YAML file (e.g. suites/quick.yaml)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the jobs, where they write and what they will cost (estimates); run nothing")
    parser.add_argument("--workers", type=int, default=None, help="parallel jobs (default: the suite's workers)")
    parser.add_argument("--executor", choices=["local", "ray"], default=None, help="default: the suite's executor")
    parser.add_argument("--no-report", action="store_true", help="do not write tables and figures at the end")
    parser.add_argument("--throughput", metavar="FILE|IT_PER_S", default=None,
                        help="with --dry-run: predict hours from this `bench --json` file, or from an assumed training "
                             "rate in it/s at the suite's setting (default: the best committed results/bench file)")


def command(args: argparse.Namespace) -> int:
    suite = validate_suite(load_config(SuiteConfig, args.suite), args.suite)
    if args.throughput is not None and not args.dry_run:
        raise ConfigError("--throughput: only with --dry-run (it feeds the cost estimate)")
    if not args.dry_run:  # before any data or training work: a cuda suite on a machine without CUDA stops here
        from rsqair_bench.core.device import check_run_device  # imports torch

        print(check_run_device(suite.device, args.suite, args.executor or suite.executor))
    summary = run_suite(suite, workers=args.workers, executor=args.executor, dry_run=args.dry_run, report=not args.no_report,
                        throughput=args.throughput)
    return summary.exit_code
