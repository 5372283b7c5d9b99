"""The `run` display: one line per running job and an overall bar, redrawn from the jobs' status files.

Why: with several workers, training happens in other processes and nothing reached the
terminal until a job finished (~8 minutes into the quick suite). Workers write
`status.json` (core/job_status.py); a thread in the main process reads them and draws. At a
terminal the block is redrawn in place twice a second; otherwise (CI logs, a pipe, `CI` set)
it prints plain `progress:` lines every `plain_interval` seconds, and only when something
moved. The display reads files only, so it cannot change results.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rsqair_bench.core.job_status import STATUS_FILE, JobStatus, read_status

BAR_WIDTH = 24
LIVE_INTERVAL_S = 0.5
PLAIN_INTERVAL_S = 30.0
TRAIN_SHARE = 0.9  # of a job's part of the overall bar; evaluation is the rest, so 100% means finished
TIMED_PHASES = ("compiling", "evaluating")  # shown with the time spent in them: nothing else moves meanwhile


@dataclass(frozen=True)
class TrackedJob:
    name: str  # <model>/seed<k>
    directory: Path
    max_iterations: int


def is_terminal(out: TextIO) -> bool:
    """Draw in place only for a person at a terminal, never under CI."""
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("CI")


def _clock_text(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def job_line(name: str, status: JobStatus, width: int, now: float | None = None) -> str:
    """`sqair+in/seed0  120/300 it  bound -812.3  4.1 it/s  ETA 0:44`, or the phase outside training:
    `compiling 1:05` while a compiled run's first step compiles (`now`: time.time(), the status's clock)."""
    if status.phase != "training":
        phase = status.phase
        if phase in TIMED_PHASES and status.since is not None:
            phase += f" {_clock_text(max(0.0, (time.time() if now is None else now) - status.since))}"
        return f"{name:<{width}}  {status.iteration}/{status.max_iterations} it  {phase}"
    bound = "?" if status.bound is None else f"{status.bound:.1f}"
    rate = "?" if status.it_per_s is None else f"{status.it_per_s:.2f}"
    return (
        f"{name:<{width}}  {status.iteration}/{status.max_iterations} it  bound {bound}  {rate} it/s  "
        f"ETA {_clock_text(status.eta_s)}"
    )


def overall_line(label: str, fraction: float, finished: int, total: int, running: int, elapsed: float,
                 eta: float | None) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = int(round(fraction * BAR_WIDTH))
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    return (
        f"{label} [{bar}] {fraction * 100:3.0f}%  {finished}/{total} jobs finished, {running} running  "
        f"elapsed {_clock_text(elapsed)}  ETA {_clock_text(eta)}"
    )


class LiveProgress:
    """Start before the jobs run, call `finished` as each returns, `stop` at the end (also on errors)."""

    def __init__(
        self,
        label: str,
        jobs: list[TrackedJob],
        total: int,
        already_done: int,
        out: TextIO,
        live: bool | None = None,
        plain_interval: float | None = None,  # default PLAIN_INTERVAL_S
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.label, self.jobs, self.total, self.already_done, self.out = label, jobs, total, already_done, out
        self.live = is_terminal(out) if live is None else live
        self.interval = LIVE_INTERVAL_S if self.live else (plain_interval or PLAIN_INTERVAL_S)
        self.clock = clock
        self.started = clock()
        self._finished: set[str] = set()
        self._lock = threading.RLock()
        self._hooked: list[logging.StreamHandler] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drawn = 0  # lines of the live block now on screen
        self.last_error: Exception | None = None  # the last drawing error, dropped (see _quietly)
        self._last_plain: list[str] = []
        self._start_fraction: float | None = None
        self._width = max((len(j.name) for j in jobs), default=0)

    # ------------------------------------------------------------------ state
    def _statuses(self) -> dict[str, JobStatus]:
        """Status of each unfinished job written during this run (older files are from an earlier run)."""
        found = {}
        for job in self.jobs:
            if job.name in self._finished:
                continue
            status = read_status(job.directory / STATUS_FILE)
            if status is not None and status.updated >= self.started - 1.0:
                found[job.name] = status
        return found

    def _fraction(self, statuses: dict[str, JobStatus]) -> float:
        if not self.total:
            return 1.0
        partial = TRAIN_SHARE * sum(s.fraction for s in statuses.values())
        return (self.already_done + len(self._finished) + partial) / self.total

    def lines(self) -> list[str]:
        """The block as it would be drawn now: one line per running job, then the overall bar."""
        statuses = self._statuses()
        fraction = self._fraction(statuses)
        if self._start_fraction is None:
            self._start_fraction = fraction
        elapsed = self.clock() - self.started
        gained = fraction - self._start_fraction
        eta = (1.0 - fraction) * elapsed / gained if gained > 0 and elapsed > 0 else None
        now = time.time()  # the clock of the status files' `since`, whatever self.clock is
        lines = [job_line(name, s, self._width, now) for name, s in statuses.items()]
        finished = self.already_done + len(self._finished)
        lines.append(overall_line(self.label, fraction, finished, self.total, len(statuses), elapsed, eta))
        return lines

    # ------------------------------------------------------------------ drawing
    def _erase(self) -> None:
        if self.live and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")  # to the block's first line, clear to the end
            self._drawn = 0

    def _draw(self) -> None:
        lines = self.lines()
        if self.live:
            columns, rows = shutil.get_terminal_size((100, 20))
            if len(lines) > rows - 1:  # the cursor cannot move above the screen: fold the rest into one line
                keep = max(rows - 3, 0)
                lines = lines[:keep] + [f"... and {len(lines) - 1 - keep} more running", lines[-1]]
            self.out.write("".join(line[: columns - 1] + "\n" for line in lines))
            self._drawn = len(lines)
        else:  # plain: only when a job moved or finished (the clock alone is no news)
            key = [*lines[:-1], str(len(self._finished))]
            if key != self._last_plain:
                self.out.write("".join(f"progress: {line.strip()}\n" for line in lines))
                self._last_plain = key
        self.out.flush()

    def _quietly(self, step: Callable[[], None]) -> None:
        """Run one drawing step; an error is kept in `last_error` and dropped (not logged: a log record
        is drawn through this display, so a failing draw would recurse).

        Why: progress must never end a run. A status file of wrong types once raised inside `lines()`
        on the main thread (the first redraw), and in the display thread ("Exception in thread")."""
        try:
            step()
        except Exception as err:  # noqa: BLE001 - the display is optional, the run is not
            self.last_error = err

    def refresh(self) -> None:
        with self._lock:
            self._quietly(self._erase)
            self._quietly(self._draw)

    def finished(self, name: str, message: str) -> None:
        """A job returned: print its one-line outcome above the block and stop tracking it."""
        with self._lock:
            self._finished.add(name)
            self._quietly(self._erase)
            self.out.write(message + "\n")
            if self.live:
                self._quietly(self._draw)
            self.out.flush()

    # ------------------------------------------------------------------ the thread
    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()  # never raises: see _quietly

    def _hook_logging(self) -> None:
        """Log records (in-process jobs log validations) are printed above the block, not over it."""
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and "emit" not in vars(handler):
                original = handler.emit

                def emit(record: logging.LogRecord, _original: Callable[[logging.LogRecord], None] = original) -> None:
                    with self._lock:
                        self._quietly(self._erase)
                        self._quietly(self.out.flush)
                        _original(record)
                        self._quietly(self._draw)

                handler.emit = emit  # type: ignore[method-assign]
                self._hooked.append(handler)

    def _unhook_logging(self) -> None:
        for handler in self._hooked:
            vars(handler).pop("emit", None)
        self._hooked.clear()

    def start(self) -> LiveProgress:
        if self.live:
            self._hook_logging()
            self.refresh()
        self._thread = threading.Thread(target=self._loop, name="live-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._unhook_logging()
            self._quietly(self._erase)
            self._quietly(self.out.flush)
