"""Reliability round 2 (issue 24): one test per case, named `test_caseNN_...` after the issue's numbering;
the issue's unnumbered items ("partial answers") are `test_partial_...`.

Cases 3, 4 (stale evaluations, data identity of finished jobs) and 11 (compile without a C++ compiler)
are tested where they are fixed. Each test here fails on the tree before its fix: it asserts the
refusal, the message or the file that the fix introduced, never only a non-zero exit.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
import yaml

from rsqair_bench import checkpoint as ckpt
from rsqair_bench import cli
from rsqair_bench.config import dump_yaml
from rsqair_bench.core.job_status import STATUS_FILE, read_status
from rsqair_bench.data.loader import BallsDataset
from rsqair_bench.errors import DataError, OutputError
from rsqair_bench.evaluation import evaluate as ev
from rsqair_bench.metrics import collect_metrics, write_metrics
from rsqair_bench.report.write import write_report
from rsqair_bench.runner.live_progress import LiveProgress, TrackedJob
from rsqair_bench.training import loop as train
from rsqair_bench.training.state import BEST
from tests.cli_checks import assert_one_line, quick_suite_doc, run_cli
from tests.fakes import FakeBallsDataset, fake_factory, tiny_job

ROOT = Path(__file__).resolve().parents[1]
HANG_S = 10.0  # a read that has not returned by then is hung (the FIFO cases)


# ----------------------------------------------------------------------------- helpers
_main, _one_line = run_cli, assert_one_line  # short names for the many calls below


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, fake_h5: Path) -> Path:
    """best.pt of a finished fake job (well under a second of training)."""
    out = tmp_path_factory.mktemp("job")
    train.train_job(tiny_job(fake_h5, max_iterations=4), out, progress=False, model_factory=fake_factory(),
                    dataset_factory=FakeBallsDataset)
    return out / BEST


@pytest.fixture
def fake_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    """`eval` and `train` on the command line build the fake model and read data with the fake loader."""
    for module in (ev, train):
        monkeypatch.setattr(module, "default_model_factory", lambda plugins: fake_factory())
        monkeypatch.setattr(module, "default_dataset_factory", FakeBallsDataset)


def _fake_checkpoint(path: Path) -> Path:
    """A readable checkpoint with what evaluation reads before building the model."""
    torch.save({"format": ckpt.FORMAT_VERSION, "model": {}, "model_name": "sqair+evil", "iteration": 1,
                "model_config": {"image_size": 50, "max_objects": 4, "z_what": 3}}, path)
    return path


def _quick_suite(tmp_path: Path, **changes: Any) -> Path:
    """quick_suite_doc written out as tmp_path/suite.yaml."""
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(quick_suite_doc(tmp_path, **changes), sort_keys=False))
    return path


def _split_entry(base: float, frames: int = 10, samples: int = 3, data: str = "data/balls4.h5") -> dict[str, Any]:
    per = [base + 0.5 * s for s in range(samples)]
    return {"data": data, "split": "test", "max_objects": 4, "frames": frames, "sequences": 20, "samples": samples,
            "data_ll": {"mean": float(np.mean(per)), "std": float(np.std(per)), "per_sample": per},
            "relational_ll": {"mean": 1.0, "std": 0.0, "per_sample": [1.0] * samples},
            "sequences_with_collision": 3, "iwae_bound": {"mean": -base, "std": 1.0}, "count_accuracy": 0.75,
            "eval_sequences_per_s": 40.0, "peak_memory_mb": 12.0, "references": None}


def _job(root: Path, model: str, seed: int, paper_name: str | None = None, params: int = 1000, suite: str = "s",
         directory: str | None = None, **split: Any) -> Path:
    """A job directory (named after the model unless `directory`) with a valid metrics.json (written by
    write_metrics); `split` changes balls4/test."""
    d = root / (directory or model) / f"seed{seed}"
    d.mkdir(parents=True)
    info = {"model": model, "paper_name": paper_name or model, "seed": seed, "suite": suite, "config_hash": "h",
            "checkpoint_iteration": 10, "parameters": {"total": params, "relation": 10}, "device": "cpu",
            "torch_version": "2.13.0",
            "train": {"iterations": 10, "seconds": 1.0, "sequences_per_s": 20.0, "peak_memory_mb": 50.0,
                      "best_validation_bound": -300.0}}
    write_metrics(d / "metrics.json", info, {"balls4/test": {**_split_entry(400.0 + seed), **split}})
    return d


def _edit_metrics(job_dir: Path, text: str | bytes | None = None, **top: Any) -> Path:
    """Replace a job's metrics.json with raw `text`, or set top-level keys of the parsed file."""
    path = job_dir / "metrics.json"
    if text is None:
        doc = json.loads(path.read_text())
        doc.update(top)
        text = json.dumps(doc)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row, split on unescaped pipes only (as a renderer does)."""
    cells, cell, i = [], "", 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            cell += line[i:i + 2]
            i += 2
            continue
        if line[i] == "|":
            cells.append(cell)
            cell = ""
        else:
            cell += line[i]
        i += 1
    return [c.strip() for c in cells[1:]]


def _returns_within(fn: Any, seconds: float = HANG_S) -> tuple[bool, Any]:
    """Run fn in a daemon thread; (returned in time, its result or the exception it raised)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            box["value"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), box.get("value")


