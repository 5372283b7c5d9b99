"""Live progress of `run`: status files written by jobs, the display without a terminal, and with one (faked)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from rsqair_bench.core.job_status import STATUS_FILE, JobStatus, StatusWriter, mark_phase, read_status
from rsqair_bench.runner.live_progress import LiveProgress, TrackedJob, is_terminal, job_line


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_writer_throttles_and_measures(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = StatusWriter(tmp_path, "sqair+in", 1, max_iterations=100, iteration=20, clock=clock)
    first = read_status(tmp_path / STATUS_FILE)
    assert first is not None and (first.iteration, first.phase, first.it_per_s) == (20, "training", None)
    clock.now = 0.5
    writer.step(21, -800.0)  # within a second of the last write: remembered, not written
    assert read_status(tmp_path / STATUS_FILE).iteration == 20
    clock.now = 2.0
    writer.step(24, -700.0)
    status = read_status(tmp_path / STATUS_FILE)
    assert status.iteration == 24 and status.bound == pytest.approx(-750.0)  # mean over steps since the last write
    assert status.it_per_s == pytest.approx(2.0)  # 4 iterations in 2 s
    assert status.eta_s == pytest.approx(38.0)  # 76 iterations left at 2 it/s
    clock.now = 3.0
    writer.step(28, float("nan"))  # 4 it/s now, smoothed; a NaN bound is no bound
    status = read_status(tmp_path / STATUS_FILE)
    assert status.it_per_s == pytest.approx(0.3 * 4.0 + 0.7 * 2.0) and status.bound == pytest.approx(-750.0)
    mark_phase(tmp_path, "evaluating")
    assert read_status(tmp_path / STATUS_FILE).phase == "evaluating"
    assert not list(tmp_path.glob(".*tmp"))


def test_eta_stops_at_the_time_budget_of_a_resumed_job(tmp_path: Path) -> None:
    """train.max_minutes ends a job before max_iterations: the ETA is the budget left, counting the
    training time of earlier attempts (here 25 of 30 minutes), not the time to max_iterations."""
    clock = FakeClock()
    writer = StatusWriter(tmp_path, "sqair", 0, max_iterations=10_000, iteration=2_000, clock=clock,
                          budget_s=1800.0, elapsed_s=1500.0)
    assert read_status(tmp_path / STATUS_FILE).eta_s == pytest.approx(300.0)  # no rate yet: the budget left
    clock.now = 10.0
    writer.step(2_020, -500.0)  # 2 it/s: 7,980 iterations would take 3,990 s
    status = read_status(tmp_path / STATUS_FILE)
    assert status.seconds_left == pytest.approx(290.0) and status.eta_s == pytest.approx(290.0)
    assert status.fraction == pytest.approx(1.0 - 290.0 / 1800.0)  # the budget is further along than 2,020 / 10,000
    free = tmp_path / "free"
    free.mkdir()
    unbudgeted = StatusWriter(free, "sqair", 0, max_iterations=100, iteration=0, clock=clock)
    clock.now = 20.0
    unbudgeted.step(20)
    assert read_status(free / STATUS_FILE).eta_s == pytest.approx(40.0)  # 80 left at 2 it/s


def test_unreadable_status_is_no_status(tmp_path: Path) -> None:
    (tmp_path / STATUS_FILE).write_text('{"model": "x"')
    assert read_status(tmp_path / STATUS_FILE) is None
    (tmp_path / STATUS_FILE).write_text(json.dumps({"unexpected": 1}))
    assert read_status(tmp_path / STATUS_FILE) is None
    mark_phase(tmp_path / "missing", "evaluating")  # never raises


def test_job_line() -> None:
    status = JobStatus("sqair", 0, "training", 120, 300, bound=-812.34, it_per_s=4.0)
    assert job_line("sqair/seed0", status, 14) == "sqair/seed0     120/300 it  bound -812.3  4.00 it/s  ETA 0:45"
    status.phase = "evaluating"
    assert job_line("sqair/seed0", status, 11) == "sqair/seed0  120/300 it  evaluating"


def _status(directory: Path, iteration: int, updated: float, **kw: object) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    fields = dict(model="m", seed=0, phase="training", iteration=iteration, max_iterations=10, bound=-3.0, it_per_s=2.0)
    fields.update(kw)
    (directory / STATUS_FILE).write_text(json.dumps({**fields, "updated": updated}))


def test_plain_lines_without_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    out = io.StringIO()
    assert not is_terminal(out)
    jobs = [TrackedJob(f"m/seed{k}", tmp_path / f"seed{k}", 10) for k in range(3)]
    display = LiveProgress("quick", jobs, total=4, already_done=1, out=out)
    assert not display.live
    _status(jobs[0].directory, 5, updated=time.time())
    _status(jobs[1].directory, 9, updated=time.time() - 3600)  # left over from an earlier run: not shown
    display.refresh()
    lines = out.getvalue().splitlines()
    assert lines[0] == "progress: m/seed0  5/10 it  bound -3.0  2.00 it/s  ETA 0:02"
    # overall: (1 done + 0.9 (training's share) x 5/10) / 4 jobs = 36%
    assert lines[1].startswith("progress: quick [#########---------------]  36%  1/4 jobs finished, 1 running")
    assert len(lines) == 2 and "\x1b" not in out.getvalue()
    display.refresh()  # nothing moved: nothing printed
    assert len(out.getvalue().splitlines()) == 2
    display.finished("m/seed0", "[2/4] m/seed0: done in 3s")
    assert out.getvalue().splitlines()[-1] == "[2/4] m/seed0: done in 3s"
    display.refresh()  # m/seed0 is no longer tracked: only the overall line, now 2/4
    assert out.getvalue().splitlines()[-1].startswith("progress: quick [############------------]  50%  2/4 jobs finished")


def test_plain_lines_from_the_thread_and_under_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    out = FakeTerminal()
    assert not is_terminal(out)  # CI logs get plain lines even when attached to a pseudo-terminal
    job = TrackedJob("m/seed0", tmp_path, 10)
    display = LiveProgress("quick", [job], total=1, already_done=0, out=out, plain_interval=0.01).start()
    _status(tmp_path, 3, updated=time.time())
    deadline = time.time() + 5
    while "3/10 it" not in out.getvalue() and time.time() < deadline:
        time.sleep(0.01)
    display.stop()
    assert "progress: m/seed0  3/10 it" in out.getvalue() and "\x1b" not in out.getvalue()


def test_live_block_is_redrawn_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    out = FakeTerminal()
    job = TrackedJob("m/seed0", tmp_path, 10)
    display = LiveProgress("quick", [job], total=1, already_done=0, out=out)
    assert display.live
    _status(tmp_path, 3, updated=time.time())
    display.refresh()
    assert "\x1b" not in out.getvalue() and "m/seed0  3/10 it" in out.getvalue()
    _status(tmp_path, 4, updated=time.time())
    display.refresh()
    assert out.getvalue().count("\x1b[2F\x1b[J") == 1  # back over the 2 lines drawn, cleared, redrawn
    display.finished("m/seed0", "[1/1] m/seed0: done")
    display.stop()
    assert out.getvalue().endswith("\x1b[1F\x1b[J")  # the final block (overall line only) is cleared


def _train_with_status(job, out_dir: Path, progress: bool = False) -> dict:
    """fake_train of test_runner, plus the status file train_job writes, one iteration every 20 ms."""
    from tests.test_runner import fake_train

    writer = StatusWriter(out_dir, job.model, job.seed, max_iterations=10, min_interval=0.0)
    for iteration in range(1, 11):
        time.sleep(0.02)
        writer.step(iteration, -100.0 + iteration)
    return fake_train(job, out_dir, progress)


def test_run_prints_plain_progress_lines_when_stdout_is_not_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_runner import FAKES, _job_dir, _run, _suite

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr("rsqair_bench.runner.live_progress.PLAIN_INTERVAL_S", 0.01)
    _, suite = _suite(tmp_path, seeds=[0, 1])
    summary, out = _run(suite, **{**FAKES, "train_fn": _train_with_status})
    assert summary.exit_code == 0 and "\x1b" not in out
    lines = out.splitlines()
    assert any(line.startswith("progress: sqair/seed0  ") and "/10 it  bound" in line for line in lines), out
    assert any(line.startswith("progress: sqair/seed1  ") for line in lines), out
    assert any(line.startswith("progress: fake [") and "jobs finished" in line for line in lines), out
    assert "[1/2] sqair/seed0: done" in out and "[2/2] sqair/seed1: done" in out
    assert read_status(_job_dir(suite, 0) / STATUS_FILE).phase == "evaluating"  # set by the runner after training


def test_log_records_go_above_the_live_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    monkeypatch.delenv("CI", raising=False)
    out = FakeTerminal()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        display = LiveProgress("quick", [TrackedJob("m/seed0", tmp_path, 10)], total=1, already_done=0, out=out).start()
        logging.getLogger("rsqair_bench.training.loop").warning("validation bound -700.0")
        display.stop()
        assert "emit" not in vars(handler)  # unhooked
    finally:
        root.removeHandler(handler)
    text = out.getvalue()
    first_block = text.index("quick [")
    assert text.index("\x1b[1F\x1b[J") > first_block  # the block was erased ...
    assert text.index("validation bound -700.0") > text.index("\x1b[1F\x1b[J")  # ... before the record was written
    assert "quick [" in text.split("validation bound -700.0")[1]  # and redrawn below it
