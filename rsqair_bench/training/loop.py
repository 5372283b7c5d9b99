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

Side effects (train_log.csv, TensorBoard, the bar, status.json, checkpoints) are observers of this
loop (`training/observers.py`); the schedule, windows and validation are pure modules beside it.

`model_config.compile` without a working C++ compiler (core.compiler.compiler_problem, asked before
anything is written) trains eager with one warning and records why (`TrainStats.compile_fallback`).
While the first step compiles, status.json shows the phase `compiling`; its duration is logged
and recorded (`compile_seconds`).

`model_config.precision: bf16` runs each step's forward under bf16 autocast (`_step`; the backward
outside it); weights, gradients and the optimizer's state stay float32, and validation scores in
float32 (docs/sqair.md, "Precision"). The precision is recorded in `TrainStats.precision`.

Determinism: nothing draws from the global RNG. The model is initialised under
`torch.random.fork_rng()` seeded from the job seed (the global state is restored afterwards);
the data order and windows are pure functions of (seed, epoch/iteration) via seeded
torch.Generators, and the model's noise comes from one torch.Generator whose state is
checkpointed, so a run killed at any point and resumed reproduces the uninterrupted losses.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from rsqair_bench import checkpoint as ckpt
from rsqair_bench.config import JobConfig, ModelConfig, check_model_config, check_train_config, dump_yaml
from rsqair_bench.core.compiler import compiler_problem
from rsqair_bench.core.device import resolve_device
from rsqair_bench.core.io import atomic_write_text
from rsqair_bench.core.precision import autocast
from rsqair_bench.core.seeding import derive_seed
from rsqair_bench.data.loader import DatasetFactory, default_dataset_factory
from rsqair_bench.errors import DataError, TrainingDiverged
from rsqair_bench.registry import ModelFactory, count_parameters, default_model_factory
from rsqair_bench.training.checkpointing import Checkpointer
from rsqair_bench.training.csv_log import CsvLog
from rsqair_bench.training.observers import LogRow, Observers, TrainingObserver
from rsqair_bench.training.optim import build_optimizer, build_seeded_model, optimizer_update
from rsqair_bench.training.progress_bar import ProgressBar
from rsqair_bench.training.schedule import EarlyStopping, learning_rate_factor
from rsqair_bench.training.state import TrainData, TrainResult, TrainRun, TrainState, empty_window, job_hash
from rsqair_bench.training.status_file import StatusFile
from rsqair_bench.training.tensorboard_log import TensorBoardLog
from rsqair_bench.training.validation import is_nonfinite_distribution_error, validation_bound
from rsqair_bench.training.windows import WindowBatchSampler, WindowDataset

log = logging.getLogger(__name__)


