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

`model_config.compile` without a working C++ compiler (compiler.compiler_problem, asked before
anything is written) trains eager with one warning and records why (`TrainStats.compile_fallback`).
While the first step compiles, status.json shows the phase `compiling`; its duration is logged
and recorded (`compile_seconds`).

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
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from rsqair_bench import checkpoint as ckpt
from rsqair_bench.core.compiler import compiler_problem
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
from rsqair_bench.data.loader import DatasetFactory, default_dataset_factory
from rsqair_bench.core.device import peak_memory_mb, resolve_device
from rsqair_bench.errors import DataError, TrainingDiverged
from rsqair_bench.core.io import atomic_write_text, directory_lock
from rsqair_bench.core.job_status import StatusWriter
from rsqair_bench.metrics import TRAIN_KEYS, TrainStats
from rsqair_bench.core.progress import progress_enabled
from rsqair_bench.registry import ModelFactory, count_parameters, default_model_factory
from rsqair_bench.core.seeding import derive_seed

log = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------- model and optimizer
def build_seeded_model(factory: ModelFactory, name: str, config: ModelConfig, seed: int) -> nn.Module:
    """Construct under fork_rng so parameter init is seeded without touching the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, 0))
        return factory(name, config)


def build_optimizer(model: nn.Module, cfg: TrainConfig, compiled: bool = False) -> torch.optim.Optimizer:
    """The reference's RMSProp (TF semantics: decay 0.9, eps 1e-10, momentum, mean-square accumulator
    starting at 1 -- PyTorch starts it at 0, which makes the first steps ~1/sqrt(1-0.9) = 3x larger
    and much noisier), or Adam for short CPU runs.

    `compiled` (for `optimizer_update`): the learning rate lives in a tensor that the schedule updates
    in place, so the compiled update reads the new value instead of recompiling (~30 s per lr change
    on this CPU)."""
    params = [p for p in model.parameters() if p.requires_grad]
    lr: float | torch.Tensor = torch.tensor(cfg.learning_rate) if compiled else cfg.learning_rate
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    optimizer = torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-10, momentum=cfg.momentum)
    for p in params:
        optimizer.state[p] = {
            "step": torch.tensor(0.0),
            "square_avg": torch.ones_like(p, memory_format=torch.preserve_format),
            "momentum_buffer": torch.zeros_like(p, memory_format=torch.preserve_format),
        }
    return optimizer


def optimizer_update(optimizer: torch.optim.Optimizer, compiled: bool) -> Callable[[], Any]:
    """`optimizer.step`, compiled when `model_config.compile` is set (with `build_optimizer(..., compiled=True)`).

    Why: the eager update makes a handful of operator calls per parameter tensor: about 2,200
    profiler events for SQAIR's 93 tensors on CPU, an eighth of a compiled training step. Compiled,
    it is a few fused loops over all of them (~10 events). Numerics: the same update up to float
    rounding (tests/test_optimizer.py)."""
    return torch.compile(optimizer.step) if compiled else optimizer.step


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
    compiled: bool = False  # the steps ran compiled (model_config.compile and a working C++ compiler)
    compile_fallback: str | None = None  # why they ran eager although model_config.compile was set
    compile_seconds: float | None = None  # this run's first compiled step, compilation included

    def train_stats(self) -> dict[str, Any]:
        """The `train` entry of metrics.json."""
        return TrainStats(**{k: getattr(self, k) for k in TRAIN_KEYS}).as_dict()


def job_hash(job: JobConfig) -> str:
    """Identity of a job: every setting except where it runs."""
    data = to_dict(job)
    data.pop("device", None)
    return ckpt.config_hash(data)


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


# ----------------------------------------------------------------------------- the job's state
@dataclass
class TrainState:
    """What a run carries from one step to the next besides the weights: checkpoint.pt stores and restores it."""

    iteration: int = 0
    nan_skips: int = 0
    elapsed: float = 0.0  # wall seconds over all (resumed) runs, validation included
    step_seconds: float = 0.0  # seconds inside optimisation steps
    peak_mb: float = 0.0  # peak memory of earlier (resumed) runs
    finished: bool = False
    stopped_early: bool = False
    window: dict[str, float] = field(default_factory=lambda: _empty_window())  # sums since the last log row

    def to_checkpoint(self, peak_memory_mb: float) -> dict[str, Any]:
        return {
            "iteration": self.iteration, "nan_skips": self.nan_skips, "elapsed_seconds": self.elapsed,
            "step_seconds": self.step_seconds, "peak_memory_mb": peak_memory_mb, "finished": self.finished,
            "stopped_early": self.stopped_early, "log_window": dict(self.window),
        }

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> TrainState:
        return cls(
            iteration=state["iteration"], nan_skips=state["nan_skips"], elapsed=state["elapsed_seconds"],
            step_seconds=state["step_seconds"], peak_mb=state["peak_memory_mb"], finished=state["finished"],
            stopped_early=state["stopped_early"], window=dict(state["log_window"]),
        )


def _empty_window() -> dict[str, float]:
    return {"loss": 0.0, "bound": 0.0, "count": 0}


@dataclass
class _TrainData:
    train: Dataset  # whole training sequences; windows are read from them
    validation: Dataset
    n_train: int
    total_frames: int


@dataclass
class _Run:
    """The parts of one training run that the steps below share: built once, then only `state` changes."""

    job: JobConfig
    out_dir: Path
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    update: Callable[[], Any]  # the optimizer's step (compiled with model_config.compile)
    scheduler: torch.optim.lr_scheduler.LRScheduler
    model_gen: torch.Generator
    stopper: EarlyStopping
    parameters: dict[str, int]
    model_cfg_hash: str
    job_hash: str
    state: TrainState = field(default_factory=TrainState)
    compiled: bool = False  # `update` and the model's frames are compiled
    compile_fallback: str | None = None  # why not, although model_config.compile was set
    compile_seconds: float | None = None  # set once this run's first (compiling) step is done

    @property
    def cfg(self) -> TrainConfig:
        return self.job.train

    @property
    def latest(self) -> Path:
        return self.out_dir / LATEST

    @property
    def best(self) -> Path:
        return self.out_dir / BEST

    def result(self) -> TrainResult:
        st = self.state
        return TrainResult(
            out_dir=self.out_dir, iterations=st.iteration, seconds=st.elapsed,
            sequences_per_s=st.iteration * self.cfg.batch_size / st.step_seconds if st.step_seconds > 0 else 0.0,
            peak_memory_mb=max(st.peak_mb, peak_memory_mb(self.device)), best_validation_bound=self.stopper.best,
            best_iteration=self.stopper.best_iteration, checkpoint=self.latest, best_checkpoint=self.best,
            stopped_early=st.stopped_early, finished=st.finished, nan_skips=st.nan_skips, config_hash=self.job_hash,
            parameters=self.parameters, compiled=self.compiled, compile_fallback=self.compile_fallback,
            compile_seconds=self.compile_seconds,
        )

    def snapshot(self, kind: str) -> dict[str, Any]:
        """A checkpoint: `best` (model and facts) or `latest` (also optimizer, scheduler and RNG states)."""
        job, result, horizon = self.job, self.result(), curriculum_length(max(self.state.iteration - 1, 0), self.cfg)
        state = {
            "kind": kind, "model_name": job.model, "model_config": to_dict(job.model_config),
            "model_config_hash": self.model_cfg_hash, "config_hash": self.job_hash, "seed": job.seed,
            "plugins": list(job.plugins), "job": to_dict(job), "seq_len": horizon,
            # the longest windows trained on so far: evaluation marks scores at longer T (docs/metrics.md)
            "trained_horizon": horizon,
            "best_score": self.stopper.best, "early_stopping": self.stopper.state_dict(),
            **self.state.to_checkpoint(result.peak_memory_mb),
            "train_stats": result.train_stats(), "parameters": self.parameters,
            "model": self.model.state_dict(),
        }
        if kind == "latest":
            state["optimizer"] = self.optimizer.state_dict()
            state["scheduler"] = self.scheduler.state_dict()
            state["rng"] = {"model": self.model_gen.get_state(), **ckpt.capture_global_rng()}
        return state

    def last_good(self) -> str:
        return f"last good checkpoint {self.latest} kept" if self.latest.exists() else "no checkpoint written yet"


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
    check_model_config(job.model_config)
    check_train_config(job.train)
    device = resolve_device(job.device)
    fallback = compile_fallback(job.model_config)
    data = _load_data(job, dataset_factory or default_dataset_factory)
    run = _build_run(job, Path(out_dir), device, model_factory or default_model_factory(job.plugins), fallback)
    _resume(run)
    if run.state.finished:
        log.info("%s: training already finished at iteration %d", run.latest, run.state.iteration)
        return run.result()
    # from here on out_dir is written
    run.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.out_dir / "config.yaml", dump_yaml(job))
    _trim_log(run.out_dir / LOG_FILE, run.state.iteration)
    stop = run.cfg.max_iterations if max_steps is None else min(run.cfg.max_iterations, run.state.iteration + max_steps)
    _train_loop(run, data, stop, progress)
    if run.state.finished and not run.best.exists():  # every validation was non-finite: keep the last model as best
        ckpt.save_checkpoint(run.best, run.snapshot("best"))
    return run.result()


def _load_data(job: JobConfig, dataset_factory: DatasetFactory) -> _TrainData:
    """The training and validation splits, checked against the config before anything is written."""
    cfg, crop = job.train, job.model_config.image_size
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
    return _TrainData(train_base, val_ds, n_train, total_frames)


def compile_fallback(config: ModelConfig) -> str | None:
    """Why `config.compile` cannot be honoured here (compiler.compiler_problem), warned once per job; None
    when it can or was not asked for. Then the job trains eager: the same model and update, slower steps."""
    if not config.compile:
        return None
    problem = compiler_problem()
    if problem is not None:
        log.warning("model_config.compile is set but %s: training eager instead", problem)
    return problem


def _build_run(job: JobConfig, out_dir: Path, device: torch.device, factory: ModelFactory,
               fallback: str | None = None) -> _Run:
    """Model (seeded init), optimizer, lr schedule, noise generator and early stopping, fresh.

    `fallback` (compile_fallback's reason): build the model and update eager although model_config.compile
    is set; job.model_config itself, and so config.yaml and the checkpoints' model config, stay as given."""
    cfg = job.train
    model_config = job.model_config if fallback is None else dataclasses.replace(job.model_config, compile=False)
    model = build_seeded_model(factory, job.model, model_config, job.seed).to(device)
    model.train()
    compiled = model_config.compile
    optimizer = build_optimizer(model, cfg, compiled)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: learning_rate_factor(i, cfg))
    relation = getattr(model, "relation", None)
    return _Run(
        job=job, out_dir=out_dir, device=device, model=model, optimizer=optimizer,
        # after the scheduler, which wraps optimizer.step to see that the update ran before it steps
        update=optimizer_update(optimizer, compiled), scheduler=scheduler,
        model_gen=torch.Generator(device=device).manual_seed(derive_seed(job.seed, 3)),
        stopper=EarlyStopping(cfg.early_stop_patience),
        parameters={"total": count_parameters(model),
                    "relation": count_parameters(relation) if relation is not None else 0},
        model_cfg_hash=ckpt.config_hash(job.model_config), job_hash=job_hash(job),
        compiled=compiled, compile_fallback=fallback,
    )


