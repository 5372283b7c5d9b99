"""BallsDataset: crop, dtypes, R-NEM-layout files, multi-worker loading, validation errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rsqair_bench.data.h5 import generate_file
from rsqair_bench.data.loader import BallsDataset
from rsqair_bench.errors import DataError


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("loader") / "b4.h5"
    return generate_file(path, "4", {"training": 6, "validation": 2, "test": 3}, frames=6, size=64, seed=0,
                         progress=False)


def rnem_file(path: Path, features_dtype: type = bool, **overrides: object) -> Path:
    """A hand-built file in R-NEM's layout: bool/float features, float groups and collisions."""
    t, n = 5, 3
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 4, size=(t, n, 64, 64, 1)).astype(np.float32)
    data = {
        "features": (groups > 0).astype(features_dtype),
        "groups": groups,
        "collisions": (groups == 2).astype(np.float32),
    }
    data.update(overrides)
    with h5py.File(path, "w") as f:
        for split in ("training", "validation", "test"):
            g = f.create_group(split)
            for name, arr in data.items():
                if arr is not None:
                    g.create_dataset(name, data=arr)
    return path


def test_item_shapes_dtypes_and_central_crop(data_file: Path) -> None:
    ds = BallsDataset(data_file, "training")
    assert len(ds) == 6
    item = ds[3]
    assert item["features"].shape == (6, 1, 50, 50) and item["features"].dtype == torch.float32
    assert item["groups"].dtype == torch.int64 and item["collisions"].dtype == torch.bool
    with h5py.File(data_file, "r") as f:
        full = f["training/groups"][:, 3, :, :, 0]  # [T, 64, 64]
    np.testing.assert_array_equal(item["groups"][:, 0].numpy(), full[:, 7:57, 7:57])
    np.testing.assert_array_equal(item["features"].numpy(), (item["groups"] > 0).float().numpy())


def test_frames_and_crop_options(data_file: Path) -> None:
    ds = BallsDataset(data_file, "test", frames=4, crop=40)
    assert ds[0]["features"].shape == (4, 1, 40, 40)
    with pytest.raises(DataError, match="6 frames, expected at least 10"):
        BallsDataset(data_file, "test", frames=10)
    with pytest.raises(DataError, match="at least 70x70"):
        BallsDataset(data_file, "test", crop=70)


def test_dataloader_with_workers(data_file: Path) -> None:
    ds = BallsDataset(data_file, "training", frames=3)
    ds[0]  # open a handle in this process: it must not be pickled into workers
    loader = DataLoader(ds, batch_size=3, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["features"].shape == (3, 3, 1, 50, 50)
    torch.testing.assert_close(batches[0]["features"][1], ds[1]["features"])


@pytest.mark.parametrize("dtype", [bool, np.float32, np.uint8])
def test_rnem_layout_loads(tmp_path: Path, dtype: type) -> None:
    path = rnem_file(tmp_path / "rnem.h5", features_dtype=dtype)
    item = BallsDataset(path, "test")[1]
    assert item["features"].shape == (5, 1, 50, 50)
    with h5py.File(path, "r") as f:
        g = f["test/groups"][:, 1, 7:57, 7:57, 0]
    np.testing.assert_array_equal(item["groups"][:, 0].numpy(), g.astype(np.int64))
    np.testing.assert_array_equal(item["features"][:, 0].numpy(), (g > 0).astype(np.float32))
    np.testing.assert_array_equal(item["collisions"][:, 0].numpy(), g == 2)


def test_validation_errors(tmp_path: Path, data_file: Path) -> None:
    with pytest.raises(DataError, match="split 'nope' missing"):
        BallsDataset(data_file, "nope")
    with pytest.raises(DataError, match="test/collisions missing"):
        BallsDataset(rnem_file(tmp_path / "a.h5", collisions=None), "test")
    with pytest.raises(DataError, match=r"test/groups has shape \(5, 3, 64, 64\), expected \[T, N, H, W, 1\]"):
        BallsDataset(rnem_file(tmp_path / "b.h5", groups=np.zeros((5, 3, 64, 64), np.float32)), "test")
    with pytest.raises(DataError, match="test/features has dtype complex64"):
        BallsDataset(rnem_file(tmp_path / "c.h5", features=np.zeros((5, 3, 64, 64, 1), np.complex64)), "test")
    with pytest.raises(DataError, match=r"test/collisions has shape \(5, 2, 64, 64, 1\), expected \(5, 3, 64, 64, 1\)"):
        BallsDataset(rnem_file(tmp_path / "d.h5", collisions=np.zeros((5, 2, 64, 64, 1), np.float32)), "test")
    bad = tmp_path / "e.h5"
    bad.write_text("not hdf5")
    with pytest.raises(DataError, match="not an HDF5 file"):
        BallsDataset(bad, "test")
    trunc = tmp_path / "f.h5"
    trunc.write_bytes(data_file.read_bytes()[:20_000])
    with pytest.raises(DataError, match="truncated"):
        BallsDataset(trunc, "test")
    with pytest.raises(DataError, match="file not found"):
        BallsDataset(tmp_path / "none.h5", "test")


def test_read_features_returns_exactly_the_window_of_the_full_item(tmp_path):
    from rsqair_bench.data.h5 import generate_file
    from rsqair_bench.data.loader import BallsDataset

    path = generate_file(tmp_path / "w.h5", "4", {"training": 3}, frames=8, size=64, seed=1, progress=False)
    ds = BallsDataset(str(path), "training")
    full = ds[2]["features"]  # [8, 1, 50, 50]
    window = ds.read_features(2, start=3, length=4)
    assert window.shape == (4, 1, 50, 50) and window.dtype == torch.float32
    assert torch.equal(window, full[3:7])
    assert torch.equal(ds.read_features(2), full)
