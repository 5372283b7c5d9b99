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
import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
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
from rsqair_bench.core.io import atomic_write_text, directory_lock
from rsqair_bench.core.job_status import mark_phase
from rsqair_bench.core.progress import progress_enabled
from rsqair_bench.errors import ConfigError, LockedError
from rsqair_bench.metrics import (
    JOB_LEVEL_KEYS,
    TRAIN_KEYS,
    TrainStats,
    evaluation_settings,
    paper_name_or_model,
    write_metrics,
)
from rsqair_bench.runner.live_progress import LiveProgress, TrackedJob
from rsqair_bench.runner.suite import Job, expand_jobs, validate_suite

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
    from rsqair_bench.training.loop import train_job  # lazy: keeps `run --dry-run` and the CLI light

    return train_job(job, out_dir, progress=progress)


def _default_eval(
    checkpoint: Path, data_path: str, split: EvalSplit, eval_cfg: EvalConfig, device: str = "auto", seed: int = 0
) -> dict:
    from rsqair_bench.evaluation.evaluate import evaluate_checkpoint

    rollout = checkpoint.parent / f"rollout_{split.data}_{split.split}.npz"  # for the report's Figure 3
    return evaluate_checkpoint(checkpoint, data_path, split, eval_cfg, device=device, seed=seed, rollout_path=rollout,
                               knockout=True)


def _default_metrics(job: Job, train_result: Any, splits: dict[str, dict], path: Path) -> dict:
    """Job facts from best.pt (evaluate.job_info_from_checkpoint), training totals from the train result."""
    from rsqair_bench.evaluation.evaluate import job_info_from_checkpoint

    info = job_info_from_checkpoint(job.directory / "best.pt", suite=job.suite, device=job.config.device)
    info["train"] = _train_stats(train_result)
    return write_metrics(path, info, splits)


def write_basic_metrics(job: Job, train_result: Any, splits: dict[str, dict], path: Path) -> dict:
    """metrics.json from build_metrics, without reading the checkpoint (for fake or external train steps)."""
    metrics = build_metrics(job, train_result, splits)
    return write_metrics(path, metrics, metrics.pop("splits"))


def _as_dict(result: Any) -> dict[str, Any]:
    """A train result as a mapping: training.state.TrainResult, or a plain dict of the same fields (fakes, external steps)."""
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
    start = time.perf_counter()
    out = job.directory
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(directory_lock(out))  # the lock `train --out` takes too
        except LockedError:
            return JobOutcome(job.name, "locked", str(out), error="locked by another runner")
        return _execute_locked(job, out, start, progress, train_fn, eval_fn, metrics_fn)


def _execute_locked(job: Job, out: Path, start: float, progress: bool, train_fn: TrainFn | None,
                    eval_fn: EvalFn | None, metrics_fn: MetricsFn | None) -> JobOutcome:
    """execute_job's work, under the job directory's lock."""
    finished = (out / "DONE").exists()
    if finished and not stale_splits(job):  # another runner finished it while we waited
        return JobOutcome(job.name, "skipped", str(out))
    try:
        if finished:  # trained already: evaluate best.pt again where the evaluation changed
            train_result, splits = _reevaluation_inputs(job)
            todo = stale_splits(job)
        else:
            atomic_write_text(out / "config.yaml", dump_yaml(job.config))
            atomic_write_text(out / TRAIN_DATA_FILE, json.dumps(_train_data_identity(job), indent=2) + "\n")
            train_result, splits = (train_fn or _default_train)(job.config, out, progress=progress), {}
            todo = dict.fromkeys(job.eval.splits, "not evaluated")
        mark_phase(out, "evaluating")  # for the live display; no-op without a status file
        for key in todo:
            split = job.eval.splits[key]
            entry = (eval_fn or _default_eval)(
                out / "best.pt", job.split_data_path(split.data), split, job.eval, device=job.config.device, seed=job.seed
            )
            splits[key] = {**entry, "settings": _split_settings(job, key)}
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


# ----------------------------------------------------------------------------- finished jobs: what is stale
TRAIN_DATA_FILE = "train_data.json"  # the identity of the data a job trained on, written before training