def _resume(run: _Run) -> None:
    """Load checkpoint.pt when there is one: weights, optimizer, schedule, RNG states and the TrainState."""
    latest, job = run.latest, run.job
    if not latest.exists():
        return
    state = ckpt.load_checkpoint(latest)  # cpu: RNG states must stay on cpu
    ckpt.check_compatible(state, latest, job.model, job.model_config, job.seed)
    if state.get("config_hash") != run.job_hash:
        log.warning("%s: job settings changed since the checkpoint (e.g. train.*); resuming anyway", latest)
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, KeyError, ValueError) as err:
        first = str(err).splitlines()[0]
        raise ckpt.CheckpointError(f"{latest}: state does not fit model {job.model!r} ({first[:160]})") from None
    run.model_gen.set_state(state["rng"]["model"])
    ckpt.restore_global_rng(state["rng"])
    run.stopper.load_state_dict(state["early_stopping"])
    run.state = TrainState.from_checkpoint(state)
    log.info("%s: resuming at iteration %d", latest, run.state.iteration)


class _Outputs:
    """What a run writes while it trains besides checkpoints: train_log.csv, tensorboard/, the bar, status.json."""

    def __init__(self, run: _Run, progress: bool) -> None:
        from tqdm import tqdm

        cfg, it = run.cfg, run.state.iteration
        self.writer = _tensorboard(run.out_dir)
        self.bar = tqdm(total=cfg.max_iterations, initial=it, disable=not progress_enabled(progress), unit="it")
        budget = None if cfg.max_minutes is None else 60.0 * cfg.max_minutes
        self.status = StatusWriter(run.out_dir, run.job.model, run.job.seed, cfg.max_iterations, it,  # `run`'s display
                                   budget_s=budget, elapsed_s=run.state.elapsed)
        self.log_fh = (run.out_dir / LOG_FILE).open("a", newline="")
        self.csv = csv.writer(self.log_fh)
        self.t_window, self.window_steps = 0.0, 0  # time and steps since the last log row

    def log_row(self, run: _Run, seq_len: int, lr: float) -> None:
        """One train_log.csv row (and tensorboard scalars) with the means since the last row."""
        st, batch = run.state, run.cfg.batch_size
        n = max(st.window["count"], 1)
        row = [st.iteration, seq_len, repr(st.window["bound"] / n), repr(st.window["loss"] / n), repr(lr),
               f"{st.elapsed:.3f}", f"{self.window_steps * batch / max(self.t_window, 1e-9):.3f}"]
        self.csv.writerow(row)
        self.log_fh.flush()
        if self.writer is not None:
            for name, value in zip(LOG_COLUMNS[1:], row[1:]):
                self.writer.add_scalar(f"train/{name}", float(value), st.iteration)
        self.bar.set_postfix(L=seq_len, bound=f"{st.window['bound'] / n:.1f}")
        st.window = _empty_window()
        self.t_window, self.window_steps = 0.0, 0

    def close(self) -> None:
        self.log_fh.close()
        self.bar.close()
        self.status.phase("training ended")
        if self.writer is not None:
            self.writer.close()


