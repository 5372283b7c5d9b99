"""One job of the state-space track: for each input-noise std, train one model on true ball states.

A job is (model, seed) as in the pixel track, and trains `len(states.noise_px)` models, one per
std σ: each predicts every ball's centre at frame t from the centres of frames t-H..t-1 (H =
`states.history`), those inputs with Gaussian noise of std σ px per axis, drawn afresh for every
batch. Why one job for all σ: the four trainings share the data, the process and its start-up,
and the report compares σ within a seed (docs/states.md, "How σ enters").

Training reads the `train:` keys the track has a use for: optimizer, learning_rate, momentum,
lr_decay_at / lr_decay_factor (fractions of max_iterations), max_iterations (steps per model),
batch_size (windows per step: a window is one sequence and one predicted frame t), grad_clip,
log_every. There is no validation and no early stopping: each model trains its fixed number of
steps and `best.pt` holds the last weights of every σ. A job takes 40-90 s of CPU time, so it does
not resume: a rerun of an unfinished job trains it again from the start.

Writes in the job directory: `train_log.csv` (noise_px, iteration, log_density, seconds),
`status.json` (for `run`'s display) and `best.pt` (checkpoint.py's format, `kind: states`).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rsqair_bench import checkpoint as ckpt
from rsqair_bench.config import JobConfig, check_job, to_dict
from rsqair_bench.core.device import device_description, peak_memory_mb, resolve_device
from rsqair_bench.core.job_status import StatusWriter
from rsqair_bench.core.seeding import derive_seed
from rsqair_bench.data.states import StateTensors, add_input_noise, noise_key, read_state_split, window_batch
from rsqair_bench.errors import ConfigError, DataError, TrainingDiverged
from rsqair_bench.metrics import TrainStats, paper_name_or_model
from rsqair_bench.models.state_tracker import CHECKPOINT_KIND
from rsqair_bench.registry import build_state_model, count_parameters, load_plugins
from rsqair_bench.training.optim import build_optimizer
from rsqair_bench.training.schedule import learning_rate_factor
from rsqair_bench.training.state import job_hash

log = logging.getLogger(__name__)

LOG_FILE = "train_log.csv"
LOG_COLUMNS = ["noise_px", "iteration", "log_density", "seconds"]
# derive_seed purposes of this track's training (core/seeding.py lists them all). The same for every σ: the
# models of one job start from the same weights, see the same windows and the same standard-normal noise
# draws, scaled by their σ, so a seed's curve over σ changes the noise's size and nothing else.
SEED_INIT, SEED_WINDOWS, SEED_NOISE = 20, 21, 22


def _build(job: JobConfig) -> nn.Module:
    """A model with its initial parameters drawn from the job's seed, without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(job.seed, SEED_INIT))
        return build_state_model(job.model, job.model_config)


def _train_one(job: JobConfig, data: StateTensors, sigma: float, device: torch.device, report: Any) -> nn.Module:
    """`train.max_iterations` steps of Adam (or the suite's optimizer) on windows drawn at random, noise σ."""
    cfg, history = job.train, job.states.history  # type: ignore[union-attr]
    model = _build(job).to(device).train()
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: learning_rate_factor(i, cfg))
    windows = torch.Generator().manual_seed(derive_seed(job.seed, SEED_WINDOWS))
    noise = torch.Generator().manual_seed(derive_seed(job.seed, SEED_NOISE))
    n, frames = data.centres.shape[:2]
    for it in range(cfg.max_iterations):
        seq = torch.randint(0, n, (cfg.batch_size,), generator=windows)
        t = torch.randint(history, frames, (cfg.batch_size,), generator=windows)
        inputs, target, present = window_batch(data, seq, t, history)
        inputs = add_input_noise(inputs, sigma, noise)
        density, _ = model.centre_log_density(inputs.to(device), target.to(device), present.to(device), data.crop,
                                              data.box_scale)
        mean_density = density[present.to(device)].mean()  # nats per ball
        if not torch.isfinite(mean_density):
            raise TrainingDiverged(f"{job.model} seed {job.seed} noise {noise_key(sigma)} px: "
                                   f"non-finite log-density at step {it + 1}; expected finite (lower train.learning_rate)")
        optimizer.zero_grad(set_to_none=True)
        (-mean_density).backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        report(it + 1, float(mean_density.detach()))
    return model.eval()