def _split_settings(job: Job, key: str) -> dict[str, Any]:
    """A split entry's `settings` (metrics.evaluation_settings) plus the identity of the file it scores."""
    split = job.eval.splits[key]
    return {**evaluation_settings(split, job.eval), "data_checksum": job.data_checksums.get(split.data)}


def _train_data_identity(job: Job) -> dict[str, Any]:
    return {"path": job.config.train_data, "checksum": job.data_checksums.get(job.train_data_name)}


def _read_json(path: Path) -> Any:
    """A small JSON file the runner wrote, or None when it is missing, not a regular file or unreadable."""
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def stale_splits(job: Job) -> dict[str, str]:
    """For a finished job: eval split key -> why its metrics.json entry no longer answers the suite
    (never evaluated, other settings, another data file, an older evaluation version). {} when none.

    Why: a rerun used to skip finished jobs, so after an edit of `eval:` (samples, frames, a new split)
    or a new evaluation metric, the report showed the old numbers under the new suite. Evaluation is a
    pure function of best.pt, the data and these settings, so `run` evaluates again without retraining."""
    metrics = _read_json(job.directory / "metrics.json")
    entries = metrics.get("splits") if isinstance(metrics, dict) else None
    if not isinstance(entries, dict):
        return dict.fromkeys(job.eval.splits, "no readable metrics.json")
    stale = {}
    for key in job.eval.splits:
        entry = entries.get(key)
        have = entry.get("settings") if isinstance(entry, dict) else None
        want = _split_settings(job, key)
        if not isinstance(entry, dict):
            stale[key] = "not evaluated"
        elif not isinstance(have, dict) or have.get("version") != want["version"]:
            stale[key] = f"evaluated by an older version (now {want['version']})"
        elif have != want:
            changed = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            stale[key] = f"{', '.join(changed)} changed"
    return stale


def _reevaluation_inputs(job: Job) -> tuple[dict[str, Any], dict[str, dict]]:
    """The finished job's training facts (its metrics.json's `train` and job-level entries, standing in
    for the train result) and the split entries that stay (current, still in the suite)."""
    metrics = _read_json(job.directory / "metrics.json")
    metrics = metrics if isinstance(metrics, dict) else {}
    stale = stale_splits(job)
    entries = metrics.get("splits") if isinstance(metrics.get("splits"), dict) else {}
    keep = {k: v for k, v in entries.items() if k in job.eval.splits and k not in stale}
    facts = {k: metrics[k] for k in ("train", *JOB_LEVEL_KEYS) if metrics.get(k) is not None}
    return facts, keep


def refuse_changed_training_data(jobs: list[Job], results_dir: Path) -> None:
    """Refuse to reuse a finished job whose training data file is not the one the suite now names.

    Why: the finished-job check compares settings, and the data path stays the same when a file is
    regenerated with another seed; its checksum does not. Jobs from before this record are trusted."""
    changed = []
    for job in jobs:
        saved = _read_json(job.directory / TRAIN_DATA_FILE)
        if not (job.directory / "DONE").exists() or not isinstance(saved, dict):
            continue
        now = job.data_checksums.get(job.train_data_name)
        if saved.get("checksum") != now:
            changed.append(f"{job.name} (trained on {saved.get('path')} with checksum {str(saved.get('checksum'))[:12]}, "
                           f"now {str(now)[:12]})")
    if changed:
        raise ConfigError(
            f"{results_dir}: {len(changed)} finished job(s) trained on another data file than the suite's: "
            f"{', '.join(changed)}. Their results would be reported as if trained on this one. To retrain, move "
            f"{results_dir} aside or delete those job directories; to keep them, restore the data file."
        )


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


def data_checksum(path: Path | None) -> str | None:
    """The data file's stored checksum attribute (data/h5.py), None for a file without one or no file."""
    if path is None or not Path(path).is_file():
        return None
    from rsqair_bench.data.h5 import stored_checksum

    return stored_checksum(path)


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
    checksums = {}
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
    from rsqair_bench.runner.cost import cost_lines  # lazy: torch only if a throughput must be measured

    cost = cost_lines(suite, workers, throughput)  # first: a bad --throughput fails before any output
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
    print("\n".join(cost), file=out)


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
    parser.add_argument("--dry-run", action="store_true", help="list the jobs, where they write and what they will cost (estimates); run nothing")
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