def _train_loop(run: _Run, data: _TrainData, stop: int, progress: bool) -> None:
    """Steps from run.state.iteration up to `stop` (or the end of training), logging, validating, checkpointing."""
    cfg, st = run.cfg, run.state
    validate_every = cfg.validate_every or data.n_train // cfg.batch_size  # default: once per epoch
    sampler = WindowBatchSampler(data.n_train, cfg.batch_size, data.total_frames, cfg, run.job.seed, st.iteration, stop)
    loader = DataLoader(
        WindowDataset(data.train), batch_sampler=sampler, num_workers=cfg.num_workers,
        pin_memory=run.device.type == "cuda",
        generator=torch.Generator().manual_seed(derive_seed(run.job.seed, 6, st.iteration)),  # worker seeds; no global RNG
    )
    old_threads = torch.get_num_threads()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    outputs = _Outputs(run, progress)
    t_start = time.perf_counter() - st.elapsed
    try:
        for x in loader:
            compiling = run.compiled and run.compile_seconds is None  # this run's first step compiles
            if compiling:
                outputs.status.phase("compiling")
            t0 = time.perf_counter()
            seq_len, lr = x.shape[1], cfg.learning_rate * learning_rate_factor(st.iteration, cfg)
            loss_value, bound_value = _step(run, x, outputs)
            dt = time.perf_counter() - t0
            st.step_seconds += dt
            outputs.t_window += dt
            outputs.window_steps += 1
            if math.isfinite(bound_value):
                st.window["loss"] += loss_value
                st.window["bound"] += bound_value
                st.window["count"] += 1
            st.elapsed = time.perf_counter() - t_start
            outputs.bar.update(1)
            outputs.status.step(st.iteration, bound_value)
            if compiling:
                run.compile_seconds = dt
                outputs.status.phase("training")
                log.info("iteration %d: the first compiled step took %.1f s (compilation included)", st.iteration, dt)
            if st.iteration % cfg.log_every == 0:
                outputs.log_row(run, seq_len, lr)
            _validate_and_checkpoint(run, data.validation, validate_every, stop, outputs, t_start)
            if st.finished:
                break
    finally:
        outputs.close()
        torch.set_num_threads(old_threads)


