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
import dataclasses
import functools
import hashlib
import importlib.metadata
import logging
import multiprocessing
import multiprocessing.connection as mp_connection
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rsqair_bench.config import (
    DataSetConfig,
    EvalConfig,
    EvalSplit,
    JobConfig,
    SuiteConfig,
    dump_yaml,
    first_changed_setting,
    load_config,
    load_yaml,
)
from rsqair_bench.errors import ConfigError
from rsqair_bench.io import atomic_write_text
from rsqair_bench.job_status import mark_phase
from rsqair_bench.live_progress import LiveProgress, TrackedJob
from rsqair_bench.metrics import JOB_LEVEL_KEYS, TRAIN_KEYS, TrainStats, paper_name_or_model, write_metrics
from rsqair_bench.progress import progress_enabled
from rsqair_bench.suite import Job, expand_jobs, validate_suite

log = logging.getLogger(__name__)

# train_fn(job_config, out_dir, progress) -> TrainResult (a dataclass or a dict)
TrainFn = Callable[..., Any]
# eval_fn(checkpoint, data_path, split, eval_cfg, device=..., seed=...) -> one split's metrics dict
EvalFn = Callable[..., dict]
# metrics_fn(job, train_result, splits, path) writes metrics.json
MetricsFn = Callable[["Job", Any, dict, Path], Any]
PrepareDataFn = Callable[[DataSetConfig], Path]

Status = Literal["done", "skipped", "locked", "failed"]
RAY_MISSING = "executor 'ray' needs Ray: pip install 'rsqair-bench[ray]'"


@dataclass
class JobOutcome:
    name: str  # <model>/seed<k>
    status: Status
    directory: str
    seconds: float = 0.0
    error: str | None = None  # one line; the traceback is in error.txt


@dataclass
class RunSummary:
    outcomes: list[JobOutcome]
    report_dir: Path | None = None

    def count(self, status: Status) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        return 1 if self.count("failed") else 0


# ----------------------------------------------------------------------------- the job function
def _default_train(job: JobConfig, out_dir: Path, progress: bool = True) -> Any:
    from rsqair_bench.train import train_job  # lazy: keeps `run --dry-run` and the CLI light

    return train_job(job, out_dir, progress=progress)


def _default_eval(
    checkpoint: Path, data_path: str, split: EvalSplit, eval_cfg: EvalConfig, device: str = "auto", seed: int = 0
) -> dict:
    from rsqair_bench.evaluate import evaluate_checkpoint

    rollout = checkpoint.parent / f"rollout_{split.data}_{split.split}.npz"  # for the report's Figure 3
    return evaluate_checkpoint(checkpoint, data_path, split, eval_cfg, device=device, seed=seed, rollout_path=rollout)


def _default_metrics(job: Job, train_result: Any, splits: dict[str, dict], path: Path) -> dict:
    """Job facts from best.pt (evaluate.job_info_from_checkpoint), training totals from the train result."""
    from rsqair_bench.evaluate import job_info_from_checkpoint

    info = job_info_from_checkpoint(job.directory / "best.pt", suite=job.suite, device=job.config.device)
    info["train"] = _train_stats(train_result)
    return write_metrics(path, info, splits)


def write_basic_metrics(job: Job, train_result: Any, splits: dict[str, dict], path: Path) -> dict:
    """metrics.json from build_metrics, without reading the checkpoint (for fake or external train steps)."""
    metrics = build_metrics(job, train_result, splits)
    return write_metrics(path, metrics, metrics.pop("splits"))


def _as_dict(result: Any) -> dict[str, Any]:
    """A train result as a mapping: train.TrainResult, or a plain dict of the same fields (fakes, external steps)."""
    if result is None:
        return {}
    if isinstance(result, dict):
        return dict(result)
    if dataclasses.is_dataclass(result):
        return dataclasses.asdict(result)
    return dict(vars(result))


def _train_stats(train_result: Any) -> dict[str, Any]:
    """The `train` entry of metrics.json from a train result (the one route training figures take)."""
    tr = _as_dict(train_result)
    return tr.get("train") or TrainStats(**{k: tr.get(k) for k in TRAIN_KEYS}).as_dict()


def _torch_version() -> str:
    try:  # without importing torch (seconds) when the train step did not
        return sys.modules["torch"].__version__ if "torch" in sys.modules else importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_metrics(job: Job, train_result: Any, splits: dict[str, dict]) -> dict[str, Any]:
    """metrics.json for one job (schema: metrics.py, docs/metrics.md).

    Job-level facts come from the train result when it has them, else from an evaluated split
    (evaluation reads the checkpoint), else from the job itself.
    """
    tr = _as_dict(train_result)
    splits = {k: dict(v) for k, v in splits.items()}
    hoisted: dict[str, Any] = {}
    for split_metrics in splits.values():
        for key in JOB_LEVEL_KEYS:
            if key in split_metrics:
                hoisted.setdefault(key, split_metrics.pop(key))

    def pick(key: str, default: Any) -> Any:
        return tr.get(key, hoisted.get(key, default))

    config_hash = hashlib.sha256(dump_yaml(job.config).encode()).hexdigest()[:16]
    return {
        "model": job.model,
        "paper_name": tr.get("paper_name") or hoisted.get("paper_name") or paper_name_or_model(job.model),
        "seed": job.seed,
        "suite": job.suite,
        "config_hash": pick("config_hash", config_hash),
        "checkpoint_iteration": pick("checkpoint_iteration", tr.get("best_iteration")),
        "parameters": pick("parameters", {}),
        "device": pick("device", job.config.device),
        "torch_version": pick("torch_version", _torch_version()),
        "train": _train_stats(train_result),
        "splits": splits,
    }


