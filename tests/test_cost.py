"""`run --dry-run`'s cost block (rsqair_bench/runner/cost.py, cost_model.py, throughput.py)
and `run`'s device check (device.check_run_device).

The suite below is small enough to work its cost out by hand. Its protocol: 320 training sequences,
batch 32 -> a validation every epoch of 10 iterations; curriculum 3 -> 5 frames, +1 every 10
iterations (5 frames from iteration 20); early stopping patience 2; max_iterations 100. The fake
bench file measures sqair at 5 frames, batch 32, 5 particles: 0.001 it/s (1,000 s a step, so 200 s
per frame of a step) and 0.008 eval sequences/s (25 s per sequence-frame of a forward pass). So:

- one validation: 40 sequences x 5 frames x 25 s = 5,000 s;
- evaluation (one split, 40 sequences, samples 1 -> 2 passes, 5 frames): 40 x 2 x 5 x 25 = 10,000 s;
- earliest stop: (2 + 1) validations x 10 = iteration 30. Frames over those steps: 10 x 3 + 10 x 4 +
  10 x 5 = 120 -> 24,000 s; 3 validations 15,000 s; + 10,000 s = 49,000 s = 13.6 h, shown "14 h";
- max 100 iterations: 30 + 40 + 80 x 5 = 470 frames -> 94,000 s; 10 validations 50,000 s; + 10,000
  = 154,000 s = 42.8 h, shown "43 h";
- 2 models x 2 seeds one at a time: 4 x 49,000 = 196,000 s (54 h) .. 616,000 s (171 h).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from rsqair_bench.cli import main
from rsqair_bench.config import SuiteConfig, TrainConfig, load_config
from rsqair_bench.core.device import check_run_device
from rsqair_bench.errors import ConfigError
from rsqair_bench.runner import bench_file, cost, cost_model, throughput
from rsqair_bench.runner.suite import validate_suite
from rsqair_bench.training.schedule import EarlyStopping, curriculum_length
from tests.cli_checks import dry_run_without_torch

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"batch": 32, "particles": 5, "frames": 5, "iterations": 2, "warmup": 1, "max_objects": 4, "z_what": 5,
            "n_hidden": 256, "glimpse_size": 20, "compile": False, "optimizer": "rmsprop"}


def _suite_doc(tmp_path: Path, **train: Any) -> dict[str, Any]:
    return {
        "name": "costly",
        "models": ["sqair", "sqair+in"],
        "seeds": [0, 1],
        "data": {"balls4": {"path": str(tmp_path / "data" / "b4.h5"), "frames": 12,
                            "splits": {"training": 320, "validation": 40, "test": 40}}},
        "train": {"curriculum_start": 3, "curriculum_every": 10, "curriculum_max": 5, "early_stop_patience": 2,
                  "max_iterations": 100, "torch_threads": 1, **train},
        "eval": {"samples": 1, "particles": 5, "splits": {"balls4/test": {"data": "balls4", "max_objects": 4, "frames": 5}}},
        "device": "cpu",
        "results": str(tmp_path / "results"),
    }


def _write_suite(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _load(tmp_path: Path, **train: Any) -> SuiteConfig:
    path = _write_suite(tmp_path, _suite_doc(tmp_path, **train))
    return validate_suite(load_config(SuiteConfig, path), path)


def _bench_file(path: Path, device: str = "cpu (fake, 1 threads)", threads: int = 1, models: dict | None = None,
                **settings: Any) -> Path:
    rates = models or {"sqair": (0.001, 0.008)}
    doc = {"device": device, "torch_version": "fake", "threads": threads, "matmul_peak_flop_per_s": 1.0,
           "settings": SETTINGS | settings,
           "models": [{"model": m, "train_iterations_per_s": t, "eval_sequences_per_s": e} for m, (t, e) in rates.items()],
           "data_generation": None}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _cost_block(out: str) -> list[str]:
    lines = out.splitlines()
    return lines[lines.index("cost (estimates, not measurements of this run):"):]


# ----------------------------------------------------------------------------- the dry run's lines
def test_dry_run_prints_hand_computed_cost_from_a_throughput_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = _bench_file(tmp_path / "fake.json")
    path = _write_suite(tmp_path, _suite_doc(tmp_path))
    assert main(["run", str(path), "--dry-run", "--throughput", str(fake)]) == 0
    block = _cost_block(capsys.readouterr().out)
    assert block[1] == "  device: cpu"
    assert block[2] == "  iterations per job: 30 .. 100"
    assert "early stopping after 2 + 1 validations" in block[3] and "one every 10 iterations (one epoch: 320 // 32)" in block[3]
    assert "the curriculum reaches 5 frames at iteration 20 (before that)" in block[3]
    assert block[4] == "    latest: train.max_iterations"
    assert block[5].startswith(f"  throughput from file: {fake} [cpu (fake, 1 threads)]; matches this run's setting")
    assert block[7] == "    sqair                   0.001 it/s  14 h .. 43 h"  # 1,000 s a step at 5 frames
    assert block[8] == "    sqair+in                0.001 it/s  14 h .. 43 h (sqair's figure: none for sqair+in)"
    assert block[-1] == "  total: 4 jobs, 1 at a time: 54 h .. 171 h (estimate, from file throughput)"
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()  # a dry run writes nothing


def test_job_seconds_match_the_hand_computation(tmp_path: Path) -> None:
    suite = _load(tmp_path)
    figure = bench_file.read_bench_file(_bench_file(tmp_path / "fake.json"))
    rates = cost_model.rates_for(suite, figure, "sqair")
    assert rates.seconds_per_frame_iteration == pytest.approx(200.0)
    assert rates.seconds_per_validation == pytest.approx(5_000.0)
    assert rates.seconds_per_evaluation == pytest.approx(10_000.0)
    low, high = cost_model.job_time(30, suite, rates, 10), cost_model.job_time(100, suite, rates, 10)
    assert (low.seconds, high.seconds) == (pytest.approx(49_000.0), pytest.approx(154_000.0))
    assert not low.capped and not high.capped
    assert cost_model.makespan([49_000.0] * 4, 1) == 196_000.0
    assert cost_model.makespan([49_000.0] * 4, 2) == 98_000.0
    assert cost_model.makespan([3.0, 1.0, 1.0, 1.0], 2) == 3.0  # jobs start in order on the first free slot


def test_it_per_s_is_printed_for_the_suites_setting_and_models_keep_their_own_figure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the file measured batch 16 at 10 frames: twice the frames and half the sequences of the suite's
    # step, so the suite's step at 5 frames costs the same: 0.002 it/s -> 0.002 it/s
    fake = _bench_file(tmp_path / "b16.json", batch=16, frames=10,
                       models={"sqair": (0.002, 0.008), "sqair+in": (0.001, 0.004)})
    path = _write_suite(tmp_path, _suite_doc(tmp_path))
    assert main(["run", str(path), "--dry-run", "--throughput", str(fake)]) == 0
    block = _cost_block(capsys.readouterr().out)
    assert "differs: batch 16 (run: 32; scaled); frames 10 (run: 5; scaled)" in block[5]
    sqair, sqair_in = block[7], block[8]
    assert sqair.startswith("    sqair                   0.002 it/s")
    assert sqair_in.startswith("    sqair+in                0.001 it/s") and "figure: none" not in sqair_in


def test_range_ends_follow_train_py(tmp_path: Path) -> None:
    epoch = TrainConfig(batch_size=32, early_stop_patience=10, max_iterations=200_000)
    rng = cost_model.iteration_range(epoch, 50_000)  # the paper protocol: validation once per epoch of 1,562
    assert (rng.validate_every, rng.earliest, rng.latest, rng.curriculum_done) == (1_562, 17_182, 200_000, 70_000)
    assert rng.early_stop_possible
    late = TrainConfig(validate_every=250, early_stop_patience=100, max_iterations=10_000)
    rng = cost_model.iteration_range(late, 4_000)
    assert (rng.earliest, rng.latest, rng.early_stop_possible) == (10_000, 10_000, False)


def test_earliest_stop_is_where_early_stopping_can_first_stop() -> None:
    """The claim in `earliest_stop`'s docstring, checked against training/schedule.py's EarlyStopping."""
    train = TrainConfig(validate_every=7, early_stop_patience=4)
    stopper = EarlyStopping(train.early_stop_patience)
    iteration = 0
    for score in [10.0, 9.0, 9.5, 8.0, 9.9, 1.0]:  # the first is the best: the fastest way to stop
        iteration += train.validate_every
        stopper.update(score, iteration)
        if stopper.should_stop:
            break
    assert iteration == cost_model.earliest_stop(train, train.validate_every) == 35
    improving = EarlyStopping(train.early_stop_patience)
    for score in range(10):  # every validation better than the last: never stops
        improving.update(float(score))
        assert not improving.should_stop


@pytest.mark.parametrize("start,every,top,n", [(3, 10, 5, 0), (3, 10, 5, 25), (3, 10, 5, 100), (3, 4, 10, 301), (10, 5, 10, 7)])
def test_frame_iterations_is_the_sum_of_curriculum_lengths(start: int, every: int, top: int, n: int) -> None:
    train = TrainConfig(curriculum_start=start, curriculum_every=every, curriculum_max=top)
    assert cost_model.frame_iterations(n, train) == sum(curriculum_length(i, train) for i in range(n))


def test_time_cap_limits_iterations_and_hours(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 600 minutes = 36,000 s: 29 iterations (115 frames, 23,000 s + 2 validations 10,000 s) fit,
    # 30 do not (24,000 + 3 x 5,000 = 39,000 s); then evaluation: 46,000 s = 12.8 h.
    fake = _bench_file(tmp_path / "fake.json")
    path = _write_suite(tmp_path, _suite_doc(tmp_path, max_minutes=600))
    assert main(["run", str(path), "--dry-run", "--throughput", str(fake)]) == 0
    block = _cost_block(capsys.readouterr().out)
    assert any(line.startswith("  time cap: train.max_minutes 600 per job") for line in block)
    assert "    sqair                   0.001 it/s  13 h (time cap at ~29 iterations)" in block


def test_workers_oversubscribing_the_cores_slow_each_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cost.os, "cpu_count", lambda: 1)
    fake = _bench_file(tmp_path / "fake.json")
    path = _write_suite(tmp_path, _suite_doc(tmp_path))
    assert main(["run", str(path), "--dry-run", "--workers", "2", "--throughput", str(fake)]) == 0
    block = _cost_block(capsys.readouterr().out)
    assert "  workers: 2 at a time, each 2.00x slower (2 jobs x 1 threads on 1 cores)" in block
    # each job twice as long (98,000 .. 308,000 s), two at a time: 2 x 98,000 s = 54 h .. 2 x 308,000 s = 171 h
    assert block[-1] == "  total: 4 jobs, 2 at a time: 54 h .. 171 h (estimate, from file throughput)"


# ----------------------------------------------------------------------------- where the figure comes from
def test_committed_file_choice_needs_the_device_kind_and_architecture(tmp_path: Path) -> None:
    suite = _load(tmp_path)
    bench = tmp_path / "bench"
    _bench_file(bench / "a-gpu.json", device="cuda (fake GPU)", models={"sqair": (9.0, 9.0)})
    _bench_file(bench / "b-small.json", n_hidden=64, models={"sqair": (8.0, 8.0)})
    _bench_file(bench / "c-compiled.json", compile=True, models={"sqair": (7.0, 7.0)})
    _bench_file(bench / "d-eager.json", threads=2, models={"sqair": (6.0, 6.0)})
    (bench / "e-not-bench.json").write_text("{}")
    lines = cost.cost_lines(suite, 1, bench_dir=bench)
    (used,) = [line for line in lines if line.startswith("  throughput")]
    assert used.startswith("  throughput from file:") and "d-eager.json" in used  # eager beats a thread match
    assert "differs: threads 2 (run: 1; not scaled)" in used


def test_measure_when_asked_times_steps_here_and_says_so(tmp_path: Path) -> None:
    doc = _suite_doc(tmp_path)
    doc["models"] = ["sqair"]
    doc["model_config"] = {"n_hidden": 16, "glimpse_size": 5}  # tiny: two steps take well under a second
    doc["train"] |= {"batch_size": 2, "particles": 2}
    path = _write_suite(tmp_path, doc)
    suite = validate_suite(load_config(SuiteConfig, path), path)
    lines = cost.cost_lines(suite, 1, throughput="measure", bench_dir=tmp_path / "empty")
    (used,) = [line for line in lines if line.startswith("  throughput")]
    assert used.startswith("  throughput measured: 2 eager training steps of sqair here")
    assert lines[-1].endswith("(estimate, measured throughput)")


def test_assumed_rate_is_labelled_and_used(tmp_path: Path) -> None:
    suite = _load(tmp_path)
    lines = cost.cost_lines(suite, 1, throughput="0.001", bench_dir=tmp_path / "empty")
    (used,) = [line for line in lines if line.startswith("  throughput")]
    assert used.startswith("  throughput assumed: --throughput 0.001 it/s at 5 frames") and "[not measured]" in used
    assert lines[-1].endswith("(estimate, assumed throughput)")
    # training as in the file case (200 s a frame-iteration); evaluation at 2.5 x 32 x 0.001 = 0.08 sequences/s
    assert any(line.startswith("    sqair                   0.001 it/s  ") for line in lines)
    assert not any("figure: none" in line for line in lines)  # an assumed rate stands for every model


def test_cuda_suite_without_cuda_names_the_missing_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cost, "cuda_available_probe", lambda: False)
    monkeypatch.setattr(throughput, "cuda_available_probe", lambda: False)
    doc = _suite_doc(tmp_path)
    doc["device"] = "cuda"
    path = _write_suite(tmp_path, doc)
    suite = validate_suite(load_config(SuiteConfig, path), path)  # validate does not ask for CUDA
    lines = cost.cost_lines(suite, 1, bench_dir=tmp_path / "empty")
    assert lines[1] == "  device: cuda (no CUDA here: `run` will refuse to start)"
    assert lines[-1].startswith("  time: no throughput figure for cuda") and "pass --throughput" in lines[-1]


@pytest.mark.parametrize("value,message", [("nope.json", "cannot read it"), ("0", "a training rate between 1e-06 and 1e+06 it/s"),
                                           ("bad.json", "not a `bench --json` file")])
def test_bad_throughput_is_one_line_before_any_output(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      value: str, message: str) -> None:
    (tmp_path / "bad.json").write_text('{"device": "cpu"}')
    path = _write_suite(tmp_path, _suite_doc(tmp_path))
    arg = str(tmp_path / value) if value.endswith(".json") else value
    assert main(["run", str(path), "--dry-run", "--throughput", arg]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: --throughput") and message in captured.err and captured.err.count("\n") == 1


def test_generalization_dry_run_loads_no_torch() -> None:
    """With a committed CPU file for the suite, the dry run's cost needs no torch (it stays fast)."""
    stdout = dry_run_without_torch("suites/generalization.yaml")
    assert "throughput from file: results/bench/" in stdout
    if not cost.cuda_available_probe():  # with CUDA here there is no committed GPU file: it measures, with torch
        assert stdout.rstrip().endswith("no torch")


