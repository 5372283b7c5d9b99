"""Reliability and bad input (issue 11): one test per case of the fault pass, named `test_caseNN_...`.

Each command must refuse with one line and a non-zero exit, change nothing, and run no code it was not
asked to run; a crashing job fails alone (case 3) and `train --out` is locked (case 6). Nothing here
allocates what it checks the bounds of: the size checks must refuse before allocating.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import filelock
import h5py
import numpy as np
import pytest
import torch
import yaml

from rsqair_bench import checkpoint as ckpt
from rsqair_bench import cli
from rsqair_bench.config import EvalConfig, EvalSplit, SuiteConfig, dump_yaml, load_config
from rsqair_bench.core.io import atomic_write_text
from rsqair_bench.data import h5, limits
from rsqair_bench.errors import ConfigError, OutputError, TrainingDiverged
from rsqair_bench.evaluation import evaluate as ev
from rsqair_bench.runner.job import JobOutcome, write_basic_metrics
from rsqair_bench.runner.run import run_suite
from rsqair_bench.runner.suite import validate_suite
from rsqair_bench.training import loop as train
from rsqair_bench.training.state import LATEST
from tests.cli_checks import assert_one_line, quick_suite_doc, run_cli
from tests.fakes import FakeBallsDataset, FakeSQAIR, tiny_job
from tests.reliability_jobs import crash_eval, crash_train, no_data

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers
_main, _one_line = run_cli, assert_one_line  # short names for the many calls below


def _fake_checkpoint(path: Path, **extra: Any) -> Path:
    """A readable checkpoint with what evaluation reads before building the model."""
    state = {"format": ckpt.FORMAT_VERSION, "model": {}, "model_name": "sqair+evil", "iteration": 1,
             "model_config": {"image_size": 50, "max_objects": 4, "z_what": 3}, **extra}
    torch.save(state, path)
    return path


def _quick_suite(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    return quick_suite_doc(tmp_path, **changes)


def _write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- 1. code from a checkpoint
def test_case01_checkpoint_plugins_are_never_imported(tmp_path: Path, fake_h5: Path, capsys) -> None:
    pwned = tmp_path / "PWNED_PLUGIN"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(pwned)!r}, 'w').close()\n")
    given = tmp_path / "given.py"
    given_marker = tmp_path / "GIVEN_LOADED"
    given.write_text(f"open({str(given_marker)!r}, 'w').close()\n")
    ck = _fake_checkpoint(tmp_path / "ck.pt", plugins=[str(evil)])

    code, err = _main(["eval", str(ck), "--data", str(fake_h5), "--split", "test"], capsys)
    _one_line(code, err, "sqair+evil", "not registered", "--plugin")
    assert not pwned.exists(), "a checkpoint's plugin list ran code"

    code, err = _main(["eval", str(ck), "--data", str(fake_h5), "--split", "test", "--plugin", str(given)], capsys)
    assert given_marker.exists(), "a plugin named on the command line must be loaded"
    assert not pwned.exists()
    _one_line(code, err, "not registered")


# ----------------------------------------------------------------------------- 2. size bounds
@pytest.mark.parametrize("flag, value, needle", [
    ("--size", "100000", "1024"),
    ("--frames", "1000000000", str(limits.MAX_FRAMES)),
    ("--sequences", "1000000000000", str(limits.MAX_SEQUENCES)),
])
def test_case02_generate_size_bounds_refuse_before_allocating(tmp_path: Path, capsys, monkeypatch,
                                                                flag: str, value: str, needle: str) -> None:
    def allocated(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("allocated before refusing")

    monkeypatch.setattr(h5, "simulate_random", allocated)
    monkeypatch.setattr(h5, "RenderBuffers", allocated)
    args = {"--size": "64", "--frames": "2", "--sequences": "30", flag: value}
    out = tmp_path / "big.h5"
    code, err = _main(["data", "generate", "--balls", "4", "--out", str(out), "--no-progress",
                       *[x for kv in args.items() for x in kv]], capsys)
    _one_line(code, err, flag.lstrip("-"), needle)
    assert list(tmp_path.iterdir()) == []


def test_case02_generate_memory_estimate_refuses_with_the_limit(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(limits, "available_memory", lambda: 2**30)  # 1 GiB free
    monkeypatch.setattr(h5, "RenderBuffers", lambda: (_ for _ in ()).throw(AssertionError("allocated")))
    code, err = _main(["data", "generate", "--balls", "4", "--sequences", "300", "--frames", "100", "--size", "512",
                       "--out", str(tmp_path / "big.h5"), "--no-progress"], capsys)
    _one_line(code, err, "of memory", "limit", "GiB available")
    assert list(tmp_path.iterdir()) == []


def test_case02_eval_batch_size_refuses_before_allocating(tmp_path: Path, fake_h5: Path, monkeypatch) -> None:
    monkeypatch.setattr(limits, "available_memory", lambda: 2**20)  # 1 MiB free
    monkeypatch.setattr(ev, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model built")))
    ck = _fake_checkpoint(tmp_path / "ck.pt")
    with pytest.raises(ConfigError, match="batch_size 1000000 .*limit.*--batch-size"):
        ev.evaluate_checkpoint(ck, str(fake_h5), EvalSplit(data="x", frames=5), EvalConfig(batch_size=1_000_000),
                               device="cpu", dataset_factory=FakeBallsDataset)


# ----------------------------------------------------------------------------- 3. crash isolation
def _fake_suite(tmp_path: Path, seeds: list[int], workers: int) -> SuiteConfig:
    doc = {"name": "fake", "models": ["sqair"], "seeds": seeds, "workers": workers,
           "results": str(tmp_path / "results"),
           "data": {"balls4": {"path": str(tmp_path / "b4.h5"), "frames": 12,
                               "splits": {"training": 10, "validation": 5, "test": 5}}},
           "train": {"curriculum_max": 10, "batch_size": 4},
           "eval": {"samples": 2, "splits": {"balls4/test": {"data": "balls4"}}}}
    path = _write_yaml(tmp_path / "fake.yaml", doc)
    return validate_suite(load_config(SuiteConfig, path), path)


def _run(suite: SuiteConfig, **kwargs: Any) -> tuple[Any, str]:
    out = io.StringIO()
    summary = run_suite(suite, out=out, report=False, train_fn=crash_train, eval_fn=crash_eval,
                        metrics_fn=write_basic_metrics, prepare_data=no_data, **kwargs)
    return summary, out.getvalue()


def test_case03_one_crashing_job_does_not_take_down_the_pool(tmp_path: Path) -> None:
    suite = _fake_suite(tmp_path, seeds=[0, 1, 2], workers=2)
    job_dir = Path(suite.results) / "fake" / "sqair"
    (job_dir / "seed1").mkdir(parents=True)
    (job_dir / "seed1" / "kill_self").write_text("")
    summary, text = _run(suite)
    status = {o.name: o.status for o in summary.outcomes}
    assert status == {"sqair/seed0": "done", "sqair/seed1": "failed", "sqair/seed2": "done"}, text
    assert "SIGKILL" in (job_dir / "seed1" / "error.txt").read_text()
    (job_dir / "seed1" / "kill_self").unlink()
    summary, text = _run(suite)  # the rerun retries only the crashed job
    assert [(o.name, o.status) for o in summary.outcomes if o.status != "skipped"] == [("sqair/seed1", "done")], text


# ----------------------------------------------------------------------------- 4. NaN inside a distribution
class DistributionNaN(FakeSQAIR):
    """From training call `bad_from` on, a Normal gets a NaN mean: torch raises ValueError (argument validation)."""

    def __init__(self, config: Any, bad_from: int, bad_until: int) -> None:
        super().__init__(config)
        self.bad = range(bad_from, bad_until + 1)

    def forward(self, x: torch.Tensor, particles: int, generator: Any = None, max_objects: Any = None) -> Any:
        if self.training and self.calls + 1 in self.bad:
            self.calls += 1
            torch.distributions.Normal(torch.full((2,), float("nan")), 1.0)
        return super().forward(x, particles, generator, max_objects)


def _nan_factory(bad_from: int, bad_until: int):
    return lambda name, config: DistributionNaN(config, bad_from, bad_until)


@pytest.fixture
def validated_distributions():
    """Argument validation on, as in a fresh process: torch.compile's first use in a process turns it
    off for good (torch._dynamo's TorchPatcher), and compile tests may have run before this one. With
    validation off, a NaN parameter reaches the loss instead, which the NaN-loss cases cover."""
    before = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(True)
    yield
    torch.distributions.Distribution.set_default_validate_args(before)


@pytest.mark.usefixtures("validated_distributions")
def test_case04_nan_inside_a_distribution_takes_the_divergence_path(tmp_path: Path, fake_h5: Path) -> None:
    job = tiny_job(fake_h5, checkpoint_every=2, validate_every=2, max_iterations=6)
    out = tmp_path / "job"
    with pytest.raises(TrainingDiverged) as info:
        train.train_job(job, out, progress=False, model_factory=_nan_factory(3, 99), dataset_factory=FakeBallsDataset)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "iteration 3" in message and "kept" in message
    assert ckpt.load_checkpoint(out / LATEST)["iteration"] == 2  # the last good checkpoint

    # with train.max_nan_skips, the batch is skipped like a batch with a NaN loss
    job = tiny_job(fake_h5, checkpoint_every=2, validate_every=2, max_iterations=6, max_nan_skips=1)
    result = train.train_job(job, tmp_path / "skip", progress=False, model_factory=_nan_factory(3, 3),
                             dataset_factory=FakeBallsDataset)
    assert result.finished and result.nan_skips == 1


class ParamsBlowUp(FakeSQAIR):
    """Training call 3 leaves the parameters non-finite (what learning_rate 1e6 does after a step)."""

    def forward(self, x: torch.Tensor, particles: int, generator: Any = None, max_objects: Any = None) -> Any:
        out = super().forward(x, particles, generator, max_objects)
        if self.training and self.calls == 3:
            with torch.no_grad():
                self.mean.fill_(float("inf"))
        return out


def test_case04_nonfinite_parameters_are_never_checkpointed(tmp_path: Path, fake_h5: Path) -> None:
    job = tiny_job(fake_h5, checkpoint_every=2, validate_every=2, max_iterations=6)
    out = tmp_path / "job"
    with pytest.raises(TrainingDiverged, match="parameters became non-finite.*kept"):
        train.train_job(job, out, progress=False, model_factory=lambda n, c: ParamsBlowUp(c),
                        dataset_factory=FakeBallsDataset)
    state = ckpt.load_checkpoint(out / LATEST)
    assert state["iteration"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())


# ----------------------------------------------------------------------------- 5. validate == train's checks
@pytest.mark.parametrize("key, value", [
    ("train.batch_size", 0),
    ("train.learning_rate", -1),
    ("model_config.relation_options", {"bogus": 1}),
    ("model_config.n_hidden", -16),
    ("model_config.glimpse_size", 0),
    ("model_config.z_what", 0),
    ("model_config.max_objects", 0),
])
def test_case05_validate_rejects_what_training_rejects(tmp_path: Path, capsys, key: str, value: Any) -> None:
    path = _write_yaml(tmp_path / "suite.yaml", _quick_suite(tmp_path, **{key: value}))
    code, err = _main(["validate", str(path)], capsys)
    _one_line(code, err, str(path), key.split(".")[-1] if key.endswith("options") else key)


def test_case05_train_checks_ranges_before_writing(tmp_path: Path, fake_h5: Path, capsys) -> None:
    job = tiny_job(fake_h5)
    job.model_config.max_objects = 0
    cfg = tmp_path / "job.yaml"
    cfg.write_text(dump_yaml(job))
    out = tmp_path / "out"
    code, err = _main(["train", str(cfg), "--out", str(out), "--no-progress"], capsys)
    _one_line(code, err, "model_config.max_objects", "between 1 and 64")
    assert not out.exists()


# ----------------------------------------------------------------------------- 6. lock on train --out
def test_case06_train_out_is_locked_like_the_runner(tmp_path: Path, fake_h5: Path, capsys) -> None:
    cfg = tmp_path / "job.yaml"
    cfg.write_text(dump_yaml(tiny_job(fake_h5)))
    out = tmp_path / "J"
    out.mkdir()
    with filelock.FileLock(str(out / ".lock"), timeout=0):  # what a runner or another `train` holds
        code, err = _main(["train", str(cfg), "--out", str(out), "--no-progress"], capsys)
    _one_line(code, err, str(out / ".lock"), "another process")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


# ----------------------------------------------------------------------------- 7. I/O errors
def test_case07_full_disk_during_generate_is_one_line_and_keeps_the_old_file(tmp_path: Path, capsys,
                                                                              monkeypatch) -> None:
    out = tmp_path / "d.h5"
    out.write_bytes(b"old data")

    def full(self: Any, *args: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(h5._Writer, "write_chunk", full)
    code, err = _main(["data", "generate", "--balls", "1", "--sequences", "3", "--frames", "2", "--size", "8",
                       "--out", str(out), "--force", "--no-progress"], capsys)
    _one_line(code, err, str(out), "No space left on device")
    assert out.read_bytes() == b"old data" and sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]


def test_case07_full_disk_during_checkpoint_write_keeps_the_old_one(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, {"model": {}, "iteration": 1})
    before = path.read_bytes()

    def full(obj: Any, fh: Any) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OutputError, match="checkpoint.pt: cannot write checkpoint"):
        ckpt.save_checkpoint(path, {"model": {}, "iteration": 2})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_case07_read_only_output_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import rsqair_bench.core.io as rio

    def read_only(path: Path, *_: Any) -> Path:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(rio, "_create_temp", read_only)
    with pytest.raises(OutputError, match="m.json: cannot write .*Read-only file system"):
        atomic_write_text(tmp_path / "m.json", "{}")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # `eval --out` on a read-only filesystem
    code, err = _main(["eval", str(tmp_path / "ck.pt"), "--data", "x.h5", "--out", str(tmp_path / "m.json")], capsys)
    _one_line(code, err, str(tmp_path), "not writable", "--out")


def test_case07_out_under_a_file_is_one_line(tmp_path: Path, fake_h5: Path, capsys) -> None:
    cfg = tmp_path / "job.yaml"
    cfg.write_text(dump_yaml(tiny_job(fake_h5)))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, err = _main(["train", str(cfg), "--out", str(blocker / "J"), "--no-progress"], capsys)
    _one_line(code, err, str(blocker), "Not a directory")


def test_case07_results_pointing_at_a_file_fails_validate(tmp_path: Path, capsys) -> None:
    (tmp_path / "results").write_text("not a directory")
    path = _write_yaml(tmp_path / "suite.yaml", _quick_suite(tmp_path))
    code, err = _main(["validate", str(path)], capsys)
    _one_line(code, err, "results", "is a file")


# ----------------------------------------------------------------------------- 8. non-UTF-8 YAML
def test_case08_non_utf8_yaml_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "b.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    code, err = _main(["validate", str(path)], capsys)
    _one_line(code, err, str(path), "UTF-8")


# ----------------------------------------------------------------------------- 9. eval --max-objects
@pytest.mark.parametrize("value", ["-3", "0"])
def test_case09_eval_max_objects_out_of_range(tmp_path: Path, fake_h5: Path, capsys, value: str) -> None:
    ck = _fake_checkpoint(tmp_path / "ck.pt")
    code, err = _main(["eval", str(ck), "--data", str(fake_h5), "--max-objects", value], capsys)
    _one_line(code, err, "--max-objects", value)
    with pytest.raises(ConfigError, match="max_objects"):  # the library refuses it too (no silent fallback)
        ev.evaluate_checkpoint(ck, str(fake_h5), EvalSplit(data="x", frames=5, max_objects=int(value)), EvalConfig(),
                               device="cpu", dataset_factory=FakeBallsDataset)


# ----------------------------------------------------------------------------- 10. no silent overwrite
def test_case10_generate_refuses_to_overwrite_without_force(tmp_path: Path, capsys) -> None:
    out = tmp_path / "d.h5"
    out.write_bytes(b"precious")
    argv = ["data", "generate", "--balls", "1", "--sequences", "3", "--frames", "2", "--size", "8", "--out", str(out),
            "--no-progress"]
    code, err = _main(argv, capsys)
    _one_line(code, err, str(out), "--force")
    assert out.read_bytes() == b"precious"
    assert cli.main([*argv, "--force"]) == 0 and h5py.is_hdf5(out)


# ----------------------------------------------------------------------------- 11. inspect and checksums
def test_case11_inspect_exits_nonzero_on_mismatch_and_names_verified_datasets(tmp_path: Path, capsys) -> None:
    path = h5.generate_file(tmp_path / "d.h5", "1", {"test": 3}, frames=2, size=8, progress=False)
    with h5py.File(path, "a") as f:
        del f["test/positions"].attrs["sha256"]  # only some datasets carry a checksum now
    assert cli.main(["data", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "checksum: partial (verified: collisions, events, features, groups, masses, velocities; " \
           "no stored checksum: positions)" in out
    with h5py.File(path, "a") as f:
        f["test/features"][0, 0, 0, 0, 0] = 1 - f["test/features"][0, 0, 0, 0, 0]
    code = cli.main(["data", "inspect", str(path)])
    captured = capsys.readouterr()
    assert code != 0 and "MISMATCH in features" in captured.out
    _one_line(code, captured.err.strip(), "checksum mismatch", "features")


# ----------------------------------------------------------------------------- 12. duplicate YAML keys
def test_case12_duplicate_yaml_keys_are_refused_with_their_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\ntrain:\n  batch_size: 4\n  batch_size: 8\n")
    code, err = _main(["validate", str(path)], capsys)
    _one_line(code, err, str(path), "duplicate key 'batch_size'", "line 4", "line 3")


# ----------------------------------------------------------------------------- 13. smaller items
_SIGTERM_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from rsqair_bench.data import h5
    def write_chunk(self, *args):
        os.kill(os.getpid(), signal.SIGTERM)
        import time; time.sleep(5)
    h5._Writer.write_chunk = write_chunk
    h5.PIPELINE = False
    h5.generate_file(sys.argv[1], "1", {"test": 3}, frames=2, size=8, progress=False)
""")


