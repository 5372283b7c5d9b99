"""Reliability round 3 (issue 32), part 1: `run --dry-run`'s cost, `--throughput` and `--workers`.

One test per case of the round's section 3, named after its id (`test_T16_...`). The suite and the
bench files come from tests/test_cost.py, whose docstring works their cost out by hand.
"""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from rsqair_bench.cli import main
from rsqair_bench.config import SuiteConfig, load_config
from rsqair_bench.runner import cost, throughput
from rsqair_bench.runner.bench_file import MIN_RATE, read_bench_file
from rsqair_bench.runner.cost_model import rates_for
from rsqair_bench.runner.run import run_suite
from rsqair_bench.runner.suite import validate_suite
from tests.cli_checks import assert_one_line, dry_run_without_torch, run_cli
from tests.test_cost import _bench_file, _cost_block, _suite_doc, _write_suite
from tests.test_runner import FAKES

ROOT = Path(__file__).resolve().parents[1]
HANG_S = 10.0  # a dry run that has not answered by then is hung


def _dry_run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`run ... --dry-run` in a thread, so that a hang fails the test instead of blocking it."""
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(code=main(argv)), daemon=True)
    thread.start()
    thread.join(HANG_S)
    assert not thread.is_alive(), f"{' '.join(argv)} did not answer within {HANG_S} s"
    captured = capsys.readouterr()
    return result["code"], captured.out, captured.err.strip()


def _file_with(path: Path, change: Any) -> Path:
    """tests/test_cost.py's bench file with `change(doc)` applied."""
    _bench_file(path)
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return path


def _suite(tmp_path: Path, **top: Any) -> Path:
    return _write_suite(tmp_path, _suite_doc(tmp_path) | top)


# ----------------------------------------------------------------------------- reading --throughput
def test_T06_a_fifo_throughput_file_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "tp_fifo.json"
    os.mkfifo(fifo)
    code, out, err = _dry_run(["run", str(_suite(tmp_path)), "--dry-run", "--throughput", str(fifo)], capsys)
    assert_one_line(code, err, f"--throughput {fifo}: cannot read it (not a regular file)")
    assert out == ""
    bench = tmp_path / "bench"  # a FIFO among the committed files is no candidate, and no hang
    bench.mkdir()
    os.mkfifo(bench / "a.json")
    _bench_file(bench / "b.json")
    suite = validate_suite(load_config(SuiteConfig, _suite(tmp_path)), tmp_path / "suite.yaml")
    lines = cost.cost_lines(suite, 1, bench_dir=bench)
    assert any("b.json" in line for line in lines if line.startswith("  throughput from file"))


def test_T07_dev_zero_as_throughput_is_refused_without_reading_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _dry_run(["run", str(_suite(tmp_path)), "--dry-run", "--throughput", "/dev/zero"], capsys)
    assert_one_line(code, err, "--throughput /dev/zero: cannot read it (not a regular file)")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (2**20 + 1))  # larger than a bench file can be: refused before it is parsed
    code, out, err = _dry_run(["run", str(_suite(tmp_path)), "--dry-run", "--throughput", str(big)], capsys)
    assert_one_line(code, err, f"--throughput {big}: cannot read it")


@pytest.mark.parametrize("value", ["inf", "1e308", "-inf", "nan", "1e-300", "5e-324"])
def test_T09_infinite_or_implausible_rates_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        value: str) -> None:
    code, out, err = _dry_run(["run", str(_suite(tmp_path)), "--dry-run", f"--throughput={value}"], capsys)
    assert_one_line(code, err, "--throughput: expected a bench --json file, `measure`, or a training rate between "
                               f"1e-06 and 1e+06 it/s, found {value!r}")
    assert out == ""


@pytest.mark.parametrize("rate", [float("inf"), 1e308, 0.0, -1.0, "fast", None])
def test_T10_a_bench_file_rate_out_of_range_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        rate: Any) -> None:
    path = _file_with(tmp_path / "tp.json", lambda doc: doc["models"][0].update(train_iterations_per_s=rate))
    code, out, err = _dry_run(["run", str(_suite(tmp_path)), "--dry-run", "--throughput", str(path)], capsys)
    assert_one_line(code, err, f"--throughput {path}: models[0].train_iterations_per_s: expected a")


