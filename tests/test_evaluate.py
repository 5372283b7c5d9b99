"""Evaluation on the fake model: every metrics.json field, definitions wired correctly, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rsqair_bench import cli
from rsqair_bench.config import EvalConfig, EvalSplit
from rsqair_bench.core.seeding import derive_seed
from rsqair_bench.errors import DataError
from rsqair_bench.evaluation.evaluate import evaluate_checkpoint, job_info_from_checkpoint
from rsqair_bench.evaluation.scores import collision_mask, data_log_likelihood, visible_objects
from rsqair_bench.metrics import SPLIT_KEYS, TOP_KEYS, TRAIN_KEYS, validate_metrics, write_metrics
from rsqair_bench.training import loop as train
from rsqair_bench.training.loop import train_job
from tests.fakes import FakeBallsDataset, fake_factory, tiny_job, write_fake_h5


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    data = write_fake_h5(root / "balls.h5", sizes={"training": 4, "validation": 2, "test": 7})
    out = root / "job"
    train_job(tiny_job(data, max_iterations=4), out, progress=False, model_factory=fake_factory(),
              dataset_factory=FakeBallsDataset)
    return data, out / "best.pt"


def evaluate(data: Path, ckpt: Path, seed: int = 0, **split) -> dict:
    return evaluate_checkpoint(ckpt, str(data), EvalSplit(data="balls", **{"frames": 6, **split}),
                               EvalConfig(samples=3, particles=2, batch_size=16), device="cpu", seed=seed,
                               model_factory=fake_factory(), dataset_factory=FakeBallsDataset)


def test_metrics_json_has_every_schema_field(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, ckpt = trained
    entry = evaluate(data, ckpt, max_objects=7)
    info = job_info_from_checkpoint(ckpt, suite="quick", device="cpu")
    written = write_metrics(tmp_path / "metrics.json", info, {"balls/test": entry})
    loaded = json.loads((tmp_path / "metrics.json").read_text())
    assert loaded == written
    validate_metrics(loaded)
    assert set(TOP_KEYS) <= set(loaded) and set(TRAIN_KEYS) <= set(loaded["train"])
    split = loaded["splits"]["balls/test"]
    assert set(SPLIT_KEYS) <= set(split)
    assert (split["max_objects"], split["frames"], split["sequences"], split["samples"]) == (7, 6, 7, 3)
    assert loaded["checkpoint_iteration"] == 4 and loaded["suite"] == "quick" and loaded["model"] == "fake"
    assert loaded["parameters"]["total"] > loaded["parameters"]["relation"] > 0
    assert loaded["train"]["iterations"] == 4 and loaded["config_hash"]
    for metric in ("data_ll", "relational_ll"):
        per = split[metric]["per_sample"]
        assert len(per) == 3
        assert split[metric]["mean"] == pytest.approx(sum(per) / 3)
    assert len(set(split["data_ll"]["per_sample"])) == 3  # samples differ
    assert 0.0 <= split["count_accuracy"] <= 1.0 and split["eval_sequences_per_s"] > 0
    assert split["peak_memory_mb"] > 0 and split["iwae_bound"]["mean"] < 0


def test_values_follow_the_definitions(trained: tuple[Path, Path]) -> None:
    data, ckpt = trained
    entry = evaluate(data, ckpt, sequences=5)
    ds = FakeBallsDataset(str(data), "test", 6)
    items = [ds[i] for i in range(5)]
    x = torch.stack([it["features"] for it in items])  # [5, 6, 1, 50, 50]
    groups = torch.stack([it["groups"] for it in items])
    coll = torch.stack([it["collisions"] for it in items])
    assert entry["sequences_with_collision"] == int(collision_mask(groups[:, 5], coll[:, 5]).flatten(1).any(1).sum())
    model = fake_factory()("fake", __import__("rsqair_bench.config").config.ModelConfig(image_size=50, z_what=3))
    from rsqair_bench.checkpoint import load_checkpoint

    model.load_state_dict(load_checkpoint(ckpt)["model"])
    model.eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(derive_seed(0, 10))  # the samples' stream
        # evaluate batches the 3 samples: row b*3 + s is sample s of sequence b
        frames = model.generate(x.repeat_interleave(3, 0), n_observed=5, generator=g).frames[0::3, 5]
    expected = float(data_log_likelihood(x[:, 5], frames, model.pixel_log_likelihood).double().mean())
    assert entry["data_ll"]["per_sample"][0] == pytest.approx(expected, rel=1e-6)
    empty = float(data_log_likelihood(x[:, 5], torch.zeros_like(x[:, 5]), model.pixel_log_likelihood).double().mean())
    assert entry["empty_frame_data_ll"] == pytest.approx(empty, rel=1e-9)
    # fake model predicts 2 objects everywhere: accuracy = share of frames with exactly 2 visible balls
    assert entry["count_accuracy"] == pytest.approx(float((visible_objects(groups) == 2).float().mean()))


def test_evaluation_is_deterministic_in_the_seed(trained: tuple[Path, Path]) -> None:
    data, ckpt = trained
    a, b, c = evaluate(data, ckpt), evaluate(data, ckpt), evaluate(data, ckpt, seed=1)
    assert a["data_ll"] == b["data_ll"] and a["iwae_bound"] == b["iwae_bound"]
    assert a["data_ll"]["per_sample"] != c["data_ll"]["per_sample"]


def test_too_many_frames_is_a_data_error(trained: tuple[Path, Path]) -> None:
    data, ckpt = trained
    with pytest.raises(DataError, match="12 frames, 20 requested"):
        evaluate(data, ckpt, frames=20)


def test_write_metrics_rejects_missing_fields(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, ckpt = trained
    info = job_info_from_checkpoint(ckpt, device="cpu")
    entry = evaluate(data, ckpt)
    del entry["relational_ll"]
    with pytest.raises(ValueError, match="relational_ll"):
        write_metrics(tmp_path / "metrics.json", info, {"balls/test": entry})
    assert not (tmp_path / "metrics.json").exists()


def test_eval_cli_writes_metrics(trained: tuple[Path, Path], tmp_path: Path, monkeypatch, capsys) -> None:
    data, ckpt = trained
    monkeypatch.setattr(train, "default_model_factory", lambda plugins: fake_factory())
    monkeypatch.setattr(train, "default_dataset_factory", FakeBallsDataset)
    import rsqair_bench.evaluation.evaluate as ev

    monkeypatch.setattr(ev, "default_model_factory", lambda plugins: fake_factory())
    monkeypatch.setattr(ev, "default_dataset_factory", FakeBallsDataset)
    out = tmp_path / "metrics.json"
    argv = ["eval", str(ckpt), "--data", str(data), "--split", "test", "--samples", "2", "--frames", "5",
            "--max-objects", "6", "--device", "cpu", "--out", str(out)]
    assert cli.main(argv) == 0
    metrics = json.loads(out.read_text())
    validate_metrics(metrics)
    assert metrics["splits"]["balls/test"]["max_objects"] == 6
    assert json.loads(capsys.readouterr().out)["samples"] == 2


def test_rollout_for_figure_3_is_saved(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, ckpt = trained
    path = tmp_path / "rollout.npz"
    evaluate_checkpoint(ckpt, str(data), EvalSplit(data="balls", frames=6, max_objects=3),
                        EvalConfig(samples=2, particles=2, batch_size=4), device="cpu",
                        model_factory=fake_factory(), dataset_factory=FakeBallsDataset, rollout_path=path)
    import numpy as np

    with np.load(path) as z:
        assert z["frames"].shape == z["truth"].shape == (6, 50, 50)
        assert z["boxes"].shape == (6, 3, 4) and z["pres"].shape == z["ids"].shape == (6, 3)
        assert int(z["n_observed"]) == 5
        assert z["truth"][5].sum() > 0  # the true last frame is kept for comparison, not the blanked input