def _unblock(fifo: Path) -> None:
    """Let a reader blocked on `fifo` (the tree before the fix) go: open the write end once and close it."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader waiting: nothing to release
        pass


# ----------------------------------------------------------------------------- 1-2. never write over an input
def test_case01_eval_out_onto_its_checkpoint_is_refused(trained: Path, fake_h5: Path, tmp_path: Path, capsys,
                                                         fake_eval: None) -> None:
    ck = tmp_path / "best.pt"
    shutil.copy(trained, ck)
    before = ck.read_bytes()
    code, err = _main(["eval", str(ck), "--data", str(fake_h5), "--frames", "6", "--samples", "1", "--particles", "1",
                       "--device", "cpu", "--out", str(ck)], capsys)
    _one_line(code, err, str(ck), "--out is the same file as the checkpoint")
    assert ck.read_bytes() == before


def test_case01_existing_eval_out_needs_force(trained: Path, fake_h5: Path, tmp_path: Path, capsys,
                                              fake_eval: None) -> None:
    out = tmp_path / "m.json"
    out.write_text("precious")
    argv = ["eval", str(trained), "--data", str(fake_h5), "--frames", "6", "--samples", "1", "--particles", "1",
            "--device", "cpu", "--out", str(out)]
    code, err = _main(argv, capsys)
    _one_line(code, err, str(out), "already exists", "--force")
    assert out.read_text() == "precious"
    assert cli.main([*argv, "--force"]) == 0 and json.loads(out.read_text())["schema_version"] == 1


def test_case01_report_rollout_onto_its_input_is_refused(tmp_path: Path, capsys) -> None:
    npz = tmp_path / "r.png"  # an .npz by content; `--out r` would write r.png over it
    np.savez(npz, frames=np.zeros((3, 8, 8)), boxes=np.zeros((3, 1, 4)), pres=np.ones((3, 1)),
             n_observed=np.array(2))
    shutil.move(str(npz) + ".npz", npz)
    before = npz.read_bytes()
    code, err = _main(["report", "--rollout", str(npz), "--out", str(tmp_path / "r")], capsys)
    _one_line(code, err, "same file as --rollout")
    assert npz.read_bytes() == before


def test_case01_train_out_over_its_train_data_is_refused(fake_h5: Path, tmp_path: Path, capsys,
                                                         fake_eval: None) -> None:
    out = tmp_path / "J"
    out.mkdir()
    data = out / BEST  # the training data, at the path training writes its best checkpoint to
    shutil.copy(fake_h5, data)
    before = data.read_bytes()
    cfg = tmp_path / "job.yaml"
    cfg.write_text(dump_yaml(tiny_job(data, max_iterations=4)))
    code, err = _main(["train", str(cfg), "--out", str(out), "--no-progress"], capsys)
    _one_line(code, err, "same file as train_data")
    assert data.read_bytes() == before


def test_case02_eval_rollout_onto_the_data_file_is_refused(trained: Path, fake_h5: Path, tmp_path: Path, capsys,
                                                           fake_eval: None) -> None:
    data = tmp_path / "F.h5"
    shutil.copy(fake_h5, data)
    before = data.read_bytes()
    code, err = _main(["eval", str(trained), "--data", str(data), "--frames", "6", "--samples", "1",
                       "--particles", "1", "--device", "cpu", "--rollout", str(data)], capsys)
    _one_line(code, err, "--rollout is the same file as --data")
    assert data.read_bytes() == before and h5py.is_hdf5(data)


# ----------------------------------------------------------------------------- 5. seeds that wrap
def test_case05_seeds_at_or_above_2_63_are_refused(tmp_path: Path, fake_h5: Path, capsys) -> None:
    code, err = _main(["validate", str(_quick_suite(tmp_path, seeds=[0, 2**70]))], capsys)
    _one_line(code, err, "seeds[1]", "below 2**63")
    ck = _fake_checkpoint(tmp_path / "ck.pt")
    for seed in (str(2**64), "-1"):
        code, err = _main(["eval", str(ck), "--data", str(fake_h5), "--seed", seed], capsys)
        _one_line(code, err, "--seed", seed)
    job = tiny_job(fake_h5)
    job.seed = 2**70
    cfg = tmp_path / "job.yaml"
    cfg.write_text(dump_yaml(job))
    code, err = _main(["train", str(cfg), "--out", str(tmp_path / "J"), "--no-progress"], capsys)
    _one_line(code, err, "seed", "below 2**63")
    assert not (tmp_path / "J").exists()


# ----------------------------------------------------------------------------- 6. compare like with like
def test_case06_compare_marks_splits_evaluated_differently(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "A", tmp_path / "B"
    for seed in range(3):
        _job(a, "sqair", seed)
        _job(b, "sqair", seed, frames=6)  # same split name, other frames
        _job(a, "sqair+in", seed, params=1000)
        _job(b, "sqair+in", seed, params=5000)  # another model size
    assert cli.main(["report", str(a), str(b), "--compare", "--out", str(tmp_path / "cmp")]) == 0
    text = (tmp_path / "cmp" / "compare.md").read_text()
    rows = [_cells(line) for line in text.splitlines() if line.startswith("| sqair ")]
    assert rows and all("not comparable" in row for row in rows), text
    assert all(any("frames 10 vs 6" in c for c in row) for row in rows if "balls4/test" in row), text
    speed = next(_cells(line) for line in text.split("## Throughput")[1].splitlines() if line.startswith("| sqair+in"))
    assert speed.count("not comparable") == 2 and any("parameters 1000 vs 5000" in c for c in speed), text


# ----------------------------------------------------------------------------- 7. float data out of range
def test_case07_float_features_outside_0_1_are_refused_on_open(fake_h5: Path, tmp_path: Path) -> None:
    path = tmp_path / "scaled.h5"
    shutil.copy(fake_h5, path)
    with h5py.File(path, "a") as f:
        f["test/features"][...] = f["test/features"][...] * 1e6
    with pytest.raises(DataError, match=r"test/features .*\[0, 1e\+06\].*expected pixel intensities in \[0, 1\]"):
        BallsDataset(path, "test", frames=6)
    BallsDataset(fake_h5, "test", frames=6)  # 0/1 floats open as before


# ----------------------------------------------------------------------------- 8-9. FIFOs do not hang
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_case08_status_json_fifo_does_not_hang_the_display(tmp_path: Path) -> None:
    job = tmp_path / "sqair" / "seed0"
    job.mkdir(parents=True)
    os.mkfifo(job / STATUS_FILE)
    display = LiveProgress("quick", [TrackedJob("sqair/seed0", job, 10)], total=1, already_done=0,
                           out=io.StringIO(), live=True)
    try:
        done, _ = _returns_within(lambda: display.start().stop())
        assert done, "the first redraw blocked on a status.json FIFO"
        assert read_status(job / STATUS_FILE) is None
    finally:
        _unblock(job / STATUS_FILE)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_case09_metrics_json_fifo_is_refused_not_read(tmp_path: Path) -> None:
    _job(tmp_path, "sqair", 0)
    fifo = tmp_path / "sqair" / "seed1" / "metrics.json"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    try:
        done, result = _returns_within(lambda: collect_metrics(tmp_path))
        assert done, "report blocked on a metrics.json FIFO"
        assert isinstance(result, DataError) and "not a regular file" in str(result), result
    finally:
        _unblock(fifo)


# ----------------------------------------------------------------------------- 10. bad status.json
@pytest.mark.parametrize("status", [
    {"iteration": "5"},
    {"iteration": 10**400},
    {"bound": 10**400},
    "[" * 100_000,
], ids=["string", "400-digit-int", "400-digit-bound", "deep"])
def test_case10_status_of_wrong_types_is_no_status(tmp_path: Path, status: Any) -> None:
    job = tmp_path / "seed0"
    job.mkdir()
    fields = dict(model="m", seed=0, phase="training", iteration=3, max_iterations=10, bound=-3.0, it_per_s=2.0,
                  updated=time.time())
    text = status if isinstance(status, str) else json.dumps({**fields, **status})
    (job / STATUS_FILE).write_text(text)
    assert read_status(job / STATUS_FILE) is None
    out = io.StringIO()
    display = LiveProgress("quick", [TrackedJob("m/seed0", job, 10)], total=1, already_done=0, out=out, live=True)
    display.start().stop()  # the first redraw runs on the main thread: it must not raise
    assert "0/1 jobs finished, 0 running" in out.getvalue()


def test_case10_a_failing_display_never_ends_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rsqair_bench.runner.live_progress as lp

    def broken(path: Path) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(lp, "read_status", broken)
    out = io.StringIO()
    display = LiveProgress("quick", [TrackedJob("m/seed0", tmp_path, 10)], total=1, already_done=0, out=out,
                           live=True)
    display.start()
    display.refresh()
    display.finished("m/seed0", "[1/1] m/seed0: done")
    display.stop()
    assert "[1/1] m/seed0: done" in out.getvalue() and isinstance(display.last_error, RuntimeError)


# ----------------------------------------------------------------------------- 12-14. metrics.json schema
@pytest.mark.parametrize("bad, needle", [
    (b"\xff\xfe{}", "not UTF-8"),
    ({"splits": [1, 2]}, "splits: expected a mapping"),
    ({"seed": "zero"}, "seed: expected an integer"),
    ({"schema_version": 2}, "schema_version 2 unknown, expected 1"),
], ids=["case12-non-utf8", "case13-splits-list", "case14-seed-string", "schema-version"])
def test_case12_to_14_compare_refuses_a_bad_metrics_json_in_one_line(tmp_path: Path, capsys, bad: Any,
                                                                      needle: str) -> None:
    a, b = tmp_path / "A", tmp_path / "B"
    _job(a, "sqair", 0)
    path = _edit_metrics(_job(b, "sqair", 0), bad) if isinstance(bad, bytes) else _edit_metrics(_job(b, "sqair", 0), **bad)
    code, err = _main(["report", str(a), str(b), "--compare"], capsys)
    _one_line(code, err, str(path), needle)


def test_case12_metrics_json_gets_a_schema_version_and_old_files_still_load(tmp_path: Path) -> None:
    d = _job(tmp_path, "sqair", 0)
    written = json.loads((d / "metrics.json").read_text())
    assert written["schema_version"] == 1 and list(written)[0] == "schema_version"
    _edit_metrics(d, json.dumps({k: v for k, v in written.items() if k != "schema_version"}))  # older code's file
    (run,) = collect_metrics(tmp_path)
    assert run["model"] == "sqair" and "schema_version" not in run


# ----------------------------------------------------------------------------- partial: validate knows more
@pytest.mark.parametrize("changes, needles", [
    ({"data.balls4.size": 32}, ["data.balls4.size", "smaller than the 50x50 crop"]),
    ({"train.batch_size": 4001}, ["train.batch_size", "4000 sequences"]),
    ({"eval.samples": 10**9}, ["eval.splits.balls4/test", "lower eval.samples"]),
    ({"train.lr_decay_at": [0.5, 0.5]}, ["train.lr_decay_at", "each fraction once"]),
    ({"results": "/"}, ["results", "the filesystem root"]),
    ({"results": "/proc"}, ["results", "/proc"]),
], ids=["size-below-crop", "batch-above-training", "samples-1e9", "lr-decay-twice", "results-root", "results-proc"])
def test_partial_validate_refuses_what_fails_at_run_time(tmp_path: Path, capsys, changes: dict[str, Any],
                                                          needles: list[str]) -> None:
    path = _quick_suite(tmp_path, **changes)
    code, err = _main(["validate", str(path)], capsys)
    _one_line(code, err, str(path), *needles)


def test_partial_validate_refuses_one_path_for_two_data_sets(tmp_path: Path, capsys) -> None:
    doc = yaml.safe_load(_quick_suite(tmp_path).read_text())
    doc["data"]["copy"] = {**doc["data"]["balls4"], "seed": 7}  # same path, another seed
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, err = _main(["validate", str(path)], capsys)
    _one_line(code, err, "data.copy.path", "also data.balls4.path", "seed differs")


def test_partial_validate_says_a_plugin_directory_is_a_directory(tmp_path: Path, capsys) -> None:
    (tmp_path / "plugs").mkdir()
    code, err = _main(["validate", str(_quick_suite(tmp_path, plugins=[str(tmp_path / "plugs")]))], capsys)
    _one_line(code, err, "plugins", "is a directory")
    assert "no such file" not in err


# ----------------------------------------------------------------------------- partial: compare
def test_partial_compare_names_failed_jobs_and_takes_the_flag_between(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "A", tmp_path / "B"
    for seed in range(2):
        _job(a, "sqair", seed)
        _job(a, "sqair+in", seed)
        _job(b, "sqair", seed)
    failed = b / "sqair+in" / "seed0"
    failed.mkdir(parents=True)
    (failed / "error.txt").write_text("Traceback ...\nValueError: boom\n")
    assert cli.main(["report", str(a), "--compare", str(b), "--out", str(tmp_path / "cmp")]) == 0  # flag between
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert "failed in B" in text and "sqair+in/seed0: ValueError: boom" in text
    assert "only in A" not in text
    all_failed = tmp_path / "C" / "sqair" / "seed0"
    all_failed.mkdir(parents=True)
    (all_failed / "error.txt").write_text("RuntimeError: out of memory\n")
    code, err = _main(["report", "--compare", str(a), str(tmp_path / "C")], capsys)
    _one_line(code, err, "all 1 jobs failed", "RuntimeError: out of memory")
    assert "run the suite first" not in err


# ----------------------------------------------------------------------------- partial: names in outputs
def test_partial_names_are_escaped_and_long_names_make_short_file_names(tmp_path: Path) -> None:
    evil = "A|B <b>x</b> `c`"
    long_model = "sqair+" + "n" * 240  # a job directory is named after its model: at most 255 bytes
    for seed in range(2):
        _job(tmp_path, "sqair", seed, paper_name=evil)
        d = _job(tmp_path, long_model, seed)
        np.savez(d / "rollout_balls4_test.npz", frames=np.zeros((3, 8, 8)), boxes=np.zeros((3, 1, 4)),
                 pres=np.ones((3, 1)), ids=np.zeros((3, 1)), truth=np.zeros((3, 8, 8)), n_observed=np.array(2))
    written = write_report(tmp_path)
    report = tmp_path / "report"
    table = (report / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| model"))
    row = next(line for line in table.splitlines() if "A\\|B" in line)
    assert len(_cells(row)) == len(_cells(header)), row  # the name's pipe does not open a new cell
    assert "<b>" not in table and "&lt;b&gt;" in table and "\\`c\\`" in table
    tex = (report / "table.tex").read_text()
    assert "A\\textbar{}B \\textless{}b\\textgreater{}" in tex
    gifs = [p for p in written if p.suffix == ".gif"]
    assert len(gifs) == 1 and len(gifs[0].name) < 120, gifs


# ----------------------------------------------------------------------------- partial: numbers
@pytest.mark.parametrize("per_sample, needle", [
    ([float("inf"), 1.0, 2.0], "per_sample[0]: expected a finite number"),
    ("abc", "per_sample: expected a list of numbers"),
], ids=["inf", "string"])
def test_partial_bad_per_sample_is_refused(tmp_path: Path, capsys, per_sample: Any, needle: str) -> None:
    d = _job(tmp_path, "sqair", 0)
    doc = json.loads((d / "metrics.json").read_text())
    doc["splits"]["balls4/test"]["data_ll"]["per_sample"] = per_sample
    _edit_metrics(d, json.dumps(doc))  # json writes inf as `Infinity`, which Python's reader accepts
    code, err = _main(["report", str(tmp_path)], capsys)
    _one_line(code, err, "splits.balls4/test.data_ll." + needle.split(":")[0], needle.split(": ")[1])


def test_partial_huge_scores_print_in_scientific_notation(tmp_path: Path) -> None:
    d = _job(tmp_path, "sqair", 0)
    doc = json.loads((d / "metrics.json").read_text())
    doc["splits"]["balls4/test"]["data_ll"] = {"mean": 1e308, "std": 0.0, "per_sample": [1e308] * 3}
    _edit_metrics(d, json.dumps(doc))
    write_report(tmp_path)
    table = (tmp_path / "report" / "table.md").read_text()
    assert "1.000e+308" in table and max(len(c) for line in table.splitlines() for c in _cells(line)) < 40


# ----------------------------------------------------------------------------- partial: kill -9 leftovers
def test_partial_report_removes_temp_files_of_a_killed_report(tmp_path: Path) -> None:
    _job(tmp_path, "sqair", 0)
    figures = tmp_path / "report" / "figures"
    figures.mkdir(parents=True)
    left = [tmp_path / "report" / ".table.md.0123abcd.tmp", figures / ".fig4_ll.png.89abcdef.tmp",
            figures / ".rollout_sqair_balls4_test.deadbeef.tmp.gif"]
    for path in left:
        path.write_text("half")
    keep = tmp_path / "report" / "notes.tmp"  # not a name our writer makes
    keep.write_text("mine")
    write_report(tmp_path)
    assert not [p for p in left if p.exists()] and keep.exists()


# ----------------------------------------------------------------------------- partial: full disk in a checkpoint
def test_partial_full_disk_checkpoint_says_disk_full_and_no_previous(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def full(obj: Any, fh: Any) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 4096, 4096))
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(OutputError) as info:
        ckpt.save_checkpoint(path, {"model": {"w": torch.zeros(2**18)}, "iteration": 1})  # 1 MiB of weights
    message = str(info.value)
    assert "disk full (4096 bytes free" in message and "1048576 needed" in message, message
    assert "there was no previous one" in message and "previous one is kept" not in message
    assert "enforce fail" not in message and not path.exists()


# ----------------------------------------------------------------------------- partial: a plugin that exits
def test_partial_plugin_calling_os_exit_0_makes_eval_fail(tmp_path: Path, fake_h5: Path) -> None:
    plugin = tmp_path / "exits.py"
    plugin.write_text("import os\nos._exit(0)\n")
    ck = _fake_checkpoint(tmp_path / "ck.pt")
    proc = subprocess.run([sys.executable, "-m", "rsqair_bench", "eval", str(ck), "--data", str(fake_h5),
                           "--plugin", str(plugin)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert "os._exit(0)" in proc.stderr and "`eval`" in proc.stderr


def test_partial_sys_exit_0_inside_a_command_is_an_error() -> None:
    from rsqair_bench.core.exit_guard import EndedEarly, must_finish

    with pytest.raises(EndedEarly, match=r"`eval` was ended by sys.exit\(0\)"):
        with must_finish("eval"):
            sys.exit(0)
    with pytest.raises(SystemExit) as info:  # another status (e.g. SIGTERM's 143) passes unchanged
        with must_finish("data"):
            raise SystemExit(143)
    assert info.value.code == 143 and os._exit.__name__ == "_exit"

