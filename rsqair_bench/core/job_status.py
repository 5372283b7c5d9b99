"""A job's live status: `status.json` in its directory, written by the worker, read by the runner's display.

Why a file and not a queue: the same job function runs in-process, in a spawn pool and on
Ray workers; a file in the job directory needs no channel set up by the executor, survives
a worker crash (the display shows the last state), and costs one small atomic write per
second at most. Writing it never raises and never touches the model, the data or any
random-number generator, so progress cannot change results.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from rsqair_bench.core.io import atomic_write_text, read_regular_file
from rsqair_bench.errors import OutputError

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
MIN_INTERVAL_S = 1.0  # at most one write per second per job
RATE_SMOOTHING = 0.3  # weight of the newest it/s measurement (exponential moving average)


@dataclass
class JobStatus:
    model: str
    seed: int
    phase: str  # training | compiling (the first step of a compiled run) | evaluating | finished
    iteration: int
    max_iterations: int
    bound: float | None = None  # mean training IWAE bound since the previous write (nats per sequence)
    it_per_s: float | None = None  # wall-clock iterations per second, validation included
    updated: float = 0.0  # time.time() of the write
    seconds_left: float | None = None  # of the train.max_minutes budget at the write; None without a budget
    budget_s: float | None = None  # train.max_minutes in seconds; None without a budget
    since: float | None = None  # time.time() when `phase` began (the display shows `compiling 1:05`)

    @property
    def eta_s(self) -> float | None:
        """Seconds until training ends: at max_iterations at the current rate, or when the
        train.max_minutes budget runs out, whichever is sooner (early stopping may end it sooner still)."""
        if not self.it_per_s or self.it_per_s <= 0:
            return self.seconds_left
        to_max = max(0, self.max_iterations - self.iteration) / self.it_per_s
        return to_max if self.seconds_left is None else min(to_max, self.seconds_left)

    @property
    def fraction(self) -> float:
        """How far training is, in [0, 1]: iterations, or the time budget spent if that is further."""
        done = min(1.0, self.iteration / max(self.max_iterations, 1))
        if self.budget_s and self.seconds_left is not None:
            done = max(done, 1.0 - self.seconds_left / self.budget_s)
        return done


def _write(path: Path, status: JobStatus) -> None:
    """Atomic, without fsync; failures are logged, never raised.

    Why no fsync: the file is rewritten about once a second while a job trains and only feeds the live
    display, so a crash that loses the last write costs nothing, while two fsyncs per write would
    cost the trainer's disk a flush every second."""
    try:
        atomic_write_text(path, json.dumps(asdict(status)), fsync=False)
    except OutputError as err:
        log.debug("%s: status not written (%s)", path, err)


STATUS_LIMIT = 64 * 1024  # bytes: a status file is about 300; anything larger is not one of ours
_INTS = ("seed", "iteration", "max_iterations")
_FLOATS = ("bound", "it_per_s", "updated", "seconds_left", "budget_s", "since")


def read_status(path: Path) -> JobStatus | None:
    """The status in `path`, or None when it is missing, half-written, of another shape or of wrong types.

    Only a regular file is read (a FIFO would block the display thread, or `run` itself at its
    first redraw). Every field must have its type and a finite, bounded value: `"iteration": "5"`, a
    400-digit number or deeply nested JSON used to raise inside the display and end the run.
    """
    try:
        data = json.loads(read_regular_file(path, STATUS_LIMIT))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or set(data) - set(JobStatus.__dataclass_fields__):
        return None
    if not all(isinstance(data.get(key), str) for key in ("model", "phase")):
        return None
    for key in _INTS:
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
            return None
    for key in _FLOATS:
        value = data.get(key)
        if value is None and not (key == "updated" and key in data):  # updated may be absent, never null
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not abs(value) < 1e18:  # no time or rate of ours comes near; False for NaN/inf (and exact for big ints)
            return None
        data[key] = float(value)
    return JobStatus(**data)


class StatusWriter:
    """Called every training step; writes status.json when MIN_INTERVAL_S has passed since the last write."""

    def __init__(
        self,
        out_dir: Path,
        model: str,
        seed: int,
        max_iterations: int,
        iteration: int = 0,
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = MIN_INTERVAL_S,
        budget_s: float | None = None,
        elapsed_s: float = 0.0,
    ) -> None:
        """`budget_s`: train.max_minutes in seconds (None: no budget); `elapsed_s`: training time
        already spent by earlier attempts of a resumed job, which the budget counts."""
        self.path = Path(out_dir) / STATUS_FILE
        self.clock = clock
        self.min_interval = min_interval
        self._deadline = None if budget_s is None else clock() + budget_s - elapsed_s
        self.status = JobStatus(model, int(seed), "training", int(iteration), int(max_iterations), budget_s=budget_s)
        self._last_time = clock()
        self._last_iteration = int(iteration)
        self._bound_sum, self._bound_count = 0.0, 0
        self._flush()

    def step(self, iteration: int, bound: float | None = None) -> None:
        if bound is not None and math.isfinite(bound):
            self._bound_sum += float(bound)
            self._bound_count += 1
        now = self.clock()
        if now - self._last_time < self.min_interval:
            self.status.iteration = int(iteration)
            return
        rate = (iteration - self._last_iteration) / (now - self._last_time)
        old = self.status.it_per_s
        self.status.it_per_s = rate if old is None else RATE_SMOOTHING * rate + (1 - RATE_SMOOTHING) * old
        self.status.iteration = int(iteration)
        if self._bound_count:
            self.status.bound = self._bound_sum / self._bound_count
        self._bound_sum, self._bound_count = 0.0, 0
        self._last_time, self._last_iteration = now, int(iteration)
        self._flush()

    def phase(self, phase: str) -> None:
        """Enter `phase` now (e.g. `compiling` around a first step that compiles for minutes).

        Back in `training` from another phase, the it/s measurement starts afresh: a minute of
        compiling is not a slow step, and it would weigh on the smoothed rate for many writes."""
        if phase == "training" and self.status.phase != "training":
            self._last_time, self._last_iteration = self.clock(), self.status.iteration
            self.status.it_per_s = None
        self.status.phase = phase
        self.status.since = time.time()
        self._flush()

    def _flush(self) -> None:
        self.status.updated = time.time()
        if self._deadline is not None:
            self.status.seconds_left = max(0.0, self._deadline - self.clock())
        _write(self.path, self.status)


def mark_phase(out_dir: Path, phase: str) -> None:
    """Set the phase of an existing status file (e.g. `evaluating` once training returned)."""
    path = Path(out_dir) / STATUS_FILE
    status = read_status(path)
    if status is not None:
        status.phase = phase
        status.updated = status.since = time.time()
        _write(path, status)
