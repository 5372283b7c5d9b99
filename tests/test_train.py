"""Training protocol: schedules, early stopping, resume after SIGKILL, divergence, bad input."""

from __future__ import annotations

import csv
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rsqair_bench import checkpoint as ckpt
from rsqair_bench import cli
from rsqair_bench.checkpoint import load_checkpoint
from rsqair_bench.config import TrainConfig, dump_yaml
from rsqair_bench.errors import CheckpointError, DataError, TrainingDiverged
from rsqair_bench.evaluation.evaluate import evaluate_checkpoint
from rsqair_bench.training import loop as train
from rsqair_bench.training.loop import train_job
from rsqair_bench.training.schedule import EarlyStopping, curriculum_length, learning_rate_factor
from rsqair_bench.training.windows import WindowBatchSampler
from tests.fakes import FakeBallsDataset, fake_factory, tiny_job, write_fake_h5

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_h5(tmp_path_factory.mktemp("data") / "balls.h5")


def run(job, out: Path, **kw):
    kw.setdefault("model_factory", fake_factory())
    return train_job(job, out, progress=False, dataset_factory=FakeBallsDataset, **kw)


def log_rows(out: Path) -> list[dict[str, str]]:
    with (out / "train_log.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def snapshot_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


# ----------------------------------------------------------------------------- pure schedules
def test_curriculum_schedule_paper_defaults() -> None:
    cfg = TrainConfig()  # paper: 3, +1 every 10,000, max 10
    got = {i: curriculum_length(i, cfg) for i in (0, 9_999, 10_000, 19_999, 20_000, 69_999, 70_000, 10**7)}
    assert got == {0: 3, 9_999: 3, 10_000: 4, 19_999: 4, 20_000: 5, 69_999: 9, 70_000: 10, 10**7: 10}


def test_curriculum_schedule_configurable() -> None:
    cfg = TrainConfig(curriculum_start=2, curriculum_every=3, curriculum_max=4)
    assert [curriculum_length(i, cfg) for i in range(10)] == [2, 2, 2, 3, 3, 3, 4, 4, 4, 4]


def test_learning_rate_decays_at_fractions() -> None:
    cfg = TrainConfig(max_iterations=100, lr_decay_at=[0.2, 0.5], lr_decay_factor=1 / 3)
    assert [learning_rate_factor(i, cfg) for i in (0, 19, 20, 49, 50, 99)] == pytest.approx([1, 1, 1 / 3, 1 / 3, 1 / 9, 1 / 9])


def test_early_stopping_on_scripted_curve() -> None:
    stopper = EarlyStopping(patience=3)
    curve = [-10.0, -8.0, -8.0, float("nan"), -5.0, -6.0, -5.0, -7.0]
    flags = []
    for i, score in enumerate(curve):
        flags.append(stopper.update(score, iteration=i))
        if stopper.should_stop:
            break
    # equal is not an improvement, NaN is not an improvement, counter resets on improvement
    assert flags == [True, True, False, False, True, False, False, False]
    assert (stopper.best, stopper.best_iteration, stopper.bad_count) == (-5.0, 4, 3)
    clone = EarlyStopping(3)
    clone.load_state_dict(stopper.state_dict())
    assert clone.should_stop and clone.best == -5.0


def test_window_sampler_is_a_pure_function_of_seed_and_iteration() -> None:
    cfg = TrainConfig(batch_size=4, curriculum_start=3, curriculum_every=5, curriculum_max=6)
    a = WindowBatchSampler(10, 4, 12, cfg, seed=1, start=0, stop=30)
    b = WindowBatchSampler(10, 4, 12, cfg, seed=1, start=17, stop=30)
    batches = list(a)
    assert list(b) == batches[17:]
    assert batches != list(WindowBatchSampler(10, 4, 12, cfg, seed=2, start=0, stop=30))
    for i, batch in enumerate(batches):
        assert all(length == curriculum_length(i, cfg) and 0 <= s <= 12 - length for _, s, length in batch)
    epoch0 = [idx for batch in batches[:2] for idx, _, _ in batch]  # 10 // 4 = 2 batches per epoch
    assert len(set(epoch0)) == 8


# ----------------------------------------------------------------------------- training runs
def test_train_writes_outputs_and_rerun_is_a_no_op(data: Path, tmp_path: Path) -> None:
    job = tiny_job(data)
    result = run(job, tmp_path)
    assert result.finished and result.iterations == 12 and not result.stopped_early
    assert {"checkpoint.pt", "best.pt", "train_log.csv", "config.yaml"} <= {p.name for p in tmp_path.iterdir()}
    assert not (tmp_path / "DONE").exists()
    rows = log_rows(tmp_path)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 13))
    assert [int(r["seq_len"]) for r in rows] == [2] * 4 + [3] * 4 + [4] * 4
    assert float(rows[0]["lr"]) == pytest.approx(1e-2) and float(rows[-1]["lr"]) == pytest.approx(1e-2 / 9)
    latest = load_checkpoint(tmp_path / "checkpoint.pt")
    assert latest["iteration"] == 12 and latest["model_name"] == "fake" and latest["finished"]
    assert set(latest["rng"]) >= {"model", "torch_cpu"}
    assert latest["train_stats"]["iterations"] == 12  # the final figures; best.pt is not rewritten after training
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["iteration"] == result.best_iteration == best["train_stats"]["iterations"]
    assert (tmp_path / "config.yaml").read_text() == dump_yaml(job)
    before = snapshot_files(tmp_path)
    again = run(job, tmp_path)
    assert again.iterations == 12 and snapshot_files(tmp_path) == before


