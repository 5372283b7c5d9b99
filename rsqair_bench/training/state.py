"""What one training run holds: the parts built once (`TrainRun`: model, optimizer, schedule, noise
generator), the state that changes every step and that checkpoint.pt carries (`TrainState`), the
splits (`TrainData`) and the result handed to the runner (`TrainResult`). Shared by the loop and
its observers, so it lives apart from both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from rsqair_bench import checkpoint as ckpt
from rsqair_bench.config import JobConfig, TrainConfig, to_dict
from rsqair_bench.core.device import peak_memory_mb
from rsqair_bench.metrics import TRAIN_KEYS, TrainStats
from rsqair_bench.training.schedule import EarlyStopping, curriculum_length

LATEST = "checkpoint.pt"
BEST = "best.pt"


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
    precision: str = "fp32"  # model_config.precision of the training steps (evaluation is float32)

    def train_stats(self) -> dict[str, Any]:
        """The `train` entry of metrics.json."""
        return TrainStats(**{k: getattr(self, k) for k in TRAIN_KEYS}).as_dict()


def job_hash(job: JobConfig) -> str:
    """Identity of a job: every setting except where it runs."""
    data = to_dict(job)
    data.pop("device", None)
    return ckpt.config_hash(data)


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
    window: dict[str, float] = field(default_factory=lambda: empty_window())  # sums since the last log row

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


def empty_window() -> dict[str, float]:
    """The sums of a log row, zero: reset after every train_log.csv row."""
    return {"loss": 0.0, "bound": 0.0, "count": 0}


@dataclass
class TrainData:
    """The splits a run reads, checked against the config before anything is written (`loop._load_data`)."""

    train: Dataset  # whole training sequences; windows are read from them
    validation: Dataset
    n_train: int
    total_frames: int


@dataclass
class TrainRun:
    """The parts of one training run that the loop and its observers share: built once, then only `state` changes."""

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
            compile_seconds=self.compile_seconds, precision=self.job.model_config.precision,
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