def test_case13_sigterm_during_generate_is_cleaned_up_like_sigint(tmp_path: Path) -> None:
    out = tmp_path / "d.h5"
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_SCRIPT, str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert list(tmp_path.iterdir()) == [], "the temp file of a terminated generator was left behind"


def test_case13_orphan_temp_files_are_removed(tmp_path: Path) -> None:
    orphan = tmp_path / ".d.h5.tmp-999999999"  # no such process
    orphan.write_bytes(b"half a file")
    alive = tmp_path / f".d.h5.tmp-{os.getppid()}"  # a live process's file is not touched
    alive.write_bytes(b"in progress")
    h5.generate_file(tmp_path / "d.h5", "1", {"test": 3}, frames=2, size=8, progress=False)
    assert not orphan.exists() and alive.exists()


def test_case13_run_workers_zero_is_an_error(tmp_path: Path) -> None:
    suite = _fake_suite(tmp_path, seeds=[0], workers=1)
    with pytest.raises(ConfigError, match="--workers: expected >= 1, found 0"):
        _run(suite, workers=0)


def test_case13_yaml_syntax_error_keeps_line_and_column(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: a\nseeds: [1, 2\nmodels: x\n")
    code, err = _main(["validate", str(path)], capsys)
    _one_line(code, err, str(path), "line 3, column")


def test_case13_message_features_stored_as_a_group(tmp_path: Path, capsys) -> None:
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        f.create_group("test/features")
        for name in ("groups", "collisions"):
            f["test"][name] = np.zeros((2, 1, 8, 8, 1), np.uint8)
    code, err = _main(["data", "inspect", str(path)], capsys)
    _one_line(code, err, "test/features is a Group, expected a dataset")
    assert "missing" not in err


def test_case13_message_directory_given_as_suite_or_checkpoint(tmp_path: Path, fake_h5: Path, capsys) -> None:
    code, err = _main(["validate", str(tmp_path)], capsys)
    _one_line(code, err, "is a directory, expected a YAML file")
    code, err = _main(["eval", str(tmp_path), "--data", str(fake_h5)], capsys)
    _one_line(code, err, "is a directory, expected a checkpoint file")


class _Unsafe:
    pass


def test_case13_message_unsafe_pickle_is_not_called_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "model": _Unsafe()}, path)
    with pytest.raises(ckpt.CheckpointError, match="refused.*_Unsafe") as info:
        ckpt.load_checkpoint(path)
    assert "corrupt" not in str(info.value)


def test_case13_message_unknown_key_has_one_colon(tmp_path: Path, capsys) -> None:
    path = tmp_path / "u.yaml"
    path.write_text("name: x\nfoo: 1\n")
    code, err = _main(["validate", str(path)], capsys)
    _one_line(code, err, f"{path}: unknown key 'foo'")
    assert "::" not in err


def test_case13_message_run_summary_counts_jobs_skipped_while_waiting(tmp_path: Path, monkeypatch) -> None:
    import rsqair_bench.runner.run as runner

    suite = _fake_suite(tmp_path, seeds=[0, 1], workers=1)
    # another runner finished the jobs between our listing and our lock: execute_job reports "skipped"
    monkeypatch.setattr(runner, "execute_job", lambda job, **kw: JobOutcome(job.name, "skipped", str(job.directory)))
    _, text = _run(suite)
    assert "[2/2] sqair/seed1: skipped" in text and "0 done, 2 skipped" in text, text


def test_case13_atomic_writes_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o002)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o664