def test_training_does_not_touch_global_rng(data: Path, tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(tiny_job(data, max_iterations=3), tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_early_stopping_ends_training(data: Path, tmp_path: Path) -> None:
    # lr 0 never improves the bound; CRN validation gives identical scores -> no strict improvement
    job = tiny_job(data, learning_rate=1e-12, validate_every=1, early_stop_patience=2, max_iterations=50)
    result = run(job, tmp_path)
    assert result.stopped_early and result.iterations < 50
    assert load_checkpoint(tmp_path / "checkpoint.pt")["stopped_early"]


def test_max_minutes_ends_training_on_time(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.max_minutes stops after that much wall time (a fake clock: one minute per call)."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(train.time, "perf_counter", lambda: 60.0 * next(ticks))
    job = tiny_job(data, max_iterations=1000)
    job = dataclasses.replace(job, train=dataclasses.replace(job.train, max_minutes=30.0))
    result = run(job, tmp_path)
    assert 1 <= result.iterations < 30
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["finished"] and (tmp_path / "best.pt").exists()


def test_sigkill_and_resume_gives_identical_losses(data: Path, tmp_path: Path) -> None:
    job = tiny_job(data, max_iterations=24, checkpoint_every=5, validate_every=6)
    reference = tmp_path / "reference"
    run(job, reference)

    killed = tmp_path / "killed"
    killed.mkdir()
    cfg = tmp_path / "job.yaml"
    cfg.write_text(dump_yaml(job))
    env = {**os.environ, "FAKE_SLEEP": "0.15", "PYTHONPATH": str(REPO)}
    code = "import sys; from tests.fakes import run_fake_training; run_fake_training(sys.argv[1], sys.argv[2])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(cfg), str(killed)], cwd=REPO, env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if (killed / "train_log.csv").exists() and len(log_rows(killed)) >= 12:
                break
            assert proc.poll() is None, "training subprocess ended before it could be killed"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    at_kill = load_checkpoint(killed / "checkpoint.pt")["iteration"]
    assert 10 <= at_kill < 24

    run(job, killed)  # the same command again: resumes from checkpoint.pt
    ref_rows, res_rows = log_rows(reference), log_rows(killed)
    assert [r["iteration"] for r in res_rows] == [str(i) for i in range(1, 25)]  # no duplicated rows
    for key in ("seq_len", "iwae_bound", "loss", "lr"):
        assert [r[key] for r in res_rows] == [r[key] for r in ref_rows], key
    ref_state = load_checkpoint(reference / "checkpoint.pt")["model"]
    res_state = load_checkpoint(killed / "checkpoint.pt")["model"]
    assert all(torch.equal(ref_state[k], res_state[k]) for k in ref_state)


def test_pause_and_resume_in_process_matches(data: Path, tmp_path: Path) -> None:
    job = tiny_job(data, checkpoint_every=100, log_every=2)
    run(job, tmp_path / "a")
    first = run(job, tmp_path / "b", max_steps=5)  # odd stop inside a log window
    assert not first.finished and first.iterations == 5
    run(job, tmp_path / "b")
    assert log_rows(tmp_path / "a") == [
        {**r, "seconds": a["seconds"], "sequences_per_s": a["sequences_per_s"]}
        for r, a in zip(log_rows(tmp_path / "b"), log_rows(tmp_path / "a"))
    ]


def test_nan_stops_naming_iteration_and_keeps_last_good_checkpoint(data: Path, tmp_path: Path) -> None:
    job = tiny_job(data, checkpoint_every=3, validate_every=100)
    with pytest.raises(TrainingDiverged, match=r"at iteration 8 .*last good checkpoint"):
        run(job, tmp_path, model_factory=fake_factory(nan_calls={8}))
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["iteration"] == 6 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert [int(r["iteration"]) for r in log_rows(tmp_path)] == list(range(1, 8))


def test_nan_skips_when_allowed(data: Path, tmp_path: Path) -> None:
    job = tiny_job(data, max_nan_skips=1)
    result = run(job, tmp_path, model_factory=fake_factory(nan_calls={5}))
    assert result.finished and result.nan_skips == 1 and result.iterations == 12
    assert all(torch.isfinite(v).all() for v in load_checkpoint(tmp_path / "checkpoint.pt")["model"].values())


def test_cli_diverged_exits_nonzero_with_one_line(data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(train, "default_model_factory", lambda plugins: fake_factory(nan_calls={2}))
    monkeypatch.setattr(train, "default_dataset_factory", FakeBallsDataset)
    cfg = tmp_path / "job.yaml"
    cfg.write_text(dump_yaml(tiny_job(data)))
    assert cli.main(["train", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "iteration 2" in err


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "patch, message",
    [
        ({"train": {"bogus_key": 1}}, "unknown key 'bogus_key'"),
        ({"train": {"batch_size": "x"}}, "train.batch_size: expected int"),
    ],
)
def test_bad_config_is_one_line_and_writes_nothing(data: Path, tmp_path: Path, capsys, patch, message) -> None:
    import yaml

    doc = yaml.safe_load(dump_yaml(tiny_job(data)))
    for section, values in patch.items():
        doc[section].update(values)
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    assert cli.main(["train", str(cfg), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "job.yaml" in err
    assert not out.exists()


def test_checkpoint_of_another_model_is_refused(data: Path, tmp_path: Path) -> None:
    run(tiny_job(data, max_iterations=4), tmp_path)
    before = snapshot_files(tmp_path)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: checkpoint is of model 'fake', expected 'fake2'"):
        run(tiny_job(data, model="fake2", max_iterations=4), tmp_path)
    other = dataclasses.replace(tiny_job(data), model_config=dataclasses.replace(tiny_job(data).model_config, z_what=4))
    with pytest.raises(CheckpointError, match="model_config"):
        run(other, tmp_path)
    assert snapshot_files(tmp_path) == before


def test_truncated_checkpoint_is_refused(data: Path, tmp_path: Path) -> None:
    job = tiny_job(data, max_iterations=4)
    run(job, tmp_path)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = snapshot_files(tmp_path)
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: cannot read checkpoint \(truncated or corrupt") as err:
        run(job, tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="truncated"):
        evaluate_checkpoint(
            path,
            str(data),
            __import__("rsqair_bench.config").config.EvalSplit(data="d"),
            __import__("rsqair_bench.config").config.EvalConfig(),
            device="cpu",
            model_factory=fake_factory(),
            dataset_factory=FakeBallsDataset,
        )
    assert snapshot_files(tmp_path) == before


def test_data_with_too_few_frames_is_refused(tmp_path: Path) -> None:
    short = write_fake_h5(tmp_path / "short.h5", frames=3)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"short\.h5: training/features has 3 frames, train\.curriculum_max needs 4"):
        run(tiny_job(short), out)
    assert not out.exists()


def test_with_the_real_loader(data: Path, tmp_path: Path) -> None:
    """The same protocol through rsqair_bench.data.loader.BallsDataset (R-NEM layout file)."""
    result = train_job(tiny_job(data, max_iterations=4), tmp_path / "ok", progress=False, model_factory=fake_factory())
    assert result.finished and result.best_validation_bound is not None
    short = write_fake_h5(tmp_path / "short.h5", frames=3)
    with pytest.raises(DataError, match="short.h5"):
        train_job(tiny_job(short), tmp_path / "out", progress=False, model_factory=fake_factory())
    assert not (tmp_path / "out").exists()


def test_checkpoint_from_before_a_new_model_config_field_resumes(data: Path, tmp_path: Path) -> None:
    """A switch added to ModelConfig after a checkpoint was written must not orphan it while the job
    leaves the switch at its default; a changed known field is still refused."""
    job = tiny_job(data, max_iterations=6, checkpoint_every=100)
    latest = tmp_path / "checkpoint.pt"

    def write_as_before_the_field(latest: Path) -> None:
        state = load_checkpoint(latest)
        state["model_config"].pop("disc_image_encoder")  # as written before the field existed
        state["model_config_hash"] = ckpt.config_hash(state["model_config"])
        ckpt.save_checkpoint(latest, state)

    assert run(job, tmp_path, max_steps=2).iterations == 2
    write_as_before_the_field(latest)
    assert run(job, tmp_path, max_steps=2).iterations == 4  # resumed at 2, two more steps
    write_as_before_the_field(latest)
    conv = dataclasses.replace(job, model_config=dataclasses.replace(job.model_config, disc_image_encoder="conv"))
    with pytest.raises(CheckpointError, match="model_config changed"):
        run(conv, tmp_path)