def train_job(
    job: JobConfig,
    out_dir: Path,
    progress: bool = True,
    model_factory: ModelFactory | None = None,
    dataset_factory: DatasetFactory | None = None,
    max_steps: int | None = None,
    observers: list[TrainingObserver] | None = None,
) -> TrainResult:
    """Train (or resume) one job in `out_dir`; returns when done, early-stopped, or after `max_steps` steps.

    All inputs are checked (config, data, existing checkpoint) before anything in `out_dir` is written.
    `observers` replaces the default ones (`default_observers`: log, TensorBoard, bar, status, checkpoints).
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
    stop = run.cfg.max_iterations if max_steps is None else min(run.cfg.max_iterations, run.state.iteration + max_steps)
    _train_loop(run, data, stop, Observers(default_observers(progress) if observers is None else observers))
    return run.result()


def default_observers(progress: bool) -> list[TrainingObserver]:
    """What a run writes besides its weights, in the order they are notified."""
    return [CsvLog(), TensorBoardLog(), ProgressBar(progress), StatusFile(), Checkpointer()]


def _load_data(job: JobConfig, dataset_factory: DatasetFactory) -> TrainData:
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
    return TrainData(train_base, val_ds, n_train, total_frames)


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
               fallback: str | None = None) -> TrainRun:
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
    return TrainRun(
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


def _resume(run: TrainRun) -> None:
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


def _train_loop(run: TrainRun, data: TrainData, stop: int, observers: Observers) -> None:
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
    observers.on_start(run)
    t_start = time.perf_counter() - st.elapsed
    t_window, window_steps = 0.0, 0  # time and steps since the last log row
    completed = False
    try:
        for x in loader:
            compiling = run.compiled and run.compile_seconds is None  # this run's first step compiles
            if compiling:
                observers.on_compile_start(run)
            t0 = time.perf_counter()
            seq_len, lr = x.shape[1], cfg.learning_rate * learning_rate_factor(st.iteration, cfg)
            loss_value, bound_value = _step(run, x)
            dt = time.perf_counter() - t0
            st.step_seconds += dt
            t_window += dt
            window_steps += 1
            if math.isfinite(bound_value):
                st.window["loss"] += loss_value
                st.window["bound"] += bound_value
                st.window["count"] += 1
            st.elapsed = time.perf_counter() - t_start
            observers.on_step(run, bound_value)
            if compiling:
                run.compile_seconds = dt
                observers.on_compile_end(run, dt)
                log.info("iteration %d: the first compiled step took %.1f s (compilation included)", st.iteration, dt)
            if st.iteration % cfg.log_every == 0:
                observers.on_log(run, _log_row(run, seq_len, lr, window_steps * cfg.batch_size / max(t_window, 1e-9)))
                st.window = empty_window()
                t_window, window_steps = 0.0, 0
            _validate_and_checkpoint(run, data.validation, validate_every, stop, observers, t_start)
            if st.finished:
                break
        completed = True
    finally:
        observers.on_end(run, completed)
        torch.set_num_threads(old_threads)


def _log_row(run: TrainRun, seq_len: int, lr: float, sequences_per_s: float) -> LogRow:
    """The means of the steps since the last row (state.window holds their sums)."""
    st = run.state
    n = max(st.window["count"], 1)
    return LogRow(iteration=st.iteration, seq_len=seq_len, bound=st.window["bound"] / n, loss=st.window["loss"] / n,
                  lr=lr, seconds=st.elapsed, sequences_per_s=sequences_per_s)


def _step(run: TrainRun, x: torch.Tensor) -> tuple[float, float]:
    """One optimisation step -> (loss, bound); a non-finite one is skipped while train.max_nan_skips allows."""
    cfg, st, model, optimizer = run.cfg, run.state, run.model, run.optimizer
    seq_len = x.shape[1]
    x = x.to(run.device, non_blocking=True)  # [B, L, 1, H, W]
    with autocast(run.job.model_config.precision, run.device):  # bf16: the forward only (core/precision.py)
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
    else:  # train_log.csv is flushed after every row: nothing of this run is lost
        what = "a distribution parameter" if out is None else ("loss" if not math.isfinite(loss_value) else "gradient")
        raise TrainingDiverged(
            f"{run.out_dir}: {what} became non-finite ({loss_value}) at iteration {st.iteration + 1} "
            f"(seq_len {seq_len}); {run.last_good()}; set train.max_nan_skips to skip bad batches"
        )
    run.scheduler.step()
    st.iteration += 1
    return loss_value, bound_value


def _validate_and_checkpoint(run: TrainRun, val_ds: Dataset, validate_every: int, stop: int, observers: Observers,
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
        score, improved = _validate(run, val_ds)
        if run.stopper.should_stop:
            st.stopped_early = st.finished = True
        if done:
            st.finished = True
        st.elapsed = time.perf_counter() - t_start
        observers.on_validation(run, score, improved)  # best.pt on improvement (Checkpointer)
    if st.iteration % cfg.checkpoint_every == 0 or st.finished or st.iteration >= stop:
        st.elapsed = time.perf_counter() - t_start
        observers.on_checkpoint(run)  # checkpoint.pt (Checkpointer)


def _validate(run: TrainRun, val_ds: Dataset) -> tuple[float, bool]:
    """The validation bound, recorded by early stopping, and whether it improved on the best."""
    cfg, it = run.cfg, run.state.iteration
    try:
        score = validation_bound(run.model, val_ds, cfg.batch_size, cfg.particles, run.job.seed, run.device)
    except ValueError as err:  # a distribution refused non-finite parameters: a non-finite score
        if not is_nonfinite_distribution_error(err):
            raise
        score = float("nan")
    improved = run.stopper.update(score, it)
    log.info("iteration %d: validation bound %.3f (best %s, %d without improvement)",
             it, score, run.stopper.best, run.stopper.bad_count)
    return score, improved


def _forward_or_none(model: nn.Module, x: torch.Tensor, particles: int, generator: torch.Generator) -> Any:
    """The model's output, or None when a distribution inside it refused non-finite parameters.

    Why: that ValueError (with a tensor dump) is the same event as a non-finite loss, so it must take the
    same path: skipped while train.max_nan_skips allows, else one line and the last good checkpoint kept.
    """
    try:
        return model(x, particles, generator=generator)
    except ValueError as err:
        if not is_nonfinite_distribution_error(err):
            raise
        log.debug("non-finite distribution parameter: %s", str(err).splitlines()[0])
        return None


def _parameters_finite(model: nn.Module) -> bool:
    """All parameters finite: a checkpoint is only written from a model that is."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