@pytest.mark.parametrize("key", ["batch", "frames", "max_objects", "particles"])
def test_T11_a_bench_file_setting_of_zero_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str) -> None:
    path = _file_with(tmp_path / "tp.json", lambda doc: doc["settings"].update({key: 0}))
    code, out, err = _dry_run(["run", str(_suite(tmp_path)), "--dry-run", "--throughput", str(path)], capsys)
    assert_one_line(code, err, f"--throughput {path}: settings.{key}: expected an integer between 1 and", "found int 0")


@pytest.mark.parametrize("key,value,found", [("batch", "32", "str '32'"), ("particles", None, "null"),
                                             ("frames", True, "bool True"), ("compile", "yes", "str 'yes'")])
def test_T12_a_bench_file_setting_of_the_wrong_type_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                key: str, value: Any, found: str) -> None:
    path = _file_with(tmp_path / "tp.json", lambda doc: doc["settings"].update({key: value}))
    code, out, err = _dry_run(["run", str(_suite(tmp_path)), "--dry-run", "--throughput", str(path)], capsys)
    assert_one_line(code, err, f"--throughput {path}: settings.{key}: expected", f"found {found}")


def test_T13_the_slowest_rate_allowed_prints_a_readable_hour_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 1,000x slower than tests/test_cost.py's figure (0.001 it/s, 0.008 sequences/s): 1,000x its 54 h .. 171 h
    slow = _bench_file(tmp_path / "slow.json", models={"sqair": (MIN_RATE, 8 * MIN_RATE)})
    code, out, err = _dry_run(["run", str(_suite(tmp_path)), "--dry-run", "--throughput", str(slow)], capsys)
    assert code == 0, err
    assert _cost_block(out)[-1] == "  total: 4 jobs, 1 at a time: 54,444 h .. 171,111 h (estimate, from file throughput)"
    assert cost._hours(3600 * 5.44e7) == "5.44e+07 h"  # from a million hours on: three digits, not 300
    assert cost._hours(float("inf")) == "more than 1e308 h"


