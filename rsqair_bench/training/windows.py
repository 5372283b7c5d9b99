"""Training windows: which (sequence, start, length) each batch reads, as a pure function of (seed,
iteration), and the Dataset that reads them. Pure so that a resumed run draws the same windows as an
uninterrupted one without any saved sampler state."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset

from rsqair_bench.config import TrainConfig
from rsqair_bench.core.seeding import derive_seed
from rsqair_bench.training.schedule import curriculum_length


class WindowBatchSampler:
    """Batches of (sequence index, window start, length) keys; a pure function of (seed, iteration).

    Epoch e visits the training sequences in the order randperm(N) seeded by (seed, e), dropping
    the last partial batch; iteration i's windows start uniformly in [0, total_frames - L].
    """

    def __init__(self, n: int, batch_size: int, total_frames: int, cfg: TrainConfig, seed: int, start: int, stop: int):
        self.n, self.batch_size, self.total_frames = n, batch_size, total_frames
        self.cfg, self.seed, self.start, self.stop = cfg, seed, start, stop
        self.per_epoch = n // batch_size
        self._perm: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def batch(self, iteration: int) -> list[tuple[int, int, int]]:
        epoch, pos = divmod(iteration, self.per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, 1, epoch))
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        idx = self._perm[1][pos * self.batch_size : (pos + 1) * self.batch_size]
        length = curriculum_length(iteration, self.cfg)
        g = torch.Generator().manual_seed(derive_seed(self.seed, 2, iteration))
        starts = torch.randint(0, self.total_frames - length + 1, (self.batch_size,), generator=g)
        return [(int(a), int(s), length) for a, s in zip(idx.tolist(), starts.tolist())]

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for i in range(self.start, self.stop):
            yield self.batch(i)


class WindowDataset(Dataset):
    """The window (start, length) of a training sequence's features, read via `base.read_features`."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int, int]) -> torch.Tensor:
        index, start, length = key
        return self.base.read_features(index, start, length)  # [L, 1, H, W]
