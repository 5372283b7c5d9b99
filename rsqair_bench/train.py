"""Training protocol of R-SQAIR (paper section 3, SQAIR reference): one job = one (model, seed).

- Objective: the model's IWAE surrogate (`SQAIROutput.loss`), `train.particles` particles.
- Optimizer: RMSProp(lr, momentum); lr multiplied by `lr_decay_factor` at each fraction in
  `lr_decay_at` of `max_iterations` (sqair ref: lr/3 at 20% and 50%).
- Curriculum: sequence length `curriculum_start`, +1 every `curriculum_every` iterations, up to
  `curriculum_max` (`curriculum_length`). Each training sequence contributes a random window of
  that length, drawn uniformly over the whole stored sequence (R-NEM files hold 51 frames), so
  the model sees every phase of the motion, not only the first frames.
- Validation: every epoch (or `validate_every` iterations) the whole-sequence IWAE bound on the
  validation split, always on the first `curriculum_max` frames (a fixed length, so scores stay
  comparable while the curriculum grows), mean over at most `validation_sequences` sequences,
  with the same random numbers at every validation (common random numbers reduce noise).
- Early stopping after `early_stop_patience` validations without improvement (`EarlyStopping`).
- Checkpoints: `checkpoint.pt` (latest: model, optimizer, scheduler, curriculum position,
  iteration, early stopping, RNG states) every `checkpoint_every` iterations and at the end;
  `best.pt` (model at the best validation) separately. Rerunning the same command resumes.

Determinism: nothing draws from the global RNG. The model is initialised under
`torch.random.fork_rng()` seeded from the job seed (the global state is restored afterwards);
the data order and windows are pure functions of (seed, epoch/iteration) via seeded
torch.Generators, and the model's noise comes from one torch.Generator whose state is
checkpointed, so a run killed at any point and resumed reproduces the uninterrupted losses.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from rsqair_bench import checkpoint as ckpt
from rsqair_bench.config import (
    JobConfig,
    ModelConfig,
    TrainConfig,
    check_job,
    check_model_config,
    check_train_config,
    dump_yaml,
    load_config,
    to_dict,
)
from rsqair_bench.device import peak_memory_mb, resolve_device
from rsqair_bench.errors import DataError, TrainingDiverged
from rsqair_bench.io import atomic_write_text, directory_lock
from rsqair_bench.job_status import StatusWriter
from rsqair_bench.progress import progress_enabled
from rsqair_bench.registry import count_parameters

log = logging.getLogger(__name__)

ModelFactory = Callable[[str, ModelConfig], nn.Module]
DatasetFactory = Callable[[str, str, "int | None", int], Dataset]  # (path, split, frames, crop); items as
# BallsDataset, plus read_features(index, start, length) for training windows

LOG_COLUMNS = ["iteration", "seq_len", "iwae_bound", "loss", "lr", "seconds", "sequences_per_s"]
LATEST = "checkpoint.pt"
BEST = "best.pt"
LOG_FILE = "train_log.csv"


# ----------------------------------------------------------------------------- pure schedule helpers
def curriculum_length(iteration: int, cfg: TrainConfig) -> int:
    """Sequence length used at 0-based `iteration`: start + iteration // every, capped at max."""
    return min(cfg.curriculum_max, cfg.curriculum_start + iteration // cfg.curriculum_every)


def learning_rate_factor(iteration: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr at 0-based `iteration`: decay_factor ** (milestones passed)."""
    passed = sum(1 for frac in cfg.lr_decay_at if iteration >= round(frac * cfg.max_iterations))
    return cfg.lr_decay_factor**passed


def derive_seed(seed: int, *tags: int) -> int:
    """Independent 63-bit seed for a (seed, purpose, index) triple; avoids correlated streams."""
    words = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, *tags]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


class EarlyStopping:
    """Stop after `patience` consecutive validations without a strictly higher score (bound: higher = better).

    A NaN/inf score never counts as an improvement.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best: float | None = None
        self.best_iteration: int | None = None
        self.bad_count = 0

    def update(self, score: float, iteration: int | None = None) -> bool:
        """Record one validation; returns True when it improved on the best so far."""
        if math.isfinite(score) and (self.best is None or score > self.best):
            self.best, self.best_iteration, self.bad_count = float(score), iteration, 0
            return True
        self.bad_count += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_count >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_iteration": self.best_iteration, "bad_count": self.bad_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_iteration, self.bad_count = state["best"], state["best_iteration"], state["bad_count"]


# ----------------------------------------------------------------------------- devices and memory
# ----------------------------------------------------------------------------- defaults for injection
def default_model_factory(plugins: list[str]) -> ModelFactory:
    from rsqair_bench import registry

    if plugins:
        registry.load_plugins(plugins)
    return registry.build_model


def default_dataset_factory(path: str, split: str, frames: int | None, crop: int) -> Dataset:
    from rsqair_bench.data.loader import BallsDataset

    return BallsDataset(path, split, frames=frames, crop=crop)


def build_seeded_model(factory: ModelFactory, name: str, config: ModelConfig, seed: int) -> nn.Module:
    """Construct under fork_rng so parameter init is seeded without touching the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, 0))
        return factory(name, config)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The reference's RMSProp (TF semantics: decay 0.9, eps 1e-10, momentum, mean-square accumulator
    starting at 1 -- PyTorch starts it at 0, which makes the first steps ~1/sqrt(1-0.9) = 3x larger
    and much noisier), or Adam for short CPU runs."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.learning_rate)
    optimizer = torch.optim.RMSprop(params, lr=cfg.learning_rate, alpha=0.9, eps=1e-10, momentum=cfg.momentum)
    for p in params:
        optimizer.state[p] = {
            "step": torch.tensor(0.0),
            "square_avg": torch.ones_like(p, memory_format=torch.preserve_format),
            "momentum_buffer": torch.zeros_like(p, memory_format=torch.preserve_format),
        }
    return optimizer


# ----------------------------------------------------------------------------- data windows
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


def _features_only(batch: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    return torch.stack([item["features"] for item in batch])  # [B, T, 1, H, W]


def validation_bound(
    model: nn.Module, dataset: Dataset, batch_size: int, particles: int, seed: int, device: torch.device
) -> float:
    """Mean over sequences of the whole-sequence IWAE bound; same random numbers on every call."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_features_only,
                        generator=torch.Generator().manual_seed(derive_seed(seed, 5)))  # no global RNG draw
    g = torch.Generator(device=device).manual_seed(derive_seed(seed, 4))
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x in loader:
            bound = model(x.to(device), particles, generator=g).iwae_bound  # [B]
            total += float(bound.double().sum())
            count += bound.shape[0]
    model.train(was_training)
    return total / max(count, 1)


# ----------------------------------------------------------------------------- result
@dataclass
class TrainResult:
    out_dir: Path
    iterations: int
    seconds: float  # wall time over all (resumed) runs, validation included
    sequences_per_s: float  # training sequences per second of optimisation steps
    peak_memory_mb: float
    best_validation_bound: float | None
    best_iteration: int | None
    checkpoint: Path  # latest
    best_checkpoint: Path
    stopped_early: bool
    finished: bool  # False only when `max_steps` paused the run
    nan_skips: int
    config_hash: str
    parameters: dict[str, int] = field(default_factory=dict)

    def train_stats(self) -> dict[str, Any]:
        """The `train` entry of metrics.json."""
        return {
            "iterations": self.iterations,
            "seconds": self.seconds,
            "sequences_per_s": self.sequences_per_s,
            "peak_memory_mb": self.peak_memory_mb,
            "best_validation_bound": self.best_validation_bound,
        }


def job_hash(job: JobConfig) -> str:
    """Identity of a job: every setting except where it runs."""
    data = to_dict(job)
    data.pop("device", None)
    return ckpt.config_hash(data)


def _validate_train_config(cfg: TrainConfig) -> None:
    """The same range checks `validate` makes (config.check_train_config), kept as a name for callers."""
    check_train_config(cfg)


def _trim_log(path: Path, keep_through: int) -> None:
    """Keep the header and rows with iteration <= keep_through (drops rows a killed run wrote past its checkpoint)."""
    rows: list[list[str]] = []
    if path.is_file():
        with path.open(newline="") as fh:
            for row in csv.reader(fh):
                if len(row) != len(LOG_COLUMNS) or row[0] == "iteration":
                    continue
                try:
                    if int(row[0]) <= keep_through:
                        rows.append(row)
                except ValueError:
                    continue
    lines = [",".join(LOG_COLUMNS)] + [",".join(r) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _is_nonfinite_distribution_error(err: ValueError) -> bool:
    """torch.distributions' argument validation failing on NaN/inf parameters (e.g. after a huge learning rate)."""
    text = str(err)
    return "to satisfy the constraint" in text and "found invalid values" in text


def _forward_or_none(model: nn.Module, x: torch.Tensor, particles: int, generator: torch.Generator) -> Any:
    """The model's output, or None when a distribution inside it refused non-finite parameters.

    Why: that ValueError (with a tensor dump) is the same event as a non-finite loss, so it must take the
    same path: skipped while train.max_nan_skips allows, else one line and the last good checkpoint kept.
    """
    try:
        return model(x, particles, generator=generator)
    except ValueError as err:
        if not _is_nonfinite_distribution_error(err):
            raise
        log.debug("non-finite distribution parameter: %s", str(err).splitlines()[0])
        return None


def _parameters_finite(model: nn.Module) -> bool:
    """All parameters finite: a checkpoint is only written from a model that is."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _tensorboard(out_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: optional
        return None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


# ----------------------------------------------------------------------------- the job
def train_job(
    job: JobConfig,
    out_dir: Path,
    progress: bool = True,
    model_factory: ModelFactory | None = None,
    dataset_factory: DatasetFactory | None = None,
    max_steps: int | None = None,
) -> TrainResult:
    """Train (or resume) one job in `out_dir`; returns when done, early-stopped, or after `max_steps` steps.

    All inputs are checked (config, data, existing checkpoint) before anything in `out_dir` is written.
    Raises ConfigError, DataError, CheckpointError, TrainingDiverged.
    """
    out_dir = Path(out_dir)
    cfg = job.train
    check_model_config(job.model_config)
    _validate_train_config(cfg)
    device = resolve_device(job.device)
    dataset_factory = dataset_factory or default_dataset_factory
    crop = job.model_config.image_size

    # data: checked before anything is written
    train_base = dataset_factory(job.train_data, "training", None, crop)
    n_train = len(train_base)  # type: ignore[arg-type]
    if n_train < cfg.batch_size:
        raise DataError(f"{job.train_data}: training has {n_train} sequences, fewer than train.batch_size {cfg.batch_size}")
    total_frames = int(train_base[0]["features"].shape[0])
    if total_frames < cfg.curriculum_max:
        raise DataError(
            f"{job.train_data}: training/features has {total_frames} frames, "
            f"train.curriculum_max needs {cfg.curriculum_max}"
        )
    val_ds: Dataset = dataset_factory(job.train_data, "validation", cfg.curriculum_max, crop)
    if cfg.validation_sequences is not None and cfg.validation_sequences < len(val_ds):  # type: ignore[arg-type]
        val_ds = Subset(val_ds, range(cfg.validation_sequences))
    if len(val_ds) == 0:  # type: ignore[arg-type]
        raise DataError(f"{job.train_data}: validation split is empty")

    # model, optimizer, schedule
    factory = model_factory or default_model_factory(job.plugins)
    model = build_seeded_model(factory, job.model, job.model_config, job.seed).to(device)
    model.train()
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: learning_rate_factor(i, cfg))
    model_gen = torch.Generator(device=device).manual_seed(derive_seed(job.seed, 3))
    stopper = EarlyStopping(cfg.early_stop_patience)
    model_cfg_hash = ckpt.config_hash(job.model_config)
    jhash = job_hash(job)
    relation = getattr(model, "relation", None)
    params = {"total": count_parameters(model), "relation": count_parameters(relation) if relation is not None else 0}

    iteration, nan_skips, elapsed, step_seconds, peak_mb, finished, stopped_early = 0, 0, 0.0, 0.0, 0.0, False, False
    window = {"loss": 0.0, "bound": 0.0, "count": 0}
    latest, best_path, log_path = out_dir / LATEST, out_dir / BEST, out_dir / LOG_FILE
    if latest.exists():
        state = ckpt.load_checkpoint(latest)  # cpu: RNG states must stay on cpu
        ckpt.check_compatible(state, latest, job.model, model_cfg_hash, job.seed)
        if state.get("config_hash") != jhash:
            log.warning("%s: job settings changed since the checkpoint (e.g. train.*); resuming anyway", latest)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, KeyError, ValueError) as err:
            first = str(err).splitlines()[0]
            raise ckpt.CheckpointError(f"{latest}: state does not fit model {job.model!r} ({first[:160]})") from None
        model_gen.set_state(state["rng"]["model"])
        ckpt.restore_global_rng(state["rng"])
        stopper.load_state_dict(state["early_stopping"])
        iteration, nan_skips = state["iteration"], state["nan_skips"]
        elapsed, step_seconds, peak_mb = state["elapsed_seconds"], state["step_seconds"], state["peak_memory_mb"]
        finished, stopped_early, window = state["finished"], state["stopped_early"], dict(state["log_window"])
        log.info("%s: resuming at iteration %d", latest, iteration)

    def make_result() -> TrainResult:
        seqs = iteration * cfg.batch_size
        return TrainResult(
            out_dir=out_dir, iterations=iteration, seconds=elapsed,
            sequences_per_s=seqs / step_seconds if step_seconds > 0 else 0.0,
            peak_memory_mb=max(peak_mb, peak_memory_mb(device)), best_validation_bound=stopper.best,
            best_iteration=stopper.best_iteration, checkpoint=latest, best_checkpoint=best_path,
            stopped_early=stopped_early, finished=finished, nan_skips=nan_skips, config_hash=jhash, parameters=params,
        )

    if finished:
        log.info("%s: training already finished at iteration %d", latest, iteration)
        return make_result()

    # from here on out_dir is written
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.yaml", dump_yaml(job))
    _trim_log(log_path, iteration)

    def snapshot(kind: str) -> dict[str, Any]:
        result = make_result()
        state = {
            "kind": kind, "model_name": job.model, "model_config": to_dict(job.model_config),
            "model_config_hash": model_cfg_hash, "config_hash": jhash, "seed": job.seed, "plugins": list(job.plugins),
            "job": to_dict(job), "iteration": iteration, "seq_len": curriculum_length(max(iteration - 1, 0), cfg),
            # the longest windows trained on so far: evaluation marks scores at longer T (docs/metrics.md)
            "trained_horizon": curriculum_length(max(iteration - 1, 0), cfg),
            "best_score": stopper.best, "early_stopping": stopper.state_dict(), "nan_skips": nan_skips,
            "elapsed_seconds": elapsed, "step_seconds": step_seconds, "peak_memory_mb": result.peak_memory_mb,
            "finished": finished, "stopped_early": stopped_early, "log_window": dict(window),
            "train_stats": result.train_stats(), "parameters": params,
            "model": model.state_dict(),
        }
        if kind == "latest":
            state["optimizer"] = optimizer.state_dict()
            state["scheduler"] = scheduler.state_dict()
            state["rng"] = {"model": model_gen.get_state(), **ckpt.capture_global_rng()}
        return state

    per_epoch = n_train // cfg.batch_size
    validate_every = cfg.validate_every or per_epoch
    stop = cfg.max_iterations if max_steps is None else min(cfg.max_iterations, iteration + max_steps)
    sampler = WindowBatchSampler(n_train, cfg.batch_size, total_frames, cfg, job.seed, iteration, stop)
    loader = DataLoader(
        WindowDataset(train_base), batch_sampler=sampler, num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(derive_seed(job.seed, 6, iteration)),  # worker seeds; no global RNG
    )
    old_threads = torch.get_num_threads()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    writer = _tensorboard(out_dir)
    from tqdm import tqdm

    bar = tqdm(total=cfg.max_iterations, initial=iteration, disable=not progress_enabled(progress), unit="it")
    status = StatusWriter(out_dir, job.model, job.seed, cfg.max_iterations, iteration)  # for `run`'s live display
    log_fh = log_path.open("a", newline="")
    csv_out = csv.writer(log_fh)
    t_start = time.perf_counter() - elapsed
    t_window, window_steps = 0.0, 0
    try:
        for x in loader:
            t0 = time.perf_counter()
            seq_len = x.shape[1]
            lr = cfg.learning_rate * learning_rate_factor(iteration, cfg)
            x = x.to(device, non_blocking=True)  # [B, L, 1, H, W]
            out = _forward_or_none(model, x, cfg.particles, model_gen)  # None: a distribution got NaN parameters
            optimizer.zero_grad(set_to_none=True)
            loss_value = float(out.loss.detach()) if out is not None else float("nan")
            ok = math.isfinite(loss_value)
            if ok:
                out.loss.backward()
                grads = [p.grad for p in model.parameters() if p.grad is not None]
                if cfg.grad_clip is not None:
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                else:
                    norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
                ok = bool(torch.isfinite(norm))
            if ok:
                optimizer.step()
                bound_value = float(out.iwae_bound.detach().double().mean())
            elif nan_skips < cfg.max_nan_skips:
                nan_skips += 1
                optimizer.zero_grad(set_to_none=True)
                log.warning("non-finite loss or gradient at iteration %d: batch skipped (%d/%d)",
                            iteration + 1, nan_skips, cfg.max_nan_skips)
                bound_value = float("nan")
            else:
                log_fh.flush()
                what = "a distribution parameter" if out is None else ("loss" if not math.isfinite(loss_value) else "gradient")
                good = f"last good checkpoint {latest} kept" if latest.exists() else "no checkpoint written yet"
                raise TrainingDiverged(
                    f"{out_dir}: {what} became non-finite ({loss_value}) at iteration {iteration + 1} "
                    f"(seq_len {seq_len}); {good}; set train.max_nan_skips to skip bad batches"
                )
            scheduler.step()
            iteration += 1
            dt = time.perf_counter() - t0
            step_seconds += dt
            t_window += dt
            window_steps += 1
            if math.isfinite(bound_value):
                window["loss"] += loss_value
                window["bound"] += bound_value
                window["count"] += 1
            elapsed = time.perf_counter() - t_start
            bar.update(1)
            status.step(iteration, bound_value)

            if iteration % cfg.log_every == 0:
                n = max(window["count"], 1)
                row = [iteration, seq_len, repr(window["bound"] / n), repr(window["loss"] / n), repr(lr),
                       f"{elapsed:.3f}", f"{window_steps * cfg.batch_size / max(t_window, 1e-9):.3f}"]
                csv_out.writerow(row)
                log_fh.flush()
                if writer is not None:
                    for name, value in zip(LOG_COLUMNS[1:], row[1:]):
                        writer.add_scalar(f"train/{name}", float(value), iteration)
                bar.set_postfix(L=seq_len, bound=f"{window['bound'] / n:.1f}")
                window = {"loss": 0.0, "bound": 0.0, "count": 0}
                t_window, window_steps = 0.0, 0

            done = iteration >= cfg.max_iterations
            validating = iteration % validate_every == 0 or done
            if (validating or iteration % cfg.checkpoint_every == 0 or iteration >= stop) and not _parameters_finite(model):
                good = f"last good checkpoint {latest} kept" if latest.exists() else "no checkpoint written yet"
                raise TrainingDiverged(
                    f"{out_dir}: parameters became non-finite by iteration {iteration} "
                    f"(train.learning_rate {cfg.learning_rate} too high?); {good}"
                )
            if validating:
                try:
                    score = validation_bound(model, val_ds, cfg.batch_size, cfg.particles, job.seed, device)
                except ValueError as err:  # a distribution refused non-finite parameters: a non-finite score
                    if not _is_nonfinite_distribution_error(err):
                        raise
                    score = float("nan")
                improved = stopper.update(score, iteration)
                log.info("iteration %d: validation bound %.3f (best %s, %d without improvement)",
                         iteration, score, stopper.best, stopper.bad_count)
                if writer is not None:
                    writer.add_scalar("validation/iwae_bound", score, iteration)
                if stopper.should_stop:
                    stopped_early = finished = True
                if done:
                    finished = True
                elapsed = time.perf_counter() - t_start
                if improved:
                    ckpt.save_checkpoint(best_path, snapshot("best"))
            if iteration % cfg.checkpoint_every == 0 or finished or iteration >= stop:
                elapsed = time.perf_counter() - t_start
                ckpt.save_checkpoint(latest, snapshot("latest"))
            if finished:
                break
    finally:
        log_fh.close()
        bar.close()
        status.phase("training ended")
        if writer is not None:
            writer.close()
        torch.set_num_threads(old_threads)
    if finished and not best_path.exists():  # every validation was non-finite: keep the last model as best
        ckpt.save_checkpoint(best_path, snapshot("best"))
    if finished and best_path.exists():  # the best checkpoint carries the final training figures
        best = ckpt.load_checkpoint(best_path)
        best["train_stats"] = make_result().train_stats()
        ckpt.save_checkpoint(best_path, best)
    return make_result()


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="job config YAML (JobConfig: model, seed, train_data, model_config, train)")
    parser.add_argument("--out", required=True, help="job directory (resumes from its checkpoint.pt)")
    parser.add_argument("--device", default=None, help="override the config's device (auto, cpu, cuda)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def command(args: argparse.Namespace) -> int:
    job = load_config(JobConfig, args.config)
    if args.device:
        job = dataclasses.replace(job, device=args.device)
    check_job(job, f"{args.config}:")  # every range, before --out is touched
    with directory_lock(Path(args.out)):  # the runner's lock: one trainer per job directory
        result = train_job(job, Path(args.out), progress=not args.no_progress)
    how = "early-stopped" if result.stopped_early else "finished"
    print(
        f"{result.out_dir}: {how} at iteration {result.iterations}, best validation bound "
        f"{result.best_validation_bound} (iteration {result.best_iteration}), {result.sequences_per_s:.1f} seq/s"
    )
    return 0
