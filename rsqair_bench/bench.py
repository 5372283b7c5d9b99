"""Throughput: `python -m rsqair_bench bench`.

Measures, per model, training iterations/s and sequences/s (forward + backward + optimizer step),
evaluation sequences/s (IWAE bound with `particles`, no gradients), the relation's own
forward+backward time as a share of a training step, and peak memory. Warm-up iterations are
excluded; on CUDA, timings use CUDA events. Inputs are synthetic sparse binary frames of the
cropped size: throughput depends on shapes, not on content.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from rsqair_bench.config import ModelConfig, SuiteConfig, load_config
from rsqair_bench.device import device_description, peak_memory_mb, resolve_device
from rsqair_bench.io import atomic_write_text


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


def bench_model(name: str, config: ModelConfig, s: BenchSettings, device: torch.device, seed: int = 0) -> ModelBench:
    from rsqair_bench.registry import build_model, count_parameters

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = build_model(name, config).to(device)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-5, momentum=0.9)
    x = synthetic_frames(s, config.image_size, device, generator)
    sample_gen = torch.Generator(device=device).manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train_step() -> None:
        out = model(x, s.particles, sample_gen)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    for _ in range(s.warmup):
        train_step()
    with _Timer(device) as train_timer:
        for _ in range(s.iterations):
            train_step()
    step_seconds = train_timer.seconds / s.iterations

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
               "relation share", "peak MB"]
    body = [[r.model, r.parameters, r.relation_parameters, f"{r.train_iterations_per_s:.3f}",
             f"{r.train_sequences_per_s:.2f}", f"{r.eval_sequences_per_s:.2f}", f"{100 * r.relation_share:.1f}%",
             f"{r.peak_memory_mb:.0f}"] for r in rows]
    return tabulate(body, headers=headers, tablefmt="github")


# ----------------------------------------------------------------------------- CLI
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
    parser.add_argument("--max-objects", type=int, default=None, help="object slots (default: config's, 4)")
    parser.add_argument("--data-sequences", type=int, default=256,
                        help="sequences (4 balls, 51 frames, 64x64) for the data generation rate; 0 skips it")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON to this file")


def command(args: argparse.Namespace) -> int:
    from rsqair_bench.errors import ConfigError
    from rsqair_bench.registry import load_plugins, model_names

    config, device_setting, models = ModelConfig(), "auto", args.model or []
    if args.suite:
        from rsqair_bench.suite import validate_suite

        suite = validate_suite(load_config(SuiteConfig, args.suite), args.suite)
        config, device_setting = suite.model_config, suite.device
        models = models or suite.models
    else:
        load_plugins([])
    if args.all:
        models = model_names()
    models = models or ["sqair"]
    if args.max_objects:
        config = replace(config, max_objects=args.max_objects)
    for value, name in ((args.batch, "--batch"), (args.particles, "--particles"), (args.frames, "--frames"),
                        (args.iterations, "--iterations")):
        if value < 1:
            raise ConfigError(f"bench {name}: expected a positive integer, found {value}")
    settings = BenchSettings(args.batch, args.particles, args.frames, args.iterations, max(args.warmup, 0))
    device = resolve_device(args.device or device_setting)
    data = bench_data_generation(args.data_sequences) if args.data_sequences > 0 else None
    rows = [bench_model(name, config, settings, device) for name in models]
    result = {
        "device": device_description(device),
        "torch_version": torch.__version__,
        "settings": asdict(settings) | {"max_objects": config.max_objects, "z_what": config.z_what},
        "models": [asdict(r) for r in rows],
        "data_generation": data,
    }
    print(f"device: {result['device']}, torch {torch.__version__}, settings: {result['settings']}")
    print(format_table(rows))
    if data:
        print(f"data generation: {data['sequences_per_s']:.1f} sequences/s ({data['balls']} balls, "
              f"{data['frames']} frames, {data['size']}x{data['size']}; peak RSS {data['peak_memory_mb']:.0f} MB)")
    if args.json_path:
        atomic_write_text(Path(args.json_path), json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json_path}")
    return 0
