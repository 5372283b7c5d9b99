"""`data generate` / `data inspect` through the CLI, every bad input, and ensure_dataset."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from rsqair_bench.cli import main
from rsqair_bench.config import DataSetConfig
from rsqair_bench.data.commands import default_splits, ensure_dataset
from rsqair_bench.errors import DataError


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "b678.h5"
    assert main(["data", "generate", "--balls", "6-8", "--sequences", "12", "--frames", "5", "--seed", "0",
                 "--out", str(path), "--no-progress"]) == 0
    return path


def test_generate_and_inspect(good: Path, capsys: pytest.CaptureFixture) -> None:
    rc, out, err = run(["data", "inspect", str(good)], capsys)
    assert rc == 0, err
    assert "[test] sequences 12, frames 5, 64x64, balls per sequence 6-8" in out
    assert "features    [5, 12, 64, 64, 1]" in out
    assert "checksum: ok" in out and "frames with a ball-ball collision" in out


def test_default_splits() -> None:
    assert default_splits("4", 100) == {"training": 80, "validation": 10, "test": 10}
    assert default_splits("4", 5) == {"training": 3, "validation": 1, "test": 1}
    assert default_splits("6-8", 7) == {"test": 7}


def test_explicit_splits(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out_path = tmp_path / "s.h5"
    rc, _, err = run(["data", "generate", "--balls", "4", "--splits", "training=3,test=2", "--frames", "4",
                      "--size", "32", "--out", str(out_path), "--no-progress"], capsys)
    assert rc == 0, err
    with h5py.File(out_path, "r") as f:
        assert sorted(f.keys()) == ["test", "training"] and f["test/features"].shape == (4, 2, 32, 32, 1)


def _bad_files(tmp_path: Path, good: Path) -> dict[str, Path]:
    not_h5 = tmp_path / "text.h5"
    not_h5.write_text("hello")
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(good.read_bytes()[:30_000])
    no_split = tmp_path / "nosplit.h5"
    with h5py.File(no_split, "w") as f:
        f.create_group("other")
    no_ds = tmp_path / "nods.h5"
    with h5py.File(no_ds, "w") as f:
        g = f.create_group("test")
        g.create_dataset("features", data=np.zeros((2, 1, 8, 8, 1), bool))
    wrong_shape = tmp_path / "shape.h5"
    wrong_dtype = tmp_path / "dtype.h5"
    for path, feats in ((wrong_shape, np.zeros((2, 1, 8, 8), bool)), (wrong_dtype, np.full((2, 1, 8, 8, 1), b"a", dtype="S1"))):
        with h5py.File(path, "w") as f:
            g = f.create_group("test")
            g.create_dataset("features", data=feats)
            g.create_dataset("groups", data=np.zeros((2, 1, 8, 8, 1), np.float32))
            g.create_dataset("collisions", data=np.zeros((2, 1, 8, 8, 1), np.float32))
    return {"not HDF5": not_h5, "truncated": trunc, "no split": no_split, "no dataset": no_ds,
            "wrong shape": wrong_shape, "wrong dtype": wrong_dtype}


def test_every_bad_input_is_one_line(tmp_path: Path, good: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "x.h5")
    gen = ["data", "generate", "--no-progress"]
    cases = {
        "unknown balls": (gen + ["--balls", "five", "--sequences", "3", "--out", out], "--balls"),
        "balls range": (gen + ["--balls", "8-6", "--sequences", "3", "--out", out], "--balls"),
        "zero sequences": (gen + ["--balls", "4", "--sequences", "0", "--out", out], "--sequences"),
        "negative frames": (gen + ["--balls", "4", "--sequences", "3", "--frames", "-2", "--out", out], "--frames"),
        "zero size": (gen + ["--balls", "4", "--sequences", "3", "--size", "0", "--out", out], "--size"),
        "non-integer": (gen + ["--balls", "4", "--sequences", "many", "--out", out], "--sequences"),
        "bad splits": (gen + ["--balls", "4", "--splits", "train=3", "--out", out], "'train'"),
        "zero split": (gen + ["--balls", "4", "--splits", "test=0", "--out", out], "--splits"),
        "missing dir": (gen + ["--balls", "4", "--sequences", "3", "--out", str(tmp_path / "no" / "x.h5")],
                        "does not exist"),
    }
    files = _bad_files(tmp_path, good)
    expect = {"not HDF5": "not an HDF5 file", "truncated": "truncated", "no split": "no split found",
              "no dataset": "test/groups missing", "wrong shape": "test/features has shape (2, 1, 8, 8)",
              "wrong dtype": "test/features has dtype |S1"}
    for name, path in files.items():
        cases[name] = (["data", "inspect", str(path)], expect[name])
    for name, (argv, needle) in cases.items():
        rc, _, err = run(argv, capsys)
        assert rc != 0, name
        assert "Traceback" not in err, name
        lines = err.strip().splitlines()
        assert len(lines) == 1, (name, err)
        assert needle in lines[0], (name, lines[0])
        if name not in ("unknown balls", "balls range", "zero sequences", "negative frames", "zero size",
                        "non-integer", "bad splits", "zero split"):
            assert str(tmp_path) in lines[0], (name, lines[0])  # names the file
    assert not (tmp_path / "x.h5").exists()


def test_ensure_dataset(tmp_path: Path) -> None:
    cfg = DataSetConfig(path=str(tmp_path / "sub" / "d.h5"), balls="4", frames=4, size=32, seed=1,
                        splits={"training": 3, "validation": 1, "test": 1})
    path = ensure_dataset(cfg, progress=False)
    assert path.exists()
    mtime = path.stat().st_mtime_ns
    assert ensure_dataset(cfg, progress=False) == path and path.stat().st_mtime_ns == mtime  # validated, not rewritten
    other = DataSetConfig(**{**cfg.__dict__, "seed": 2})
    with pytest.raises(DataError, match="seed=1, config expects 2"):
        ensure_dataset(other, progress=False)


def test_ensure_dataset_names_a_link_to_nothing_on_the_way(tmp_path: Path) -> None:
    """A checkout's `data` link to a folder that does not exist (another machine's disk) made mkdir fail
    with a bare "data: File exists"; now one line names the link and its missing target."""
    from rsqair_bench.errors import OutputError

    (tmp_path / "data").symlink_to(tmp_path / "gone")
    cfg = DataSetConfig(path=str(tmp_path / "data" / "learn" / "b4.h5"), balls="4", frames=5, size=64, seed=0,
                        splits={"test": 4})
    with pytest.raises(OutputError, match=r"data is a symbolic link to .*gone, which does not exist"):
        ensure_dataset(cfg, progress=False)
    assert not (tmp_path / "gone").exists()