def execute_job(
    job: Job,
    progress: bool = False,
    train_fn: TrainFn | None = None,
    eval_fn: EvalFn | None = None,
    metrics_fn: MetricsFn | None = None,
) -> JobOutcome:
    """Train, evaluate best.pt on every eval split, write metrics.json, then DONE. Never raises."""
    import filelock

    start = time.perf_counter()
    out = job.directory
    out.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(out / ".lock"), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        return JobOutcome(job.name, "locked", str(out), error="locked by another runner")
    try:
        if (out / "DONE").exists():  # another runner finished it while we waited
            return JobOutcome(job.name, "skipped", str(out))
        try:
            atomic_write_text(out / "config.yaml", dump_yaml(job.config))
            train_result = (train_fn or _default_train)(job.config, out, progress=progress)
            mark_phase(out, "evaluating")  # for the live display; no-op without a status file
            splits = {}
            for key, split in job.eval.splits.items():
                splits[key] = (eval_fn or _default_eval)(
                    out / "best.pt", job.split_data_path(split.data), split, job.eval, device=job.config.device, seed=job.seed
                )
            (metrics_fn or _default_metrics)(job, train_result, splits, out / "metrics.json")
            (out / "error.txt").unlink(missing_ok=True)
            atomic_write_text(out / "DONE", time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
        except BaseException as err:  # noqa: BLE001 - a job's failure is recorded, not propagated
            if isinstance(err, KeyboardInterrupt):
                raise
            atomic_write_text(out / "error.txt", traceback.format_exc())
            line = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            return JobOutcome(job.name, "failed", str(out), time.perf_counter() - start, line)
        return JobOutcome(job.name, "done", str(out), time.perf_counter() - start)
    finally:
        lock.release()


# ----------------------------------------------------------------------------- executors
def _limit_threads(threads: int | None) -> None:
    """Per-worker torch threads: env vars before torch loads, set_num_threads if it already has."""
    if not threads:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _worker_init(threads: int | None, parent: int) -> None:
    """Pool worker setup; a watchdog ends the worker if the runner dies (e.g. SIGKILL) so its lock frees."""
    _limit_threads(threads)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _ray_task(job_fn: Callable[[Job], JobOutcome], job: Job, threads: int | None) -> JobOutcome:
    _limit_threads(threads)
    return job_fn(job)


def _crashed(job: Job, err: BaseException) -> JobOutcome:
    """A worker died without reporting (killed, out of memory): record it like any failure."""
    line = f"{type(err).__name__}: {err}".splitlines()[0]
    try:
        job.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(job.directory / "error.txt", f"worker crashed: {line}\n")
    except OSError:
        pass
    return JobOutcome(job.name, "failed", str(job.directory), error=line)


def run_local(
    jobs: list[Job], job_fn: Callable[[Job], JobOutcome], workers: int, threads: int | None, on_done: Callable[[JobOutcome], None]
) -> list[JobOutcome]:
    """workers == 1: in this process, one after another; else one spawned process per job (`_run_isolated`)."""
    outcomes = []
    if workers == 1:
        for job in jobs:
            outcomes.append(job_fn(job))
            on_done(outcomes[-1])
        return outcomes
    return _run_isolated(jobs, job_fn, workers, threads, on_done)


def _job_process_main(job_fn: Callable[[Job], JobOutcome], job: Job, threads: int | None, parent: int, conn: Any) -> None:
    """Entry of one job's process: run it and send the outcome back (job_fn never raises; be safe anyway)."""
    _worker_init(threads, parent)
    try:
        outcome = job_fn(job)
    except BaseException as err:  # noqa: BLE001 - reported to the parent as this job's failure
        line = f"{type(err).__name__}: {err}".splitlines()[0]
        outcome = JobOutcome(job.name, "failed", str(job.directory), error=line)
    conn.send(outcome)
    conn.close()


def _collect(job: Job, proc: Any, conn: Any) -> JobOutcome:
    """The outcome the job's process sent, or a crash record when it died without sending one."""
    proc.join()
    try:
        if conn.poll():
            return conn.recv()
    except (EOFError, OSError):
        pass
    finally:
        conn.close()
    code = proc.exitcode
    how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
    return _crashed(job, ChildProcessError(f"job process {proc.pid} died ({how}) before reporting"))


def _run_isolated(
    jobs: list[Job], job_fn: Callable[[Job], JobOutcome], workers: int, threads: int | None,
    on_done: Callable[[JobOutcome], None],
) -> list[JobOutcome]:
    """Each job in its own spawned process, at most `workers` at a time.

    Why not a ProcessPoolExecutor: when one of its workers dies (SIGKILL, the OOM killer, a plugin
    calling os._exit), it marks every pending job as failed with BrokenProcessPool. Here a process
    that dies fails only its own job; the others finish, and a rerun retries only that one.
    """
    ctx = multiprocessing.get_context("spawn")
    queue = list(jobs)
    running: dict[int, tuple[Job, Any, Any]] = {}  # process sentinel -> (job, process, receiving end)
    outcomes: list[JobOutcome] = []
    try:
        while queue or running:
            while queue and len(running) < workers:
                job = queue.pop(0)
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_job_process_main, args=(job_fn, job, threads, os.getpid(), send),
                                   name=f"rsqair job {job.name}")
                proc.start()
                send.close()  # the child holds the only sending end: EOF when it dies
                running[proc.sentinel] = (job, proc, receive)
            for sentinel in mp_connection.wait(list(running)):
                outcome = _collect(*running.pop(sentinel))
                outcomes.append(outcome)
                on_done(outcome)
    finally:  # interrupted: stop the jobs still running (their checkpoints stay; a rerun resumes them)
        for _, proc, _ in running.values():
            proc.terminate()
        for _, proc, _ in running.values():
            proc.join()
    return outcomes


