"""`model_config.compile` without a C++ compiler, and the `compiling` phase of a compiled first step.

Without a compiler, inductor used to fail at the first step (~46 s in) with a 100-line
InductorError after config.yaml, train_log.csv and tensorboard/ were written. Now the compiler
is probed before anything is written; without one the job trains eager, warns once and records
why. While a compiled run's first step compiles, status.json says `compiling` (since when), and
the step's time is logged and recorded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rsqair_bench.config import ModelConfig, dump_yaml
from rsqair_bench.core.compiler import compiler_problem, probe_build
from rsqair_bench.core.job_status import STATUS_FILE, JobStatus, StatusWriter, read_status
from rsqair_bench.metrics import write_metrics
from rsqair_bench.metrics_schema import read_metrics
from rsqair_bench.registry import build_model
from rsqair_bench.runner.live_progress import job_line
from rsqair_bench.training import loop as train
from rsqair_bench.training.state import LATEST
from tests.fakes import FakeBallsDataset, fake_factory, tiny_job, write_fake_h5


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_h5(tmp_path_factory.mktemp("data") / "balls.h5")


@pytest.fixture
def no_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No compiler anywhere: PATH is an empty directory, CC/CXX and inductor's `cpp.cxx` name a missing file
    (inductor read $CXX when torch loaded, so its config is patched too); the probe's cache is reset around."""
    from torch._inductor import config as inductor_config

    empty, missing = tmp_path / "empty-bin", tmp_path / "no-such-c++"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("CXX", str(missing))
    monkeypatch.setenv("CC", str(missing))
    compiler_problem.cache_clear()
    with inductor_config.patch({"cpp.cxx": (None, str(missing))}):
        yield missing
    compiler_problem.cache_clear()


def test_probe_names_the_missing_compiler(no_compiler: Path) -> None:
    problem = compiler_problem()
    assert problem is not None and str(no_compiler) in problem and "PATH" in problem


def test_probe_reports_a_compiler_that_cannot_build(tmp_path: Path) -> None:
    broken = tmp_path / "broken-c++"
    broken.write_text("#!/bin/sh\necho 'fatal error: cmath: No such file or directory' >&2\nexit 1\n")
    broken.chmod(0o755)
    assert probe_build(str(broken)) == "fatal error: cmath: No such file or directory"


def test_compile_without_a_compiler_trains_eager_warns_once_and_records_why(
    data: Path, tmp_path: Path, no_compiler: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The real model with `compile: true`: no torch.compile call at all, one warning naming the cause, and
    the reason in the result, the checkpoints and metrics.json; config.yaml still says `compile: true`, so
    the runner's finished-job check sees the suite's settings unchanged."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.compile called although no compiler works")

    monkeypatch.setattr(torch, "compile", refuse)
    job = dataclasses.replace(
        tiny_job(data, model="sqair", max_iterations=2, validate_every=2, checkpoint_every=2),
        model_config=ModelConfig(image_size=50, z_what=3, glimpse_size=4, n_hidden=8, n_layers=1, max_objects=2,
                                 compile=True))
    out = tmp_path / "job"
    caplog.set_level(logging.WARNING, logger="rsqair_bench")
    result = train.train_job(job, out, progress=False, model_factory=build_model, dataset_factory=FakeBallsDataset)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("rsqair_bench")]
    assert [r.getMessage() for r in warnings] == [f"model_config.compile is set but {compiler_problem()}: training eager instead"]
    assert result.finished and not result.compiled and result.compile_seconds is None
    assert result.compile_fallback == compiler_problem() and str(no_compiler) in result.compile_fallback
    assert (out / "config.yaml").read_text() == dump_yaml(job) and "compile: true" in dump_yaml(job)
    saved = torch.load(out / LATEST, weights_only=False)
    assert saved["train_stats"]["compile_fallback"] == result.compile_fallback
    assert saved["model_config"]["compile"] is True  # the job's own config, not the eager stand-in
    metrics = {"model": "sqair", "paper_name": "SQAIR", "seed": job.seed, "suite": "t", "config_hash": "h",
               "checkpoint_iteration": 2, "parameters": result.parameters, "device": "cpu", "torch_version": "x",
               "train": result.train_stats()}
    write_metrics(tmp_path / "metrics.json", metrics, {})
    assert read_metrics(tmp_path / "metrics.json")["train"]["compiled"] is False  # the checked reader accepts it


