"""torch Dataset over one split of a bouncing-balls HDF5 file (ours or R-NEM's).

Why lazy handles: h5py file handles cannot be pickled into DataLoader workers, and sharing one
across forked processes is unsafe; each process opens its own read-only handle on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rsqair_bench.data.h5 import open_h5, validate_split
from rsqair_bench.errors import DataError

RANGE_CHECK_SEQUENCES = 8  # sequences read when a file is opened, spread over the split (first and last included)
RANGE_SLACK = 1e-6  # float features may round a hair outside [0, 1]


def check_feature_range(f: Any, path: str | Path, split: str) -> None:
    """Refuse float features outside [0, 1] (or not finite), read from a few sequences when the file is opened.

    Why: the model's likelihood scores pixel intensities in [0, 1]. A file scaled by 1e6 was scored
    without a word (data LL -7.6e14 beside a "perfect" reference of 712). Bool and integer features
    are read as 0/1, so only floats are checked; a sample of sequences keeps opening a 50,000-sequence
    file cheap, and catches a file scaled or stored in another unit as a whole.
    """
    ds = f[split]["features"]
    if ds.dtype.kind != "f":
        return
    n = int(ds.shape[1])
    for index in sorted({int(i) for i in np.linspace(0, n - 1, min(n, RANGE_CHECK_SEQUENCES))}):
        values = np.asarray(ds[:, index])
        low, high = float(np.min(values)), float(np.max(values))
        if not (np.isfinite(low) and np.isfinite(high)) or low < -RANGE_SLACK or high > 1 + RANGE_SLACK:
            raise DataError(f"{path}: {split}/features sequence {index} has values in [{low:g}, {high:g}], "
                            "expected pixel intensities in [0, 1] (a float file scaled otherwise is not scored)")


class BallsDataset(Dataset):
    """Items: {"features": float32 [T, 1, c, c], "groups": int64 [T, 1, c, c], "collisions": bool [T, 1, c, c]}.

    `frames` takes the first `frames` frames (all when None); `crop` keeps the central c x c
    pixels, offset (size - crop) // 2 (64 -> 50: rows/cols 7..56). Float features are kept as
    stored (R-NEM's are 0/1 floats); bool/integer features become 1.0 where non-zero.
    """

    def __init__(self, path: str | Path, split: str, frames: int | None = None, crop: int = 50) -> None:
        self.path = Path(path)
        self.split = split
        if frames is not None and frames < 1:
            raise DataError(f"{self.path}: {split}: frames found {frames}, expected a positive integer or None")
        if crop < 1:
            raise DataError(f"{self.path}: {split}: crop found {crop}, expected a positive integer")
        with open_h5(self.path) as f:
            info = validate_split(f, self.path, split, min_frames=frames, min_size=crop)
            check_feature_range(f, self.path, split)
        self.info = info
        self.frames = frames if frames is not None else info.frames
        self.crop = crop
        self.top = (info.height - crop) // 2
        self.left = (info.width - crop) // 2
        self._file: Any = None

    def __len__(self) -> int:
        return self.info.sequences

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None  # each worker opens its own handle
        return state

    def _read(self, name: str, index: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """[L, c, c] crop of frames start..start+L of one sequence of dataset `name` (L = all frames by default)."""
        if self._file is None:
            self._file = open_h5(self.path)
        ds = self._file[self.split][name]
        stop = self.frames if length is None else min(start + length, self.frames)
        c = self.crop
        try:
            block = ds[start:stop, index, self.top : self.top + c, self.left : self.left + c, 0]
        except OSError as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(
                f"{self.path}: {self.split}/{name} sequence {index} cannot be read ({reason}); "
                "expected a complete file (truncated or corrupt?)"
            ) from None
        return block

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} sequences")
        groups = self._read("groups", index)
        colls = self._read("collisions", index)
        return {
            "features": self.read_features(index),  # [T, 1, c, c]
            "groups": torch.from_numpy(np.rint(groups).astype(np.int64) if groups.dtype.kind == "f"
                                       else groups.astype(np.int64)).unsqueeze(1),  # [T, 1, c, c]
            "collisions": torch.from_numpy(colls > 0.5 if colls.dtype.kind == "f"
                                           else colls != 0).unsqueeze(1),  # [T, 1, c, c]
        }

    def read_features(self, index: int, start: int = 0, length: int | None = None) -> torch.Tensor:
        """float32 [L, 1, c, c] frames start..start+L of one sequence, reading only those frames.

        Training asks for short windows of long sequences; reading just the window (and not
        `groups`/`collisions`) is what keeps data loading off the training step's critical path.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} sequences")
        feats = self._read("features", index, start, length)
        return torch.from_numpy(
            feats.astype(np.float32) if feats.dtype.kind == "f" else (feats != 0).astype(np.float32)
        ).unsqueeze(1)

    def close(self) -> None:
        """Close this process's handle (reopened on next access)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


# (path, split, frames, crop) -> a Dataset with BallsDataset's items, plus read_features(index, start, length)
# for training windows. Training and evaluation take one as an argument (tests inject fakes).
DatasetFactory = Callable[[str, str, "int | None", int], Dataset]


def default_dataset_factory(path: str, split: str, frames: int | None, crop: int) -> Dataset:
    """The HDF5 loader: what `train` and `eval` read unless a caller injects another factory."""
    return BallsDataset(path, split, frames=frames, crop=crop)