def run_ray(
    jobs: list[Job],
    job_fn: Callable[[Job], JobOutcome],
    suite: SuiteConfig,
    threads: int | None,
    on_done: Callable[[JobOutcome], None],
) -> list[JobOutcome]:
    """The same job function as Ray tasks, with per-job CPU/GPU resources from the suite."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    started_here = False
    if not ray.is_initialized():
        address = suite.ray.address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
        started_here = True
    try:
        task = ray.remote(num_cpus=suite.ray.num_cpus_per_job, num_gpus=suite.ray.num_gpus_per_job, max_retries=0)(_ray_task)
        pending = {task.remote(job_fn, job, threads): job for job in jobs}
        outcomes = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                outcome = ray.get(ready[0])
            except Exception as err:  # the worker died or the task could not run
                outcome = _crashed(job, err)
            outcomes.append(outcome)
            on_done(outcome)
        return outcomes
    finally:
        if started_here:
            ray.shutdown()


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


def _data_sets_used(suite: SuiteConfig) -> list[str]:
    names = [suite.train_data] + [s.data for s in suite.eval.splits.values() if s.data in suite.data]
    return list(dict.fromkeys(names))


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
        _print_dry_run(suite, jobs, executor, workers, results_dir, out)
        return RunSummary([])
    if executor == "ray":
        try:
            import ray  # noqa: F401 - fail before generating data
        except ImportError:
            raise ConfigError(RAY_MISSING) from None
    _refuse_stale_done_jobs(jobs, results_dir)
    for name in _data_sets_used(suite):
        (prepare_data or _default_prepare)(suite.data[name])

    todo = seed_major([j for j in jobs if not (j.directory / "DONE").exists()], suite)
    skipped = [JobOutcome(j.name, "skipped", str(j.directory)) for j in jobs if (j.directory / "DONE").exists()]
    print(
        f"{suite.name}: {len(jobs)} jobs, {len(skipped)} already done, {len(todo)} to run "
        f"({executor}, {workers} worker{'s' if workers > 1 else ''})",
        file=out,
    )
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


def _print_dry_run(suite: SuiteConfig, jobs: list[Job], executor: str, workers: int, results_dir: Path, out: Any) -> None:
    print(
        f"{len(jobs)} jobs ({len(suite.models)} models x {len(suite.seeds)} seeds), executor {executor}, "
        f"workers {workers}, results in {results_dir}",
        file=out,
    )
    for job in jobs:
        print(f"  {job.name:<28} {job_state(job):<8} -> {job.directory}", file=out)
    for name in _data_sets_used(suite):
        path = Path(suite.data[name].path)
        print(f"  data {name}: {path} ({'exists' if path.exists() else 'will be generated'})", file=out)


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
    from rsqair_bench.report import write_report

    written = write_report(results_dir, expected_seeds=len(suite.seeds), baseline=suite.baseline)
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
    parser.add_argument("--dry-run", action="store_true", help="list the jobs and where they write; run nothing")
    parser.add_argument("--workers", type=int, default=None, help="parallel jobs (default: the suite's workers)")
    parser.add_argument("--executor", choices=["local", "ray"], default=None, help="default: the suite's executor")
    parser.add_argument("--no-report", action="store_true", help="do not write tables and figures at the end")


def command(args: argparse.Namespace) -> int:
    suite = validate_suite(load_config(SuiteConfig, args.suite), args.suite)
    summary = run_suite(suite, workers=args.workers, executor=args.executor, dry_run=args.dry_run, report=not args.no_report)
    return summary.exit_code
