"""Runner: resume after SIGKILL, failures isolated and retried, per-job file lock.

The train/eval/data steps are replaced by the fakes below (module-level so spawned pool
workers can unpickle them); which job is slow or fails is chosen by marker files in its
job directory, so the production code needs no test hooks.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import filelock
import pytest
import yaml

from rsqair_bench.config import DataSetConfig, EvalConfig, EvalSplit, JobConfig, SuiteConfig, load_config
from rsqair_bench.errors import ConfigError
from rsqair_bench.runner.job import build_metrics, write_basic_metrics
from rsqair_bench.runner.run import RunSummary, run_suite
from rsqair_bench.runner.suite import expand_jobs, validate_suite

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- fakes
def _record(out_dir: Path, event: str) -> None:
    """Append one line to results/<suite>/calls.log (O_APPEND: safe across processes)."""
    line = f"{event} {out_dir.parent.name}/{out_dir.name}\n"
    with open(out_dir.parent.parent / "calls.log", "a") as fh:
        fh.write(line)


def fake_train(job: JobConfig, out_dir: Path, progress: bool = False) -> dict[str, Any]:
    out_dir = Path(out_dir)
    resumed = (out_dir / "checkpoint.pt").exists()
    _record(out_dir, "train-resume" if resumed else "train-start")
    if (out_dir / "inject_failure").exists():
        raise RuntimeError("injected failure")
    (out_dir / "checkpoint.pt").write_text("ckpt")
    if (out_dir / "slow").exists() and not resumed:
        time.sleep(60)  # the test kills the runner here
    (out_dir / "best.pt").write_text("best")
    (out_dir / "train_log.csv").write_text("iteration,loss\n1,3.0\n2,2.0\n")
    _record(out_dir, "train-end")
    return {"iterations": 2, "seconds": 0.1, "sequences_per_s": 50.0, "peak_memory_mb": 1.0,
            "best_validation_bound": -10.0, "best_iteration": 2, "parameters": {"total": 100, "relation": 10},
            "config_hash": "fake", "paper_name": "SQAIR"}  # paper_name given: no registry (torch) import


def fake_eval(checkpoint: Path, data_path: str, split: EvalSplit, eval_cfg: EvalConfig, device: str = "auto",
              seed: int = 0) -> dict:
    assert Path(checkpoint).name == "best.pt" and Path(checkpoint).exists()
    _record(Path(checkpoint).parent, f"eval:{split.data}")
    values = [100.0 + seed + s for s in range(eval_cfg.samples)]
    return {"data": data_path, "split": split.split, "max_objects": split.max_objects or 4, "frames": split.frames,
            "sequences": 5, "samples": eval_cfg.samples,
            "data_ll": {"mean": sum(values) / len(values), "std": 1.0, "per_sample": values},
            "relational_ll": {"mean": 1.0, "std": 0.0, "per_sample": [1.0] * eval_cfg.samples},
            "sequences_with_collision": 2, "iwae_bound": {"mean": -5.0, "std": 0.1}, "count_accuracy": 0.5,
            "eval_sequences_per_s": 10.0, "peak_memory_mb": 2.0, "device": "cpu", "checkpoint_iteration": 2,
            "references": None}


def fake_prepare(ds: DataSetConfig) -> Path:
    return Path(ds.path)


FAKES = {"train_fn": fake_train, "eval_fn": fake_eval, "metrics_fn": write_basic_metrics, "prepare_data": fake_prepare}


def _subprocess_main(suite_path: str) -> None:
    """Entry point of the runner subprocess the SIGKILL test starts."""
    suite = validate_suite(load_config(SuiteConfig, suite_path), suite_path)
    raise SystemExit(run_suite(suite, report=False, **FAKES).exit_code)


# ----------------------------------------------------------------------------- helpers
def _suite(tmp_path: Path, seeds: list[int], workers: int = 1) -> tuple[Path, SuiteConfig]:
    doc = {
        "name": "fake", "models": ["sqair"], "seeds": seeds, "workers": workers,
        "results": str(tmp_path / "results"),
        "data": {"balls4": {"path": str(tmp_path / "b4.h5"), "frames": 12,
                            "splits": {"training": 10, "validation": 5, "test": 5}}},
        "train": {"curriculum_max": 10, "batch_size": 4},  # at most the 10 training sequences (validate)
        "eval": {"samples": 2, "splits": {"balls4/test": {"data": "balls4"}}},
    }
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, validate_suite(load_config(SuiteConfig, path), path)


def _job_dir(suite: SuiteConfig, seed: int) -> Path:
    return Path(suite.results) / suite.name / "sqair" / f"seed{seed}"


def _mark(suite: SuiteConfig, seed: int, marker: str) -> None:
    d = _job_dir(suite, seed)
    d.mkdir(parents=True, exist_ok=True)
    (d / marker).write_text("")


def _calls(suite: SuiteConfig) -> Counter:
    log = Path(suite.results) / suite.name / "calls.log"
    return Counter(log.read_text().splitlines()) if log.exists() else Counter()


def _run(suite: SuiteConfig, **kwargs: Any) -> tuple[RunSummary, str]:
    out = io.StringIO()
    summary = run_suite(suite, out=out, **{"report": False, **FAKES, **kwargs})
    return summary, out.getvalue()


def _assert_complete_once(suite: SuiteConfig, snapshot: tuple[Counter, set[int]]) -> None:
    """Every job DONE with one metrics.json; jobs DONE at the snapshot were not touched again; the
    others were trained to the end and evaluated exactly once since."""
    before, done_before = snapshot
    new = _calls(suite) - before
    for seed in suite.seeds:
        d = _job_dir(suite, seed)
        assert (d / "DONE").exists() and not (d / "error.txt").exists()
        assert len(list(d.glob("metrics*.json"))) == 1
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["seed"] == seed and metrics["model"] == "sqair" and set(metrics["splits"]) == {"balls4/test"}
        expected = 0 if seed in done_before else 1
        assert new[f"train-end sqair/seed{seed}"] == expected, (seed, new)
        assert new[f"eval:balls4 sqair/seed{seed}"] == expected, (seed, new)


def _snapshot(suite: SuiteConfig) -> tuple[Counter, set[int]]:
    """Calls so far, and the seeds whose jobs are DONE now."""
    return _calls(suite), {s for s in suite.seeds if (_job_dir(suite, s) / "DONE").exists()}


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_mid_job_then_rerun_completes_each_job_once(tmp_path: Path, workers: int) -> None:
    path, suite = _suite(tmp_path, seeds=[0, 1, 2], workers=workers)
    _mark(suite, 1, "slow")
    code = f"from tests.test_runner import _subprocess_main; _subprocess_main({str(path)!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = _job_dir(suite, 1) / "checkpoint.pt"
    deadline = time.monotonic() + 30
    while not ckpt.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the slow job never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not (_job_dir(suite, 1) / "DONE").exists()
    if workers == 1:  # sequential: seed0 finished before, seed2 never started
        assert (_job_dir(suite, 0) / "DONE").exists() and not (_job_dir(suite, 2) / "DONE").exists()
    # an orphaned pool worker must die with the runner and free its lock
    lock = filelock.FileLock(str(_job_dir(suite, 1) / ".lock"), timeout=5)
    lock.acquire()
    lock.release()

    before = _snapshot(suite)
    summary, out = _run(suite)
    assert summary.exit_code == 0, out
    assert _calls(suite)["train-resume sqair/seed1"] == 1
    _assert_complete_once(suite, before)
    # a third run does nothing
    before = _snapshot(suite)
    summary, out = _run(suite)
    assert summary.count("skipped") == 3 and "0 to run" in out
    assert _calls(suite) == before[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_failing_job_does_not_stop_others_and_rerun_retries_only_it(tmp_path: Path, workers: int) -> None:
    _, suite = _suite(tmp_path, seeds=[0, 1, 2], workers=workers)
    _mark(suite, 1, "inject_failure")
    summary, out = _run(suite)
    assert summary.exit_code == 1
    assert summary.count("done") == 2 and summary.count("failed") == 1
    assert "FAILED sqair/seed1: RuntimeError: injected failure" in out
    bad = _job_dir(suite, 1)
    assert "injected failure" in (bad / "error.txt").read_text() and not (bad / "DONE").exists()
    assert not (bad / "metrics.json").exists()

    (bad / "inject_failure").unlink()
    before = _snapshot(suite)
    summary, out = _run(suite)
    assert summary.exit_code == 0 and summary.count("done") == 1 and summary.count("skipped") == 2, out
    new = _calls(suite) - before[0]
    assert set(new) == {"train-start sqair/seed1", "train-end sqair/seed1", "eval:balls4 sqair/seed1"}
    _assert_complete_once(suite, before)


def test_finished_job_with_changed_settings_is_refused_not_silently_reused(tmp_path: Path) -> None:
    """A rerun after a settings edit names the finished jobs and the changed key, and runs nothing;
    a config.yaml written before a field existed still counts as the same job."""
    path, suite = _suite(tmp_path, seeds=[0, 1])
    assert _run(suite)[0].exit_code == 0
    saved = _job_dir(suite, 0) / "config.yaml"
    doc = yaml.safe_load(saved.read_text())
    del doc["model_config"]["disc_input"]  # as written before the switch existed (default: image)
    saved.write_text(yaml.safe_dump(doc))
    summary, _ = _run(suite)
    assert summary.count("skipped") == 2

    edited = yaml.safe_load(path.read_text())
    edited["train"]["learning_rate"] = 1e-3
    path.write_text(yaml.safe_dump(edited))
    changed = validate_suite(load_config(SuiteConfig, path), path)
    before = _calls(changed)
    with pytest.raises(ConfigError, match=r"2 finished job\(s\).*sqair/seed0 \(train.learning_rate\), "
                                          r"sqair/seed1 \(train.learning_rate\)"):
        _run(changed)
    assert _calls(changed) == before


def test_locked_job_is_skipped_and_reported(tmp_path: Path) -> None:
    _, suite = _suite(tmp_path, seeds=[0, 1])
    d0 = _job_dir(suite, 0)
    d0.mkdir(parents=True)
    lock = filelock.FileLock(str(d0 / ".lock"), timeout=0)
    with lock:
        summary, out = _run(suite)
    assert summary.count("locked") == 1 and summary.count("done") == 1 and summary.exit_code == 0
    assert "LOCKED sqair/seed0" in out and not (d0 / "DONE").exists() and not (d0 / "metrics.json").exists()
    before = _snapshot(suite)
    summary, out = _run(suite, report=True)
    assert summary.count("done") == 1 and summary.count("skipped") == 1
    _assert_complete_once(suite, before)
    report = Path(suite.results) / "fake" / "report"
    assert (report / "table.md").exists() and f"tables in {report}" in out
    assert (report / "table.md").read_text().strip() in out  # the headline table is printed, not only written


def test_build_metrics_schema_and_hoisting(tmp_path: Path) -> None:
    _, suite = _suite(tmp_path, seeds=[4])
    job = expand_jobs(suite)[0]
    metrics = build_metrics(job, {"iterations": 7, "seconds": 1.0, "sequences_per_s": 3.0, "peak_memory_mb": 4.0,
                                  "best_validation_bound": -1.0, "best_iteration": 6, "parameters": {"total": 5, "relation": 1}},
                            {"balls4/test": {"data_ll": {"mean": 1.0}, "device": "cpu", "checkpoint_iteration": 6}})
    assert metrics["seed"] == 4 and metrics["suite"] == "fake" and metrics["model"] == "sqair"
    assert metrics["checkpoint_iteration"] == 6 and metrics["device"] == "cpu"
    assert metrics["train"]["iterations"] == 7 and metrics["parameters"]["total"] == 5
    assert "device" not in metrics["splits"]["balls4/test"] and len(metrics["config_hash"]) == 16
    json.dumps(metrics)


def test_ray_executor_without_ray_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, suite = _suite(tmp_path, seeds=[0])
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"^executor 'ray' needs Ray: pip install 'rsqair-bench\[ray\]'$"):
        _run(suite, executor="ray")
    assert not _job_dir(suite, 0).exists()