# ----------------------------------------------------------------------------- run's device check
def test_run_refuses_cuda_without_cuda_before_any_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    doc = _suite_doc(tmp_path)
    doc["device"] = "cuda"
    path = _write_suite(tmp_path, doc)
    assert main(["run", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.err == (f"error: {path}: device: 'cuda' but CUDA is not available on this machine "
                            "(set device: auto or cpu)\n")
    assert captured.out == ""
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()


def test_device_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_run_device("auto", "s.yaml") == "device auto: no CUDA, running on cpu"
    assert check_run_device("cpu", "s.yaml") == "device cpu: running on cpu"
    assert check_run_device("cuda:1", "s.yaml", executor="ray") == "device cuda:1: chosen on each Ray worker"
    with pytest.raises(ConfigError, match=r"^s\.yaml: device: 'cuda:0' but CUDA is not available"):
        check_run_device("cuda:0", "s.yaml")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"^s\.yaml: device: 'cuda:1' but this machine has 1 CUDA device"):
        check_run_device("cuda:1", "s.yaml")


def test_throughput_needs_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_suite(tmp_path, _suite_doc(tmp_path))
    assert main(["run", str(path), "--throughput", "5"]) == 1
    assert capsys.readouterr().err == "error: --throughput: only with --dry-run (it feeds the cost estimate)\n"
    assert not (tmp_path / "data").exists()
