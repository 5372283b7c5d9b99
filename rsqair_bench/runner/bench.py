"""Throughput: `python -m rsqair_bench bench`.

Measures, per model, training iterations/s and sequences/s (forward + backward + the training
optimizer's step, `training.optim.build_optimizer`), evaluation sequences/s (IWAE bound with `particles`, no
gradients), the relation's own forward+backward time as a share of a training step, peak memory,
and what bounds the step: operator calls per step (torch profiler, every recorded op including
nested ones), FLOP per step (torch.utils.flop_counter, matmuls and convolutions) and the achieved
FLOP/s as a share of the device's fp32 matmul peak, measured in the same run with a large matmul.
Warm-up iterations (and, with `model_config.compile`, the compilation they trigger, reported as
`compile_seconds`) are excluded; on CUDA, timings use CUDA events. Inputs are synthetic sparse
binary frames of the cropped size: throughput depends on shapes, not on content.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rsqair_bench.config import ModelConfig, SuiteConfig, TrainConfig, load_config
from rsqair_bench.core.device import device_description, peak_memory_mb, resolve_device
from rsqair_bench.core.io import atomic_write_text


@dataclass
class BenchSettings:
    batch: int = 32  # paper
    particles: int = 5  # paper
    frames: int = 10  # paper: curriculum maximum
    iterations: int = 3
    warmup: int = 1


@dataclass
class ModelBench:
    model: str
    parameters: int
    relation_parameters: int
    train_iterations_per_s: float
    train_sequences_per_s: float
    eval_sequences_per_s: float
    relation_share: float  # relation forward+backward time / training step time
    peak_memory_mb: float
    op_calls_per_step: int  # profiler events in one training step (forward, backward, optimizer)
    flop_per_step: float  # FlopCounterMode over one training step
    achieved_flop_per_s: float  # flop_per_step / measured step time
    matmul_peak_flop_per_s: float  # large fp32 matmul on the same device, same run
    utilisation: float  # achieved / matmul peak
    compile_seconds: float | None  # first-step time minus a steady step when compiled, else None


class _Timer:
    """Wall-clock timer that synchronises CUDA (events) so asynchronous kernels are counted."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __enter__(self) -> _Timer:
        if self.cuda:
            self.start_event = torch.cuda.Event(enable_timing=True)
            self.end_event = torch.cuda.Event(enable_timing=True)
            self.start_event.record()
        else:
            self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.end_event.record()
            torch.cuda.synchronize()
            self.seconds = self.start_event.elapsed_time(self.end_event) / 1000.0
        else:
            self.seconds = time.perf_counter() - self.start