def test_bench_measures_eager_without_a_compiler_and_says_so(no_compiler: Path, caplog) -> None:
    from rsqair_bench.runner import bench

    caplog.set_level(logging.WARNING, logger="rsqair_bench.runner.bench")
    assert bench._eager_without_compiler(ModelConfig(compile=True)) == ModelConfig(compile=False)
    assert [r.getMessage().endswith(": measuring eager") for r in caplog.records] == [True]


def test_the_compiler_is_probed_before_anything_is_written(data: Path, tmp_path: Path, monkeypatch) -> None:
    out, seen = tmp_path / "job", []
    monkeypatch.setattr(train, "compiler_problem", lambda: seen.append(out.exists()) or "no compiler (test)")
    job = dataclasses.replace(tiny_job(data, max_iterations=2), model_config=ModelConfig(image_size=50, z_what=3, compile=True))
    result = train.train_job(job, out, progress=False, model_factory=fake_factory(), dataset_factory=FakeBallsDataset)
    assert seen == [False] and result.compile_fallback == "no compiler (test)"


def _recording_factory(out: Path) -> tuple[object, list[JobStatus | None]]:
    """The fake model, reading status.json at each training forward (i.e. during each step)."""
    seen: list[JobStatus | None] = []
    base = fake_factory()

    def build(name: str, config: ModelConfig) -> torch.nn.Module:
        model = base(name, config)
        forward = model.forward

        def recording(*args: object, **kwargs: object) -> object:
            if model.training:
                seen.append(read_status(out / STATUS_FILE))
            return forward(*args, **kwargs)

        model.forward = recording
        return model

    return build, seen


@pytest.mark.parametrize("compile_", [True, False])
def test_first_compiled_step_shows_compiling_then_training(data: Path, tmp_path: Path, monkeypatch, caplog, compile_) -> None:
    """Compiled (the compile itself stubbed: eager update, a compiler 'found'): status.json says `compiling`
    during the first step only, the step's seconds are logged and recorded. Not compiled: never."""
    monkeypatch.setattr(train, "compiler_problem", lambda: None)
    monkeypatch.setattr(train, "optimizer_update", lambda optimizer, compiled: optimizer.step)
    out = tmp_path / "job"
    factory, seen = _recording_factory(out)
    config = ModelConfig(image_size=50, z_what=3, compile=compile_)
    job = dataclasses.replace(tiny_job(data, max_iterations=3), model_config=config)
    caplog.set_level(logging.INFO, logger="rsqair_bench.training.loop")
    result = train.train_job(job, out, progress=False, model_factory=factory, dataset_factory=FakeBallsDataset)
    phases = [s.phase for s in seen]
    logged = [r.getMessage() for r in caplog.records if "first compiled step" in r.getMessage()]
    if compile_:
        assert phases == ["compiling", "training", "training"]
        assert seen[0].since is not None
        assert job_line("fake/seed3", seen[0], 10, now=seen[0].since + 65) == "fake/seed3  0/3 it  compiling 1:05"
        assert result.compiled and result.compile_seconds is not None and result.compile_seconds > 0
        assert result.train_stats()["compile_seconds"] == result.compile_seconds
        assert logged == [f"iteration 1: the first compiled step took {result.compile_seconds:.1f} s (compilation included)"]
    else:
        assert phases == ["training"] * 3
        assert not result.compiled and result.compile_seconds is None and logged == []
    assert json.loads((out / STATUS_FILE).read_text())["phase"] == "training ended"


def test_leaving_the_compiling_phase_restarts_the_rate() -> None:
    """Minutes of compiling are not a slow step: back in `training`, it/s is measured afresh."""
    now = [0.0]
    writer = StatusWriter(Path("/nonexistent-dir"), "m", 0, 100, clock=lambda: now[0])  # writes fail quietly
    writer.phase("compiling")
    now[0] = 100.0
    writer.step(1)  # the compiling step: 1 iteration in 100 s
    writer.phase("training")
    assert writer.status.it_per_s is None
    now[0] = 101.0
    writer.step(3)
    assert writer.status.it_per_s == pytest.approx(2.0)