def _step(run: _Run, x: torch.Tensor, outputs: _Outputs) -> tuple[float, float]:
    """One optimisation step -> (loss, bound); a non-finite one is skipped while train.max_nan_skips allows."""
    cfg, st, model, optimizer = run.cfg, run.state, run.model, run.optimizer
    seq_len = x.shape[1]
    x = x.to(run.device, non_blocking=True)  # [B, L, 1, H, W]
    out = _forward_or_none(model, x, cfg.particles, run.model_gen)  # None: a distribution got NaN parameters
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
        run.update()
        bound_value = float(out.iwae_bound.detach().double().mean())
    elif st.nan_skips < cfg.max_nan_skips:
        st.nan_skips += 1
        optimizer.zero_grad(set_to_none=True)
        log.warning("non-finite loss or gradient at iteration %d: batch skipped (%d/%d)",
                    st.iteration + 1, st.nan_skips, cfg.max_nan_skips)
        bound_value = float("nan")
    else:
        outputs.log_fh.flush()
        what = "a distribution parameter" if out is None else ("loss" if not math.isfinite(loss_value) else "gradient")
        raise TrainingDiverged(
            f"{run.out_dir}: {what} became non-finite ({loss_value}) at iteration {st.iteration + 1} "
            f"(seq_len {seq_len}); {run.last_good()}; set train.max_nan_skips to skip bad batches"
        )
    run.scheduler.step()
    st.iteration += 1
    return loss_value, bound_value