def synthetic_frames(s: BenchSettings, size: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    x = torch.rand(s.batch, s.frames, 1, size, size, generator=generator) > 0.92
    return x.float().to(device)


def _time_relation(model, s: BenchSettings, k: int, device: torch.device, generator: torch.Generator) -> float:
    """Seconds for the relation's forward+backward over one sequence's propagation steps."""
    relation = model.relation
    n = s.batch * s.particles
    z = torch.randn(n, k, relation.obj_dim, generator=generator).to(device).requires_grad_(True)
    present = (torch.rand(n, k, generator=generator) > 0.3).to(device)
    with _Timer(device) as timer:
        state = relation.initial_state(n, k, device)
        total = 0.0
        for _ in range(s.frames - 1):
            gamma, state = relation(z, present, state)
            total = total + gamma.sum()
        if isinstance(total, torch.Tensor) and total.requires_grad:
            total.backward()
    return timer.seconds


def matmul_peak(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """fp32 FLOP/s of a large square matmul on `device`: the ceiling a step made of matmuls could reach."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        with _Timer(device) as timer:
            a @ b
        best = min(best, timer.seconds)
    return 2.0 * size**3 / best


def count_ops(step) -> int:
    """Operator calls in one call of `step`: every op the profiler records, nested ones included."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return int(sum(event.count for event in prof.key_averages()))


def count_flop(step) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def make_train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, update: Callable[[], Any],
                    x: torch.Tensor, particles: int, generator: torch.Generator) -> Callable[[], None]:
    """One optimisation step on fixed frames x [B, T, 1, H, W], taken as training takes it (forward, zero_grad,
    backward, the optimizer's update): what `bench` and the dry run's throughput measurement time."""

    def step() -> None:
        out = model(x, particles, generator)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        update()

    return step


def bench_model(name: str, config: ModelConfig, s: BenchSettings, device: torch.device, seed: int = 0,
                train_config: TrainConfig | None = None, peak_flop_per_s: float | None = None) -> ModelBench:
    from rsqair_bench.registry import build_model, count_parameters
    from rsqair_bench.training.optim import build_optimizer, optimizer_update

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = build_model(name, config).to(device)
    optimizer = build_optimizer(model, train_config or TrainConfig(), config.compile)
    update = optimizer_update(optimizer, config.compile)
    x = synthetic_frames(s, config.image_size, device, generator)
    sample_gen = torch.Generator(device=device).manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    train_step = make_train_step(model, optimizer, update, x, s.particles, sample_gen)

    with _Timer(device) as first_timer:
        train_step()  # compiles here when model_config.compile is set
    for _ in range(s.warmup - 1):
        train_step()
    with _Timer(device) as train_timer:
        for _ in range(s.iterations):
            train_step()
    step_seconds = train_timer.seconds / s.iterations
    ops = count_ops(train_step)
    flop = count_flop(train_step)
    peak = peak_flop_per_s or matmul_peak(device)

    with torch.no_grad():
        for _ in range(s.warmup):
            model(x, s.particles, sample_gen)
        with _Timer(device) as eval_timer:
            for _ in range(s.iterations):
                model(x, s.particles, sample_gen)
    relation_seconds = _time_relation(model, s, config.max_objects, device, generator)
    return ModelBench(
        model=name,
        parameters=count_parameters(model),
        relation_parameters=count_parameters(model.relation),
        train_iterations_per_s=1.0 / step_seconds,
        train_sequences_per_s=s.batch / step_seconds,
        eval_sequences_per_s=s.batch * s.iterations / eval_timer.seconds,
        relation_share=relation_seconds / step_seconds,
        peak_memory_mb=peak_memory_mb(device),
        op_calls_per_step=ops,
        flop_per_step=flop,
        achieved_flop_per_s=flop / step_seconds,
        matmul_peak_flop_per_s=peak,
        utilisation=flop / step_seconds / peak,
        compile_seconds=max(first_timer.seconds - step_seconds, 0.0) if config.compile else None,
    )


def bench_data_generation(sequences: int, frames: int = 51, size: int = 64, balls: str = "4") -> dict[str, float]:
    """Sequences/s of the full data pipeline (simulate, render, compress, write) into a temp file."""
    import tempfile

    from rsqair_bench.data.h5 import generate_file

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_file(Path(tmp) / "bench.h5", balls, {"test": sequences}, frames, size, seed=0, progress=False)
        seconds = time.perf_counter() - start
    return {"balls": balls, "sequences": sequences, "frames": frames, "size": size, "seconds": seconds,
            "sequences_per_s": sequences / seconds,
            "peak_memory_mb": peak_memory_mb(torch.device("cpu"))}


def format_table(rows: list[ModelBench]) -> str:
    from tabulate import tabulate

    headers = ["model", "params", "relation params", "train it/s", "train seq/s", "eval seq/s",
               "relation share", "peak MB", "ops/step", "GFLOP/step", "GFLOP/s", "of matmul peak", "compile s"]
    body = [[r.model, r.parameters, r.relation_parameters, f"{r.train_iterations_per_s:.3f}",
             f"{r.train_sequences_per_s:.2f}", f"{r.eval_sequences_per_s:.2f}", f"{100 * r.relation_share:.1f}%",
             f"{r.peak_memory_mb:.0f}", r.op_calls_per_step, f"{r.flop_per_step / 1e9:.2f}",
             f"{r.achieved_flop_per_s / 1e9:.1f}", f"{100 * r.utilisation:.1f}%",
             "-" if r.compile_seconds is None else f"{r.compile_seconds:.1f}"] for r in rows]
    return tabulate(body, headers=headers, tablefmt="github")


# ----------------------------------------------------------------------------- CLI
def _eager_without_compiler(config: ModelConfig) -> ModelConfig:
    """`config`, or without compile when inductor has no working C++ compiler (as training falls back):
    one warning, and the results' `settings.compile` says false, so no eager figure passes as compiled."""
    from rsqair_bench.core.compiler import compiler_problem

    problem = compiler_problem()
    if problem is None:
        return config
    logging.getLogger(__name__).warning("--compile / model_config.compile is set but %s: measuring eager", problem)
    return replace(config, compile=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", help="model name (repeatable); default: sqair")
    parser.add_argument("--all", action="store_true", help="every registered model")
    parser.add_argument("--suite", help="measure every model of this suite with its model_config and device")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda[:N] (default: suite's, else auto)")
    parser.add_argument("--batch", type=int, default=BenchSettings.batch)
    parser.add_argument("--particles", type=int, default=BenchSettings.particles)
    parser.add_argument("--frames", type=int, default=BenchSettings.frames)
    parser.add_argument("--iterations", type=int, default=BenchSettings.iterations)
    parser.add_argument("--warmup", type=int, default=BenchSettings.warmup)
    parser.add_argument("--model-max-objects", type=int, default=None, dest="max_objects",
                        help="architecture: object slots the model is built with, which also sets the count "
                             "prior's categories (default: config's, 4); unlike eval --max-objects, which only "
                             "changes the evaluation slots of a trained model")
    parser.add_argument("--n-hidden", type=int, default=None, help="architecture: hidden width (default 256)")
    parser.add_argument("--glimpse-size", type=int, default=None, help="architecture: glimpse side (default 20)")
    parser.add_argument("--compile", action="store_true", help="set model_config.compile (torch.compile)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--data-sequences", type=int, default=256,
                        help="sequences (4 balls, 51 frames, 64x64) for the data generation rate; 0 skips it")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON to this file")


def command(args: argparse.Namespace) -> int:
    from rsqair_bench.errors import ConfigError
    from rsqair_bench.registry import load_plugins, model_names

    config, device_setting, models, train_config = ModelConfig(), "auto", args.model or [], TrainConfig()
    if args.suite:
        from rsqair_bench.runner.suite import validate_suite

        suite = validate_suite(load_config(SuiteConfig, args.suite), args.suite)
        config, device_setting, train_config = suite.model_config, suite.device, suite.train
        models = models or suite.models
    else:
        load_plugins([])
    if args.all:
        models = model_names()
    models = models or ["sqair"]
    for value, name in ((args.batch, "--batch"), (args.particles, "--particles"), (args.frames, "--frames"),
                        (args.iterations, "--iterations"), (args.max_objects, "--model-max-objects"),
                        (args.n_hidden, "--n-hidden"), (args.glimpse_size, "--glimpse-size"), (args.threads, "--threads")):
        if value is not None and value < 1:
            raise ConfigError(f"bench {name}: expected a positive integer, found {value}")
    overrides = {"max_objects": args.max_objects, "n_hidden": args.n_hidden, "glimpse_size": args.glimpse_size,
                 "compile": args.compile or None}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if config.compile:
        config = _eager_without_compiler(config)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = BenchSettings(args.batch, args.particles, args.frames, args.iterations, max(args.warmup, 1))
    device = resolve_device(args.device or device_setting)
    data = bench_data_generation(args.data_sequences) if args.data_sequences > 0 else None
    peak = matmul_peak(device)
    rows = [bench_model(name, config, settings, device, train_config=train_config, peak_flop_per_s=peak)
            for name in models]
    result = {
        "device": device_description(device),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "matmul_peak_flop_per_s": peak,
        "settings": asdict(settings) | {"max_objects": config.max_objects, "z_what": config.z_what,
                                        "n_hidden": config.n_hidden, "glimpse_size": config.glimpse_size,
                                        "compile": config.compile, "optimizer": train_config.optimizer},
        "models": [asdict(r) for r in rows],
        "data_generation": data,
    }
    print(f"device: {result['device']}, torch {torch.__version__}, {result['threads']} threads, "
          f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s, settings: {result['settings']}")
    print(format_table(rows))
    if data:
        print(f"data generation: {data['sequences_per_s']:.1f} sequences/s ({data['balls']} balls, "
              f"{data['frames']} frames, {data['size']}x{data['size']}; peak RSS {data['peak_memory_mb']:.0f} MB)")
    if args.json_path:
        atomic_write_text(Path(args.json_path), json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json_path}")
    return 0
