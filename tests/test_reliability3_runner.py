"""Reliability round 3 (issue 32), part 2: re-evaluation of finished jobs and checkpoint integrity.

One test per case, named after the case id of the round's fault pass (H07-H15: a finished job evaluated
again; E04: a corrupted checkpoint). Each asserts the refusal, the message or the file its fix introduced,
and fails on the tree before the fix. The runner runs with the fake train/eval steps of test_runner.py,
so no test trains a model.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import h5py
import pytest
import torch
import yaml

from rsqair_bench import checkpoint as ckpt
from rsqair_bench.config import EvalConfig, EvalSplit, SuiteConfig, load_config
from rsqair_bench.errors import CheckpointError
from rsqair_bench.report.write import write_report
from rsqair_bench.runner import job as job_module
from rsqair_bench.runner.run import FILE_DIGEST, run_suite
from rsqair_bench.runner.suite import validate_suite
from tests.cli_checks import assert_one_line, run_cli
from tests.test_runner import FAKES

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "results" / "study" / "checkpoints"
TRAIN_FIGURES = {"iterations": 30, "seconds": 4.34, "sequences_per_s": 38.2, "peak_memory_mb": 100.0,
                 "best_validation_bound": -12.5, "compiled": False, "compile_fallback": None, "compile_seconds": None,
                 "precision": "fp32"}


# ----------------------------------------------------------------------------- helpers
def _suite_file(tmp_path: Path, samples: int = 2, extra_splits: dict[str, Any] | None = None) -> Path:
    """A one-job suite (sqair, seed 0) whose results are under tmp_path; the fake steps need no data file."""
    doc = {
        "name": "re", "models": ["sqair"], "seeds": [0], "results": str(tmp_path / "results"),
        "data": {"balls4": {"path": str(tmp_path / "b4.h5"), "frames": 12,
                            "splits": {"training": 10, "validation": 5, "test": 5}}},
        "train": {"curriculum_max": 10, "batch_size": 4},
        "eval": {"samples": samples, "splits": {"balls4/test": {"data": "balls4"}, **(extra_splits or {})}},
    }
    path = tmp_path / "re.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _run(path: Path) -> tuple[int, str]:
    out = io.StringIO()
    summary = run_suite(validate_suite(load_config(SuiteConfig, path), path), out=out, report=False, **FAKES)
    return summary.exit_code, out.getvalue()


def _job(tmp_path: Path) -> Path:
    return tmp_path / "results" / "re" / "sqair" / "seed0"


def _calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "results" / "re" / "calls.log").read_text().splitlines()


def _metrics(tmp_path: Path) -> dict[str, Any]:
    return json.loads((_job(tmp_path) / "metrics.json").read_text())


def _checkpoint_with_figures(path: Path, **figures: Any) -> None:
    """A checkpoint the loader accepts, holding training figures as train_job saves them (`train_stats`)."""
    torch.save({"format": ckpt.FORMAT_VERSION, "model": {}, "model_name": "sqair", "config_hash": "h",
                "parameters": {"total": 100, "relation": 0}, "train_stats": {**TRAIN_FIGURES, **figures}}, path)


def _h5_with_checksum(path: Path, checksum: str | None, value: float = 0.0) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("test/features", data=[[value]])
        if checksum is not None:
            f.attrs["checksum"] = checksum
    return path


# ----------------------------------------------------------------------------- H07
def test_H07_failed_reevaluation_is_marked_in_the_report(tmp_path: Path) -> None:
    path = _suite_file(tmp_path)
    assert _run(path)[0] == 0
    before = (_job(tmp_path) / "metrics.json").read_bytes()
    (_job(tmp_path) / "best.pt").unlink()  # the re-evaluation cannot run
    _suite_file(tmp_path, samples=3)
    code, text = _run(path)
    assert code == 1 and "FAILED sqair/seed0" in text
    assert (_job(tmp_path) / "metrics.json").read_bytes() == before and (_job(tmp_path) / "DONE").exists()
    write_report(tmp_path / "results" / "re")
    table = (tmp_path / "results" / "re" / "report" / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| SQAIR"))
    assert "1/1 §" in row, table
    note = table.split("§ **Failed re-evaluations (1)**", 1)[1]
    assert "- sqair/seed0: " in note and "(`sqair/seed0/error.txt`)" in note, table
    assert "previous evaluation" in table


# ----------------------------------------------------------------------------- H08
def test_H08_unwritable_metrics_json_fails_before_any_evaluation(tmp_path: Path) -> None:
    path = _suite_file(tmp_path)
    _run(path)
    metrics = _job(tmp_path) / "metrics.json"
    metrics.unlink()
    metrics.mkdir()  # metrics.json replaced by a directory
    calls = len(_calls(tmp_path))
    code, text = _run(path)
    assert code == 1 and "OutputError" in text and "metrics.json: is a directory" in text, text
    assert len(_calls(tmp_path)) == calls  # nothing evaluated (the fake eval logs every call)
    assert metrics.is_dir() and (_job(tmp_path) / "DONE").exists()


def test_H08_a_rollout_path_taken_by_a_directory_fails_before_training(tmp_path: Path) -> None:
    path = _suite_file(tmp_path)
    rollout = job_module.rollout_path(_job(tmp_path), EvalSplit(data="balls4"))
    rollout.mkdir(parents=True)
    code, text = _run(path)
    assert code == 1 and f"{rollout.name}: is a directory" in text, text
    assert not (tmp_path / "results" / "re" / "calls.log").exists()  # neither trained nor evaluated


# ----------------------------------------------------------------------------- H09
@pytest.mark.parametrize("holder", ["checkpoint.pt", "best.pt"])
def test_H09_unreadable_metrics_json_keeps_the_training_figures(tmp_path: Path, holder: str) -> None:
    path = _suite_file(tmp_path)
    _run(path)
    job = _job(tmp_path)
    if holder == "best.pt":
        (job / "checkpoint.pt").unlink()  # best.pt is the fallback
    _checkpoint_with_figures(job / holder)
    metrics = job / "metrics.json"
    metrics.write_bytes(metrics.read_bytes()[:300])  # truncated: invalid JSON
    code, text = _run(path)
    assert code == 0 and "no readable metrics.json" in text
    assert _metrics(tmp_path)["train"] == TRAIN_FIGURES  # not null, and not the fake train step's figures
    # an earlier re-evaluation that wrote nulls is repaired by the next one
    doc = _metrics(tmp_path)
    doc["train"] = dict.fromkeys(TRAIN_FIGURES)
    metrics.write_text(json.dumps(doc))
    _suite_file(tmp_path, samples=3)
    assert _run(path)[0] == 0 and _metrics(tmp_path)["train"] == TRAIN_FIGURES


# ----------------------------------------------------------------------------- H14
@pytest.mark.parametrize("stored", [True, False], ids=["stored-checksum", "no-stored-checksum"])
def test_H14_eval_split_given_by_path_is_evaluated_again_when_its_file_changes(tmp_path: Path, stored: bool) -> None:
    data = _h5_with_checksum(tmp_path / "t4.h5", "c1" if stored else None)
    path = _suite_file(tmp_path, extra_splits={"abs/test": {"data": str(data)}})
    assert _run(path)[0] == 0
    recorded = _metrics(tmp_path)["splits"]["abs/test"]["settings"]["data_checksum"]
    assert recorded == "c1" if stored else recorded.startswith(FILE_DIGEST)
    assert "1 already done" in _run(path)[1]  # unchanged: nothing to do
    _h5_with_checksum(data, "c2" if stored else None, value=1.0)  # the file regenerated in place
    calls = len(_calls(tmp_path))
    code, text = _run(path)
    assert code == 0 and "1 to evaluate again" in text and "abs/test: data_checksum changed" in text, text
    assert _calls(tmp_path)[calls:] == [f"eval:{data} sqair/seed0"]  # only that split, no training
    assert _metrics(tmp_path)["splits"]["abs/test"]["settings"]["data_checksum"] != recorded


def test_H14_missing_file_of_an_eval_split_is_refused_before_training(tmp_path: Path, capsys) -> None:
    path = _suite_file(tmp_path, extra_splits={"abs/test": {"data": str(tmp_path / "nowhere.h5")}})
    code, err = run_cli(["run", str(path), "--no-report"], capsys)
    assert_one_line(code, err, "eval.splits.abs/test.data", "nowhere.h5", "is not a file")
    assert not (tmp_path / "results").exists()


# ----------------------------------------------------------------------------- H15
@pytest.mark.parametrize("data", ["../../../../../../x/t4.h5", "/abs/data/t4.h5", "./data/t4.h5", "..", "a b|c"])
def test_H15_rollout_name_never_contains_a_user_path(tmp_path: Path, data: str) -> None:
    job = tmp_path / "results" / "re" / "sqair" / "seed0"
    rollout = job_module.rollout_path(job, EvalSplit(data=data, split="../test"))
    assert rollout.parent == job and "/" not in rollout.name and rollout.name.startswith("rollout_")
    assert rollout.name.endswith(".npz") and len(rollout.name) < 160
    other = job_module.rollout_path(job, EvalSplit(data=data + "5", split="../test"))
    assert other != rollout  # two splits never share a file


def test_H15_default_eval_writes_the_rollout_inside_the_job_directory(tmp_path: Path, monkeypatch) -> None:
    import rsqair_bench.evaluation.evaluate as ev

    seen: dict[str, Any] = {}
    monkeypatch.setattr(ev, "evaluate_checkpoint", lambda *a, **kw: seen.update(kw) or {})
    job = tmp_path / "job"
    split = EvalSplit(data="../../../../outside/t4.h5")
    job_module._default_eval(job / "best.pt", split.data, split, EvalConfig())
    assert seen["rollout_path"].parent == job
    named = EvalSplit(data="balls4")
    assert job_module.rollout_path(job, named).name == "rollout_balls4_test.npz"  # committed results' names kept


# ----------------------------------------------------------------------------- E04
def _corrupt_copy(tmp_path: Path, name: str = "sqair-seed0.pt") -> Path:
    """A shipped checkpoint with 2,000 bytes flipped inside one tensor's data (the round's fault)."""
    copy = tmp_path / name
    raw = bytearray((SHIPPED / name).read_bytes())
    for i in range(752_006, 754_006):
        raw[i] ^= 0xFF
    copy.write_bytes(bytes(raw))
    return copy


def test_E04_checkpoint_with_flipped_bytes_is_refused(tmp_path: Path, capsys, fake_h5: Path) -> None:
    corrupt = _corrupt_copy(tmp_path)
    with pytest.raises(CheckpointError, match="CRC-32"):
        ckpt.load_checkpoint(corrupt)
    code, err = run_cli(["eval", str(corrupt), "--data", str(fake_h5), "--split", "test", "--samples", "1"], capsys)
    assert_one_line(code, err, str(corrupt), "corrupt checkpoint", "archive/data/")


def test_E04_checkpoint_that_differs_from_its_sha256sums_line_is_refused(tmp_path: Path) -> None:
    for name in ("SHA256SUMS", "sqair-seed0.pt", "sqair+in-seed0.pt"):
        shutil.copyfile(SHIPPED / name, tmp_path / name)
    assert ckpt.load_checkpoint(tmp_path / "sqair-seed0.pt")["model_name"] == "sqair"  # listed and intact
    shutil.copyfile(SHIPPED / "sqair+in-seed0.pt", tmp_path / "sqair-seed0.pt")  # intact zip, wrong file
    with pytest.raises(CheckpointError, match=r"sqair-seed0.pt: sha256 .* differs from .*SHA256SUMS line 3"):
        ckpt.load_checkpoint(tmp_path / "sqair-seed0.pt")
    (tmp_path / "SHA256SUMS").write_text("not a checksum line\n")
    with pytest.raises(CheckpointError, match="SHA256SUMS: line 1: expected '<64 hex digits>  <file name>'"):
        ckpt.load_checkpoint(tmp_path / "sqair+in-seed0.pt")


def test_E04_every_shipped_checkpoint_passes_its_checks() -> None:
    for path in sorted(SHIPPED.glob("*.pt")):
        raw = ckpt.read_checked_bytes(path)  # CRCs and SHA256SUMS
        assert raw == path.read_bytes()