def test_T14_a_gpu_file_for_a_cpu_suite_names_the_device_difference(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    gpu = _bench_file(tmp_path / "tp_cuda.json", device="cuda:0 (NVIDIA H200)")
    code, out, err = _dry_run(["run", str(_suite(tmp_path)), "--dry-run", "--throughput", str(gpu)], capsys)
    assert code == 0, err
    (used,) = [line for line in _cost_block(out) if line.startswith("  throughput from file")]
    assert "differs: device cuda:0 (NVIDIA H200) (run: cpu; not scaled)" in used


# ----------------------------------------------------------------------------- workers and job state
def test_T16_slowdown_counts_the_jobs_that_can_run_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    fake = _bench_file(tmp_path / "fake.json")
    path = _suite(tmp_path)  # 4 jobs, 1 torch thread each

    def block(workers: str) -> list[str]:
        code, out, err = _dry_run(["run", str(path), "--dry-run", "--workers", workers, "--throughput", str(fake)], capsys)
        assert code == 0, err
        return _cost_block(out)

    four, thousand = block("4"), block("1000")
    assert "  workers: 4 at a time, each 2.00x slower (4 jobs x 1 threads on 2 cores)" in thousand
    # each job twice as long (98,000 .. 308,000 s), all four at once
    assert thousand[-1] == four[-1] == "  total: 4 jobs, 4 at a time: 27 h .. 86 h (estimate, from file throughput)"
    one_job = _suite(tmp_path, models=["sqair"], seeds=[0])
    code, out, err = _dry_run(["run", str(one_job), "--dry-run", "--workers", "1000", "--throughput", str(fake)], capsys)
    assert not any(line.startswith("  workers:") for line in _cost_block(out))  # one job is never slowed by idle workers
    assert _cost_block(out)[-1] == "  total: 1 jobs, 1 at a time: 14 h .. 43 h (estimate, from file throughput)"


def _finished_suite(tmp_path: Path) -> Path:
    """A one-job suite whose job ran to DONE with the runner's fakes (no torch, no data file)."""
    doc = _suite_doc(tmp_path) | {"models": ["sqair"], "seeds": [0]}
    path = _write_suite(tmp_path, doc)
    run_suite(validate_suite(load_config(SuiteConfig, path), path), out=io.StringIO(), report=False, **FAKES)
    assert (tmp_path / "results" / "costly" / "sqair" / "seed0" / "DONE").is_file()
    return path


def test_T21_finished_jobs_cost_nothing_and_stale_ones_cost_their_evaluation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _finished_suite(tmp_path)
    fake = _bench_file(tmp_path / "fake.json")
    code, out, err = _dry_run(["run", str(path), "--dry-run", "--throughput", str(fake)], capsys)
    assert code == 0, err
    assert "  sqair/seed0                  done     -> " in out
    assert _cost_block(out)[-1] == "  total: 1 jobs (1 done), 1 at a time: 0.0 h (estimate, from file throughput)"
    doc = yaml.safe_load(path.read_text())
    doc["eval"]["samples"] = 3  # the evaluation changed: the job is evaluated again, not trained
    path.write_text(yaml.safe_dump(doc))
    code, out, err = _dry_run(["run", str(path), "--dry-run", "--throughput", str(fake)], capsys)
    assert "  sqair/seed0                  evaluate again -> " in out and "balls4/test: samples changed" in out
    # evaluation only: 40 sequences x (3 + 1) passes x 5 frames x 25 s = 20,000 s = 5.6 h (tests/test_cost.py's figure)
    suite = validate_suite(load_config(SuiteConfig, path), path)
    assert rates_for(suite, read_bench_file(fake), "sqair").evaluation_of(["balls4/test"]) == pytest.approx(20_000.0)
    assert _cost_block(out)[-1] == ("  total: 1 jobs (1 to evaluate again), 1 at a time: 5.6 h "
                                    "(estimate, from file throughput)")
    assert not (tmp_path / "results" / "costly" / "report").exists()  # the dry run wrote nothing


# ----------------------------------------------------------------------------- the default figure
def test_T20_default_dry_run_never_measures_and_uses_the_closest_committed_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_training(*_: Any) -> None:
        raise AssertionError("the default dry run trained steps to measure throughput")

    monkeypatch.setattr(throughput, "measure_throughput", no_training)
    bench = tmp_path / "bench"
    _bench_file(bench / "paper.json", n_hidden=256, glimpse_size=20)  # the only file: another architecture
    doc = _suite_doc(tmp_path) | {"model_config": {"n_hidden": 64, "glimpse_size": 10}}
    suite = validate_suite(load_config(SuiteConfig, _write_suite(tmp_path, doc)), tmp_path / "suite.yaml")
    lines = cost.cost_lines(suite, 1, bench_dir=bench)
    (used,) = [line for line in lines if line.startswith("  throughput")]
    assert used.startswith("  throughput from file:") and "paper.json" in used
    assert "n_hidden 256 (run: 64; not scaled); glimpse_size 20 (run: 10; not scaled)" in used
    assert any("no committed file has this suite's architecture" in line and "--throughput measure" in line
               for line in lines)
    assert lines[-1].endswith("(estimate, from file throughput, another architecture)")
    lines = cost.cost_lines(suite, 1, bench_dir=tmp_path / "empty")  # nothing of this device kind: says how to ask
    assert lines[-1].startswith("  time: no throughput figure for cpu") and "--throughput measure" in lines[-1]


def test_T20_the_study_dry_run_trains_nothing_and_loads_no_torch() -> None:
    stdout = dry_run_without_torch("suites/study.yaml")
    assert "throughput from file: results/bench/" in stdout  # a committed figure, not a measurement
    assert stdout.rstrip().endswith("no torch")


def test_T20_measure_on_a_machine_without_the_device_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cost, "cuda_available_probe", lambda: False)
    monkeypatch.setattr(throughput, "cuda_available_probe", lambda: False)
    code, err = run_cli(["run", str(_suite(tmp_path, device="cuda")), "--dry-run", "--throughput", "measure"], capsys)
    assert_one_line(code, err, "--throughput measure: no cuda on this machine to measure on")
