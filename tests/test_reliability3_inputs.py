"""Reliability round 3 (issue 32), part 1: concurrency and other inputs (values, model size, paths).

One test per case of the round's sections 7 and 8 that part 1 fixes, named after its id
(`test_C03_...`, `test_V02_...`, `test_M05_...`).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rsqair_bench import cli, registry
from rsqair_bench.config import MAX_MODEL_PARAMETERS, ModelConfig, dump_yaml, estimated_parameters
from rsqair_bench.core.io import hold_lock
from rsqair_bench.data import commands
from rsqair_bench.runner import suite as suite_checks
from tests.cli_checks import assert_one_line, quick_suite_doc, run_cli
from tests.fakes import tiny_job

WAIT_S = 10.0


def _suite(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(quick_suite_doc(tmp_path, **changes), sort_keys=False))
    return path


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


# ----------------------------------------------------------------------------- 7. concurrency
def test_C03_generate_without_force_waits_for_the_lock_and_then_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A second `data generate --out F` started while another holds F.lock (the first generator, or
    `ensure_dataset`) waits; when the first has written F, the second refuses instead of replacing it."""
    out = tmp_path / "race.h5"
    generated = []
    monkeypatch.setattr(commands, "generate_file", lambda *a, **k: generated.append(a))
    argv = ["data", "generate", "--balls", "4", "--splits", "test=3", "--frames", "2", "--size", "8",
            "--out", str(out), "--no-progress"]
    result: dict[str, Any] = {}
    err = ""
    with hold_lock(str(out) + ".lock", 0):  # the first generator, still running
        second = threading.Thread(target=lambda: result.update(code=cli.main(argv)), daemon=True)
        second.start()
        deadline = time.monotonic() + WAIT_S
        while "waiting for another process" not in err and time.monotonic() < deadline:
            time.sleep(0.05)
            err += capsys.readouterr().err
        assert "waiting for another process writing" in err and second.is_alive()
        out.write_bytes(b"the first generator's file")  # it finishes: renames its file into place
    second.join(WAIT_S)
    assert not second.is_alive()
    assert_one_line(result["code"], capsys.readouterr().err.strip(), f"{out}: already exists; pass --force")
    assert out.read_bytes() == b"the first generator's file" and generated == []


# ----------------------------------------------------------------------------- 8. values
@pytest.mark.parametrize("dotted,value", [
    ("model_config.output_std", float("inf")), ("model_config.prop_prior_scale_bias", float("nan")),
    ("model_config.shift_prior", float("inf")), ("train.lr_decay_factor", float("inf")),
    ("train.max_minutes", float("inf")), ("train.grad_clip", float("nan")), ("ray.num_cpus_per_job", float("inf")),
])
def test_V02_non_finite_values_are_refused_by_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       dotted: str, value: float) -> None:
    code, err = run_cli(["validate", str(_suite(tmp_path, **{dotted: value}))], capsys)
    assert_one_line(code, err, f"{dotted}: expected a finite number")


def test_V02_train_refuses_a_non_finite_model_value_before_writing(tmp_path: Path, fake_h5: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    job = tiny_job(fake_h5)
    job.model_config.output_scale = float("inf")
    (tmp_path / "job.yaml").write_text(dump_yaml(job))
    code, err = run_cli(["train", str(tmp_path / "job.yaml"), "--out", str(tmp_path / "out"), "--no-progress"], capsys)
    assert_one_line(code, err, "model_config.output_scale: expected a finite number, found inf")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key,value,needle", [
    ("n_hidden", 100_000_000, f"model_config.n_hidden: expected a model of at most {MAX_MODEL_PARAMETERS:,} parameters"),
    ("glimpse_size", 100_000, "model_config.glimpse_size: expected a model of at most"),
    ("max_objects", 100_000, "model_config.max_objects: expected between 1 and 64 object slots"),
])
def test_V03_model_size_is_bounded_before_anything_is_built(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch, key: str, value: int,
                                                            needle: str) -> None:
    monkeypatch.setattr(registry, "build_model", lambda *a: pytest.fail("a model was built"))
    code, err = run_cli(["validate", str(_suite(tmp_path, **{f"model_config.{key}": value}))], capsys)
    assert_one_line(code, err, needle)


def test_V03_a_model_whose_training_state_exceeds_this_machines_memory_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    config = ModelConfig(n_hidden=4096)
    assert estimated_parameters(config) < MAX_MODEL_PARAMETERS  # under the hard bound: the memory decides
    monkeypatch.setattr(suite_checks, "available_memory", lambda: 2**30)
    monkeypatch.setattr("rsqair_bench.data.limits.available_memory", lambda: 2**30)
    code, err = run_cli(["validate", str(_suite(tmp_path, **{"model_config.n_hidden": 4096, "device": "cpu"}))], capsys)
    assert_one_line(code, err, "model_config.n_hidden: the model's training state", "more than the limit")


@pytest.mark.parametrize("model", ["sqair", "sqair+in", "sqair+rmc", "sqair+gru", "sqair+lstm", "sqair+transformer"])
def test_V03_the_parameter_estimate_follows_the_built_models(model: str) -> None:
    """config.estimated_parameters within 20% of the real count where the bound matters (large models)."""
    for config in (ModelConfig(), ModelConfig(n_hidden=1024), ModelConfig(glimpse_size=64), ModelConfig(n_layers=4),
                   ModelConfig(z_what=200)):
        built = sum(p.numel() for p in registry.build_model(model, config).parameters())
        assert 0.8 <= estimated_parameters(config) / built <= 1.2, (model, config)


# ----------------------------------------------------------------------------- 8. paths
def test_M05_results_as_a_dangling_symlink_is_refused_by_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "rdang"
    os.symlink(tmp_path / "nonexistent_target", link)
    path = _suite(tmp_path, results=str(link))
    before = _snapshot(tmp_path)
    for argv in (["validate", str(path)], ["run", str(path)]):
        code, err = run_cli(argv, capsys)
        assert_one_line(code, err, f"results: {str(link)!r} is a symbolic link to", "which does not exist")
    assert _snapshot(tmp_path) == before  # no data generated, nothing created


def test_M06_a_data_folder_that_is_a_dangling_symlink_is_refused_by_validate(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A checkout whose `data` is a link to another machine's disk: `run` failed with a bare
    "data: File exists" when it came to generate the data; now validate and run refuse it first."""
    link = tmp_path / "data"
    os.symlink(tmp_path / "elsewhere", link)
    path = _suite(tmp_path, **{"data.balls4.path": str(link / "learn" / "b4.h5")})
    before = _snapshot(tmp_path)
    for argv in (["validate", str(path)], ["run", str(path)]):
        code, err = run_cli(argv, capsys)
        assert_one_line(code, err, f"data.balls4.path: {str(link)!r} is a symbolic link to", "which does not exist")
    assert _snapshot(tmp_path) == before