def _validate_and_checkpoint(run: _Run, val_ds: Dataset, validate_every: int, stop: int, outputs: _Outputs,
                             t_start: float) -> None:
    """After a step: validate when due (best.pt on improvement, early stopping), then checkpoint.pt when due."""
    cfg, st = run.cfg, run.state
    out_of_time = cfg.max_minutes is not None and time.perf_counter() - t_start >= 60.0 * cfg.max_minutes
    done = st.iteration >= cfg.max_iterations or out_of_time
    validating = st.iteration % validate_every == 0 or done
    if (validating or st.iteration % cfg.checkpoint_every == 0 or st.iteration >= stop) and not _parameters_finite(run.model):
        raise TrainingDiverged(
            f"{run.out_dir}: parameters became non-finite by iteration {st.iteration} "
            f"(train.learning_rate {cfg.learning_rate} too high?); {run.last_good()}"
        )
    if validating:
        improved = _validate(run, val_ds, outputs)
        if run.stopper.should_stop:
            st.stopped_early = st.finished = True
        if done:
            st.finished = True
        st.elapsed = time.perf_counter() - t_start
        if improved:
            ckpt.save_checkpoint(run.best, run.snapshot("best"))
    if st.iteration % cfg.checkpoint_every == 0 or st.finished or st.iteration >= stop:
        st.elapsed = time.perf_counter() - t_start
        ckpt.save_checkpoint(run.latest, run.snapshot("latest"))


def _validate(run: _Run, val_ds: Dataset, outputs: _Outputs) -> bool:
    """The validation bound, recorded by early stopping; returns whether it improved on the best."""
    cfg, it = run.cfg, run.state.iteration
    try:
        score = validation_bound(run.model, val_ds, cfg.batch_size, cfg.particles, run.job.seed, run.device)
    except ValueError as err:  # a distribution refused non-finite parameters: a non-finite score
        if not _is_nonfinite_distribution_error(err):
            raise
        score = float("nan")
    improved = run.stopper.update(score, it)
    log.info("iteration %d: validation bound %.3f (best %s, %d without improvement)",
             it, score, run.stopper.best, run.stopper.bad_count)
    if outputs.writer is not None:
        outputs.writer.add_scalar("validation/iwae_bound", score, it)
    return improved


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="job config YAML (JobConfig: model, seed, train_data, model_config, train)")
    parser.add_argument("--out", required=True, help="job directory (resumes from its checkpoint.pt)")
    parser.add_argument("--device", default=None, help="override the config's device (auto, cpu, cuda)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_train_outputs(config_path: Path, job: JobConfig, out: Path) -> None:
    """Refuse a `--out` whose files would replace an input: the job file, its `train_data` or a plugin.

    Why: a job whose train_data or job file is one of the files training writes in `--out`
    (checkpoint.pt, best.pt, train_log.csv, ...) had that input replaced by a checkpoint or appended
    to with log rows. One exception: the job file may be `--out`'s own config.yaml when rewriting it
    changes no byte (resuming with the config.yaml a run wrote), since that writes over nothing."""
    from rsqair_bench.core.io import check_outputs
    from rsqair_bench.core.job_status import STATUS_FILE

    outputs = {f"--out's {name}": out / name for name in ("config.yaml", LATEST, BEST, LOG_FILE, STATUS_FILE)}
    own_config = out / "config.yaml"
    if own_config.is_file() and config_path.is_file() and os.path.samefile(own_config, config_path) \
            and config_path.read_bytes() == dump_yaml(job).encode():
        outputs.pop("--out's config.yaml")
    inputs = {"the job config": config_path, "train_data": job.train_data,
              **{f"plugin {p}": p for p in job.plugins}}
    check_outputs(inputs, outputs)


def command(args: argparse.Namespace) -> int:
    job = load_config(JobConfig, args.config)
    if args.device:
        job = dataclasses.replace(job, device=args.device)
    check_job(job, f"{args.config}:")  # every range, before --out is touched
    check_train_outputs(Path(args.config), job, Path(args.out))
    with directory_lock(Path(args.out)):  # the runner's lock: one trainer per job directory
        result = train_job(job, Path(args.out), progress=not args.no_progress)
    how = "early-stopped" if result.stopped_early else "finished"
    print(
        f"{result.out_dir}: {how} at iteration {result.iterations}, best validation bound "
        f"{result.best_validation_bound} (iteration {result.best_iteration}), {result.sequences_per_s:.1f} seq/s"
    )
    return 0
