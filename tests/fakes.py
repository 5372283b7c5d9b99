"""Test doubles for the training/evaluation protocol: a tiny model with SQAIR's interface, a tiny
R-NEM-layout HDF5 file, and a dataset reading it, so protocol tests do not need the real model or loader."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from rsqair_bench.config import JobConfig, ModelConfig, TrainConfig
from rsqair_bench.errors import DataError
from rsqair_bench.models.sqair import Generation, SQAIROutput

FAKE_MODELS = ("fake", "fake2")


class FakeSQAIR(nn.Module):
    """Learnable mean image + a noise-driven weight; implements forward / generate / pixel_log_likelihood.

    `nan_calls`: 1-based indices of training forward calls whose loss is NaN (to test divergence).
    `sleep`: seconds per training forward (to let a test kill a run mid-way).
    """

    def __init__(self, config: ModelConfig, nan_calls: set[int] | None = None, sleep: float = 0.0) -> None:
        super().__init__()
        self.config = config
        s = config.image_size
        self.mean = nn.Parameter(torch.zeros(1, s, s))  # [1, H, W] logits of the mean image
        self.noise_scale = nn.Parameter(torch.tensor(0.5))
        self.relation = nn.Linear(2, 2)  # stands in for the relational module (parameter count)
        self.nan_calls = nan_calls or set()
        self.sleep = sleep
        self.calls = 0

    def forward(self, x: Tensor, particles: int, generator: torch.Generator | None = None,
                max_objects: int | None = None) -> SQAIROutput:
        b, t = x.shape[:2]
        if self.training:
            self.calls += 1
            if self.sleep:
                time.sleep(self.sleep)
        noise = torch.randn(b, particles, generator=generator, device=x.device)  # [B, P]
        mu = torch.sigmoid(self.mean)  # [1, H, W]
        ll = self.pixel_log_likelihood(x, mu.expand_as(x)).flatten(1).sum(1)  # [B]
        log_weights = ll[:, None] + self.noise_scale * noise - 0.5 * self.noise_scale**2  # [B, P]
        bound = torch.logsumexp(log_weights, 1) - math.log(particles)  # [B]
        loss = -bound.mean() / (t * x[0, 0].numel())
        if self.training and self.calls in self.nan_calls:
            loss = loss * float("nan")
        k = max_objects or self.config.max_objects
        num_present = torch.full((b, particles, t), float(min(2, k)), device=x.device)
        return SQAIROutput(loss=loss, iwae_bound=bound, log_weights=log_weights, num_present=num_present)

    def generate(self, x: Tensor, n_observed: int, max_objects: int | None = None,
                 generator: torch.Generator | None = None, particles: int = 1) -> Generation:
        """Ignores `particles`: the fake has no posterior to resample."""
        b, t = x.shape[:2]
        k = max_objects or self.config.max_objects
        noise = 0.05 * torch.randn(b, t, 1, 1, 1, generator=generator, device=x.device)
        frames = (torch.sigmoid(self.mean) + noise).expand(b, t, *x.shape[2:])  # [B, T, 1, H, W]
        z = torch.zeros(b, t, k, device=x.device)
        fields = dict(frames=frames, what=z[..., None].expand(b, t, k, self.config.z_what),
                      where=z[..., None].expand(b, t, k, 4), pres=torch.ones_like(z),
                      boxes=z[..., None].expand(b, t, k, 4), ids=torch.arange(k).expand(b, t, k))
        names = {f.name for f in dataclasses.fields(Generation)}
        return Generation(**{key: v for key, v in fields.items() if key in names})

    def pixel_log_likelihood(self, x: Tensor, frames: Tensor) -> Tensor:
        return torch.distributions.Normal(frames, self.config.output_std).log_prob(x)


def fake_factory(nan_calls: set[int] | None = None, sleep: float = 0.0):
    def build(name: str, config: ModelConfig) -> FakeSQAIR:
        assert name in FAKE_MODELS, name
        return FakeSQAIR(config, nan_calls=nan_calls, sleep=sleep)

    return build


def write_fake_h5(path: Path, frames: int = 12, sizes: dict[str, int] | None = None, seed: int = 0) -> Path:
    """R-NEM layout: groups training/validation/test with features/groups/collisions [T, N, 64, 64, 1].

    Two 8x8 square 'balls' per sequence moving in straight lines; both flagged in `collisions`
    on frames where they overlap or touch (a crude stand-in for ball-ball contact).
    """
    sizes = sizes or {"training": 8, "validation": 4, "test": 6}
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        for split, n in sizes.items():
            feats = np.zeros((frames, n, 64, 64, 1), np.float32)
            groups = np.zeros((frames, n, 64, 64, 1), np.uint8)
            coll = np.zeros((frames, n, 64, 64, 1), np.uint8)
            pos = rng.uniform(20, 36, size=(n, 2, 2))
            vel = rng.uniform(-2, 2, size=(n, 2, 2))
            for t in range(frames):
                p = np.clip(pos + t * vel, 0, 56).astype(int)  # [N, 2 balls, 2]
                for i in range(n):
                    touching = np.abs(p[i, 0] - p[i, 1]).max() <= 8
                    for ball in range(2):
                        y, x = p[i, ball]
                        feats[t, i, y:y + 8, x:x + 8, 0] = 1.0
                        groups[t, i, y:y + 8, x:x + 8, 0] = ball + 1
                        if touching:
                            coll[t, i, y:y + 8, x:x + 8, 0] = 1
            g = f.create_group(split)
            g["features"], g["groups"], g["collisions"] = feats, groups, coll
    return path


class FakeBallsDataset(Dataset):
    """Reads write_fake_h5 files like the real loader: items cropped to the central `crop` pixels."""

    def __init__(self, path: str, split: str, frames: int | None = None, crop: int = 50) -> None:
        with h5py.File(path, "r") as f:
            total = f[split]["features"].shape[0]
            if frames is not None and frames > total:
                raise DataError(f"{path}: {split}/features has {total} frames, {frames} requested")
            t = total if frames is None else frames
            lo = (64 - crop) // 2
            sl = (slice(0, t), slice(None), slice(lo, lo + crop), slice(lo, lo + crop), 0)
            self.features = torch.from_numpy(f[split]["features"][sl]).float().transpose(0, 1)[:, :, None]
            self.groups = torch.from_numpy(f[split]["groups"][sl].astype(np.int64)).transpose(0, 1)[:, :, None]
            self.collisions = torch.from_numpy(f[split]["collisions"][sl]).bool().transpose(0, 1)[:, :, None]

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"features": self.features[i], "groups": self.groups[i], "collisions": self.collisions[i]}

    def read_features(self, i: int, start: int = 0, length: int | None = None) -> Tensor:
        stop = None if length is None else start + length
        return self.features[i][start:stop]


def tiny_job(data: Path, model: str = "fake", **train: object) -> JobConfig:
    """A job that trains in well under a second on CPU."""
    defaults = dict(particles=2, batch_size=2, learning_rate=1e-2, max_iterations=12, curriculum_start=2,
                    curriculum_every=4, curriculum_max=4, validate_every=4, early_stop_patience=10,
                    checkpoint_every=4, log_every=1, torch_threads=1)
    defaults.update(train)
    return JobConfig(model=model, seed=3, train_data=str(data), device="cpu",
                     model_config=ModelConfig(image_size=50, z_what=3), train=TrainConfig(**defaults))


def run_fake_training(config_path: str, out_dir: str) -> None:
    """Entry point for subprocess tests: train a job config with the fake model and data."""
    from rsqair_bench.config import load_config
    from rsqair_bench.training.loop import train_job

    job = load_config(JobConfig, config_path)
    train_job(job, Path(out_dir), progress=False, model_factory=fake_factory(sleep=float(os.environ.get("FAKE_SLEEP", "0"))),
              dataset_factory=FakeBallsDataset)