class _Progress:
    """status.json and train_log.csv for one job: steps count across its σ models."""

    def __init__(self, job: JobConfig, out_dir: Path) -> None:
        self.job, self.steps = job, job.train.max_iterations
        total = self.steps * len(job.states.noise_px)  # type: ignore[union-attr]
        self.status = StatusWriter(out_dir, job.model, job.seed, total)
        self.file = (out_dir / LOG_FILE).open("w", newline="")  # a rerun trains again: a fresh log
        self.writer = csv.writer(self.file)
        self.writer.writerow(LOG_COLUMNS)
        self.start, self.done, self.sigma = time.perf_counter(), 0, 0.0
        self.sums = [0.0, 0]

    def model(self, index: int, sigma: float) -> Any:
        self.done, self.sigma = index * self.steps, sigma
        return self.step

    def step(self, iteration: int, density: float) -> None:
        self.status.step(self.done + iteration, density)
        self.sums = [self.sums[0] + density, self.sums[1] + 1]
        if iteration % self.job.train.log_every == 0 or iteration == self.steps:
            seconds = time.perf_counter() - self.start
            self.writer.writerow([noise_key(self.sigma), iteration, f"{self.sums[0] / self.sums[1]:.6g}", f"{seconds:.3f}"])
            self.file.flush()
            self.sums = [0.0, 0]

    def close(self) -> None:
        self.status.phase("training ended")
        self.file.close()


def train_states_job(job: JobConfig, out_dir: str | Path, progress: bool = False) -> dict[str, Any]:
    """Train the job's models (one per σ), write best.pt; returns the train result the runner records
    (TrainStats fields plus the job facts metrics.json wants). `progress` is accepted for the runner's
    train-step signature; `run` shows status.json instead of a bar."""
    if job.states is None:
        raise ConfigError(f"{job.model} seed {job.seed}: not a state-space job (no states: block)")
    check_job(job)
    load_plugins(list(job.plugins))
    device = resolve_device(job.device)
    split = read_state_split(job.train_data, "training", job.model_config.image_size)
    if split.active.shape[1] > job.model_config.max_objects:
        raise DataError(f"{job.train_data}: training has {split.active.shape[1]} ball slots, more than "
                        f"model_config.max_objects {job.model_config.max_objects}; expected at most that many")
    if split.frames <= job.states.history:
        raise DataError(f"{job.train_data}: training has {split.frames} frames, expected more than "
                        f"states.history {job.states.history}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data, weights, start = StateTensors.of(split), {}, time.perf_counter()
    status = _Progress(job, out_dir)
    old_threads = torch.get_num_threads()
    if job.train.torch_threads:  # as training/loop.py: small steps on a shared CPU lose most to idle threads
        torch.set_num_threads(job.train.torch_threads)
    try:
        for index, sigma in enumerate(job.states.noise_px):
            model = _train_one(job, data, sigma, device, status.model(index, sigma))
            weights[noise_key(sigma)] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    finally:
        torch.set_num_threads(old_threads)
        status.close()
    return _finish(job, out_dir, weights, model, time.perf_counter() - start, device)


def _finish(job: JobConfig, out_dir: Path, weights: dict[str, Any], model: nn.Module, seconds: float,
            device: torch.device) -> dict[str, Any]:
    """Write best.pt and return the train result."""
    steps = job.train.max_iterations * len(weights)
    parameters = {"total": count_parameters(model), "relation": count_parameters(model.relation)}
    stats = TrainStats(iterations=steps, seconds=seconds, sequences_per_s=steps * job.train.batch_size / seconds,
                       peak_memory_mb=peak_memory_mb(device), best_validation_bound=None)
    ckpt.save_checkpoint(out_dir / "best.pt", {
        "kind": CHECKPOINT_KIND, "model": weights, "model_name": job.model, "model_config": to_dict(job.model_config),
        "states": to_dict(job.states), "seed": job.seed, "plugins": list(job.plugins),
        "iteration": job.train.max_iterations, "config_hash": job_hash(job), "parameters": parameters,
        "train_stats": stats.as_dict(), "job": to_dict(job),
    })
    return {**dataclasses.asdict(stats), "train": stats.as_dict(), "parameters": parameters,
            "paper_name": paper_name_or_model(job.model), "config_hash": job_hash(job),
            "checkpoint_iteration": job.train.max_iterations, "best_iteration": job.train.max_iterations,
            "device": device_description(device), "torch_version": torch.__version__}
