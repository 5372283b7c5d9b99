"""Executors: how a suite's jobs run. `local` runs each job in its own process on this machine (a
crash or a kill takes only that job), `ray` runs them as Ray tasks; both call the same job function
(`runner/job.py` `execute_job`) and return its `JobOutcome`.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection as mp_connection
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rsqair_bench.config import (
    SuiteConfig,
)
from rsqair_bench.core.io import atomic_write_text
from rsqair_bench.errors import ConfigError
from rsqair_bench.runner.job import JobOutcome
from rsqair_bench.runner.suite import Job

log = logging.getLogger(__name__)

RAY_MISSING = "executor 'ray' needs Ray: pip install 'rsqair-bench[ray]'"


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
