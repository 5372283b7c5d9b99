"""Throughput: `python -m rsqair_bench bench`.

Measures, per model and training variant (`--precision` fp32 / bf16 x `--modes` eager / compiled):
training iterations/s and sequences/s (forward + backward + the training optimizer's step,
`training.optim.build_optimizer`; under bf16 the forward runs in autocast as training runs it,
core/precision.py), the relation's own forward+backward time as a share of a training step, peak
memory, and what bounds the step: operator calls per step (torch profiler, every recorded op
including nested ones) and the achieved FLOP/s as a share of the device's matmul peak in the row's
precision (a large fp32 or bf16 matmul on the same device, measured in the same run).
Per model, once, on an eager float32 build (`model_facts`): parameters, FLOP per step
(torch.utils.flop_counter, matmuls and convolutions: a count of shapes, the same in every precision
and mode) and evaluation sequences/s (IWAE bound with `particles`, no gradients; evaluation runs float32
and eager whatever the training variant, so one figure serves every row of a model).
Warm-up iterations (and, compiled, the compilation they trigger, reported as `compile_seconds`) are
excluded; on CUDA every timing synchronises and uses CUDA events. Inputs are synthetic sparse binary
frames of the cropped size: throughput depends on shapes, not on content. The results record what the
device offers for bf16 (core.precision.bf16_hardware): on a CPU without native bf16 instructions bf16
runs, emulated through fp32, and is not faster.
Bounding the work (a timed session on a borrowed GPU): `--iterations` timed steps per row, `--warmup`,
`--compiled-models` (compile only some models: each compile takes minutes), `--data-sequences 0`. A row
that raises is listed under `failed` and the others still run; `--json` is rewritten after every row.
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
from rsqair_bench.core.io import atomic_write_text, check_writable_dir
from rsqair_bench.core.precision import PRECISIONS, autocast, bf16_hardware

MODES = ("eager", "compiled")  # a training variant's mode: model_config.compile false / true
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # the matmul peak of each precision
# Sides of the square matmuls whose best rate is the peak. Several, because the rate depends on the size
# and not in the same way in each precision (a one-off probe on the development CPU, AVX512-BF16, under
# load: bf16 was fastest at 512, fp32 at 2048). On CUDA larger ones: a 2048 product lasts tens of
# microseconds there, and the tensor cores reach their rate on large products.
PEAK_MATMUL_SIZES = {"cpu": (512, 1024, 2048), "cuda": (2048, 4096, 8192)}


@dataclass
class BenchSettings:
    batch: int = 32  # paper
    particles: int = 5  # paper
    frames: int = 10  # paper: curriculum maximum
    iterations: int = 3
    warmup: int = 1


@dataclass(frozen=True)
class ModelFacts:
    """What does not depend on the training variant: measured once per model (`model_facts`)."""

    parameters: int
    relation_parameters: int
    flop_per_step: float  # FlopCounterMode over one training forward + backward
    eval_sequences_per_s: float  # no gradients, float32, eager: as evaluation runs


@dataclass
class ModelBench:
    model: str
    precision: str  # model_config.precision of the training step: fp32, or bf16 autocast of its forward
    compiled: bool  # the training step ran compiled (model_config.compile)
    parameters: int
    relation_parameters: int
    train_iterations_per_s: float
    train_sequences_per_s: float
    eval_sequences_per_s: float  # evaluation is float32 and eager: the same figure in every row of a model
    relation_share: float  # relation forward+backward time / training step time
    peak_memory_mb: float
    op_calls_per_step: int  # profiler events in one training step (forward, backward, optimizer)
    flop_per_step: float  # FlopCounterMode over one training step
    achieved_flop_per_s: float  # flop_per_step / measured step time
    matmul_peak_flop_per_s: float  # large matmul in this row's precision on the same device, same run
    utilisation: float  # achieved / matmul peak
    compile_seconds: float | None  # first-step time minus a steady step when compiled, else None


class _Timer:
    """Wall-clock timer that counts asynchronous CUDA kernels: on CUDA it synchronises on entry (so no
    earlier work is counted) and times with CUDA events, synchronised before they are read."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def __enter__(self) -> _Timer:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.start_event = torch.cuda.Event(enable_timing=True)
            self.end_event = torch.cuda.Event(enable_timing=True)
            self.start_event.record()
        else:
            self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.end_event.record()
            torch.cuda.synchronize(self.device)
            self.seconds = self.start_event.elapsed_time(self.end_event) / 1000.0
        else:
            self.seconds = time.perf_counter() - self.start


def synthetic_frames(s: BenchSettings, size: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    x = torch.rand(s.batch, s.frames, 1, size, size, generator=generator) > 0.92
    return x.float().to(device)


def _time_relation(model, s: BenchSettings, k: int, device: torch.device, generator: torch.Generator,
                   precision: str = "fp32") -> float:
    """Seconds for the relation's forward (at `precision`, as in a training step) and backward over one
    sequence's propagation steps."""
    relation = model.relation
    n = s.batch * s.particles
    z = torch.randn(n, k, relation.obj_dim, generator=generator).to(device).requires_grad_(True)
    present = (torch.rand(n, k, generator=generator) > 0.3).to(device)
    with _Timer(device) as timer:
        with autocast(precision, device):
            state = relation.initial_state(n, k, device)
            total = 0.0
            for _ in range(s.frames - 1):
                gamma, state = relation(z, present, state)
                total = total + gamma.sum()
        if isinstance(total, torch.Tensor) and total.requires_grad:
            total.backward()
    return timer.seconds


def matmul_peak(device: torch.device, size: int | None = None, repeats: int = 5,
                dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of large square matmuls in `dtype` on `device`, the best over PEAK_MATMUL_SIZES of the device
    type (or of `size` alone): the ceiling a step made of matmuls could reach in that precision."""
    best = 0.0
    for side in (size,) if size else PEAK_MATMUL_SIZES.get(device.type, PEAK_MATMUL_SIZES["cpu"]):
        a = torch.randn(side, side, device=device, dtype=dtype)
        b = torch.randn(side, side, device=device, dtype=dtype)
        a @ b  # warm-up
        for _ in range(repeats):
            with _Timer(device) as timer:
                a @ b
            best = max(best, 2.0 * side**3 / timer.seconds)
    return best


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
                    x: torch.Tensor, particles: int, generator: torch.Generator,
                    precision: str = "fp32") -> Callable[[], None]:
    """One optimisation step on fixed frames x [B, T, 1, H, W], taken as training takes it (the forward
    under `precision`'s autocast, zero_grad, backward, the optimizer's update; training/loop.py `_step`):
    what `bench` and the dry run's throughput measurement time."""

    def step() -> None:
        with autocast(precision, x.device):
            out = model(x, particles, generator)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        update()

    return step


def _build(name: str, config: ModelConfig, device: torch.device, seed: int) -> torch.nn.Module:
    from rsqair_bench.registry import build_model

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return build_model(name, config).to(device)


def model_facts(name: str, config: ModelConfig, s: BenchSettings, device: torch.device, seed: int = 0) -> ModelFacts:
    """Parameters, FLOP per training step and the evaluation rate of `name`, on an eager float32 build:
    evaluation runs so whatever the training variant, and a FLOP count is one of shapes (the dispatch
    mode that counts them never meets a compiled graph or a CUDA graph)."""
    from rsqair_bench.registry import count_parameters

    config = replace(config, compile=False, precision="fp32")
    generator = torch.Generator().manual_seed(seed)
    model = _build(name, config, device, seed)
    x = synthetic_frames(s, config.image_size, device, generator)
    sample_gen = torch.Generator(device=device).manual_seed(seed)
    flop = count_flop(lambda: model(x, s.particles, sample_gen).loss.backward())
    with torch.no_grad():
        for _ in range(s.warmup):
            model(x, s.particles, sample_gen)
        with _Timer(device) as eval_timer:
            for _ in range(s.iterations):
                model(x, s.particles, sample_gen)
    return ModelFacts(count_parameters(model), count_parameters(model.relation), flop,
                      s.batch * s.iterations / eval_timer.seconds)


def bench_model(name: str, config: ModelConfig, s: BenchSettings, device: torch.device, facts: ModelFacts,
                peak_flop_per_s: float, seed: int = 0, train_config: TrainConfig | None = None) -> ModelBench:
    """One training variant of `name`: `config.precision`, compiled when `config.compile`."""
    from rsqair_bench.training.optim import build_optimizer, optimizer_update

    if config.compile:
        # A fresh dynamo cache per compiled row: every row's model shares `SQAIR._frame`'s code object, and
        # past dynamo's recompile limit (8 graphs for one code object) a later row would silently run eager.
        torch._dynamo.reset()
    generator = torch.Generator().manual_seed(seed)
    model = _build(name, config, device, seed)
    optimizer = build_optimizer(model, train_config or TrainConfig(), config.compile)
    update = optimizer_update(optimizer, config.compile)
    x = synthetic_frames(s, config.image_size, device, generator)
    sample_gen = torch.Generator(device=device).manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_step = make_train_step(model, optimizer, update, x, s.particles, sample_gen, config.precision)

    with _Timer(device) as first_timer:
        train_step()  # compiles here when model_config.compile is set
    for _ in range(s.warmup - 1):
        train_step()
    with _Timer(device) as train_timer:
        for _ in range(s.iterations):
            train_step()
    step_seconds = train_timer.seconds / s.iterations
    ops = count_ops(train_step)
    relation_seconds = _time_relation(model, s, config.max_objects, device, generator, config.precision)
    return ModelBench(
        model=name, precision=config.precision, compiled=config.compile, parameters=facts.parameters,
        relation_parameters=facts.relation_parameters, train_iterations_per_s=1.0 / step_seconds,
        train_sequences_per_s=s.batch / step_seconds, eval_sequences_per_s=facts.eval_sequences_per_s,
        relation_share=relation_seconds / step_seconds, peak_memory_mb=peak_memory_mb(device),
        op_calls_per_step=ops, flop_per_step=facts.flop_per_step,
        achieved_flop_per_s=facts.flop_per_step / step_seconds, matmul_peak_flop_per_s=peak_flop_per_s,
        utilisation=facts.flop_per_step / step_seconds / peak_flop_per_s,
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

    headers = ["model", "precision", "mode", "params", "relation params", "train it/s", "train seq/s", "eval seq/s",
               "relation share", "peak MB", "ops/step", "GFLOP/step", "GFLOP/s", "of matmul peak", "compile s"]
    body = [[r.model, r.precision, "compiled" if r.compiled else "eager", r.parameters, r.relation_parameters,
             f"{r.train_iterations_per_s:.3f}", f"{r.train_sequences_per_s:.2f}", f"{r.eval_sequences_per_s:.2f}",
             f"{100 * r.relation_share:.1f}%", f"{r.peak_memory_mb:.0f}", r.op_calls_per_step,
             f"{r.flop_per_step / 1e9:.2f}", f"{r.achieved_flop_per_s / 1e9:.1f}", f"{100 * r.utilisation:.1f}%",
             "-" if r.compile_seconds is None else f"{r.compile_seconds:.1f}"] for r in rows]
    return tabulate(body, headers=headers, tablefmt="github")


# ----------------------------------------------------------------------------- CLI
def _eager_without_compiler(config: ModelConfig) -> ModelConfig:
    """`config`, or without compile when inductor has no working C++ compiler (as training falls back):
    one warning, and the rows say `compiled: false`, so no eager figure passes as compiled."""
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
    parser.add_argument("--iterations", type=int, default=BenchSettings.iterations,
                        help="timed training steps per row (and evaluation passes per model): bounds the work")
    parser.add_argument("--warmup", type=int, default=BenchSettings.warmup,
                        help="untimed steps before them, the first of which compiles (at least 1)")
    parser.add_argument("--model-max-objects", type=int, default=None, dest="max_objects",
                        help="architecture: object slots the model is built with, which also sets the count "
                             "prior's categories (default: config's, 4); unlike eval --max-objects, which only "
                             "changes the evaluation slots of a trained model")
    parser.add_argument("--n-hidden", type=int, default=None, help="architecture: hidden width (default 256)")
    parser.add_argument("--glimpse-size", type=int, default=None, help="architecture: glimpse side (default 20)")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=None,
                        help="training precisions to measure side by side (default: fp32 bf16)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=None,
                        help="eager and/or compiled (torch.compile) training steps (default: compiled when "
                             "--compile or the suite's model_config.compile, else eager)")
    parser.add_argument("--compile", action="store_true", help="the same as --modes compiled")
    parser.add_argument("--compiled-models", nargs="+", default=None, metavar="MODEL",
                        help="measure the compiled mode for these models only (each compile takes minutes)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--data-sequences", type=int, default=256,
                        help="sequences (4 balls, 51 frames, 64x64) for the data generation rate; 0 skips it")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON to this file")


def _configure(args: argparse.Namespace) -> tuple[ModelConfig, str, list[str], TrainConfig]:
    """(model config, device setting, models, train config) from --suite / --model / --all and the overrides."""
    from rsqair_bench.errors import ConfigError
    from rsqair_bench.registry import load_plugins, model_names, parse_model_name

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
    for model in models:
        parse_model_name(model)  # an unknown name is one line before anything is measured
    for value, name in ((args.batch, "--batch"), (args.particles, "--particles"), (args.frames, "--frames"),
                        (args.iterations, "--iterations"), (args.max_objects, "--model-max-objects"),
                        (args.n_hidden, "--n-hidden"), (args.glimpse_size, "--glimpse-size"), (args.threads, "--threads")):
        if value is not None and value < 1:
            raise ConfigError(f"bench {name}: expected a positive integer, found {value}")
    unknown = [m for m in args.compiled_models or [] if m not in models]
    if unknown:
        raise ConfigError(f"bench --compiled-models: {', '.join(unknown)} not among the measured models "
                          f"({', '.join(models)})")
    if args.compile and args.modes:
        raise ConfigError("bench: give --compile or --modes, not both (--compile is --modes compiled)")
    overrides = {"max_objects": args.max_objects, "n_hidden": args.n_hidden, "glimpse_size": args.glimpse_size}
    return replace(config, **{k: v for k, v in overrides.items() if v is not None}), device_setting, models, train_config


def variants(args: argparse.Namespace, config: ModelConfig, models: list[str]) -> list[tuple[str, bool, str]]:
    """The rows to measure, as (model, compiled, precision): model-major, eager before compiled, precisions
    in the order given. Compiled rows are left out where inductor has no C++ compiler (one warning; eager
    rows take their place) and for models outside --compiled-models."""
    modes = args.modes or (["compiled"] if args.compile or config.compile else ["eager"])
    if "compiled" in modes and not _eager_without_compiler(replace(config, compile=True)).compile:
        modes = ["eager"]
    precisions = list(dict.fromkeys(args.precision or PRECISIONS))
    rows = []
    for name in models:
        for mode in (m for m in MODES if m in modes):
            if mode == "compiled" and args.compiled_models and name not in args.compiled_models:
                continue
            rows += [(name, mode == "compiled", precision) for precision in precisions]
    return rows


def command(args: argparse.Namespace) -> int:
    config, device_setting, models, train_config = _configure(args)
    planned = variants(args, config, models)
    if args.json_path:
        check_writable_dir(Path(args.json_path).parent, "bench --json")  # before minutes of measuring
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = BenchSettings(args.batch, args.particles, args.frames, args.iterations, max(args.warmup, 1))
    device = resolve_device(args.device or device_setting)
    data = bench_data_generation(args.data_sequences) if args.data_sequences > 0 else None
    peaks = {p: matmul_peak(device, dtype=DTYPES[p]) for p in dict.fromkeys(["fp32", *(v[2] for v in planned)])}
    result = {
        "device": device_description(device),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "bf16_hardware": bf16_hardware(device),
        "matmul_peak_flop_per_s": peaks["fp32"],  # fp32, as in files written before bf16 was measured
        "matmul_peaks_flop_per_s": peaks,
        "settings": asdict(settings) | {"max_objects": config.max_objects, "z_what": config.z_what,
                                        "n_hidden": config.n_hidden, "glimpse_size": config.glimpse_size,
                                        "optimizer": train_config.optimizer,
                                        "precisions": list(dict.fromkeys(v[2] for v in planned)),
                                        "modes": [m for m in MODES if any(v[1] == (m == "compiled") for v in planned)]},
        "models": [],
        "failed": [],  # rows that raised: model, precision, compiled and the error's first line
        "data_generation": data,
    }
    rows = _measure(planned, config, settings, device, peaks, train_config, result, args.json_path)
    _print_result(result, rows)
    if args.json_path:
        print(f"wrote {args.json_path}")
    return 1 if result["failed"] else 0


def _measure(planned: list[tuple[str, bool, str]], config: ModelConfig, settings: BenchSettings, device: torch.device,
             peaks: dict[str, float], train_config: TrainConfig, result: dict[str, Any],
             json_path: str | None) -> list[ModelBench]:
    """Every planned row, one line each as it is measured; `result` (and the --json file, rewritten after
    each row) collects them. A row that raises is recorded in `failed` and the others still run: a run on a
    borrowed GPU keeps what it measured, also when a compile fails or the machine is taken back mid-way."""
    facts: dict[str, ModelFacts] = {}
    rows: list[ModelBench] = []
    for name, compiled, precision in planned:
        variant = f"{name} {precision} {'compiled' if compiled else 'eager'}"
        try:
            if name not in facts:
                facts[name] = model_facts(name, config, settings, device)
            row = bench_model(name, replace(config, compile=compiled, precision=precision), settings, device,
                              facts[name], peaks[precision], train_config=train_config)
        except Exception as err:  # noqa: BLE001 - inductor, CUDA and OOM errors alike: record, go on
            first = (str(err).strip().splitlines() or [""])[0][:300]
            logging.getLogger(__name__).error("bench %s failed: %s: %s", variant, type(err).__name__, first)
            result["failed"].append({"model": name, "precision": precision, "compiled": compiled,
                                     "error": f"{type(err).__name__}: {first}"})
        else:
            rows.append(row)
            result["models"].append(asdict(row))
            compile_note = "" if row.compile_seconds is None else f", compile {row.compile_seconds:.1f} s"
            print(f"measured {variant}: {row.train_iterations_per_s:.3f} it/s{compile_note}", flush=True)
        if json_path:
            atomic_write_text(Path(json_path), json.dumps(result, indent=2) + "\n")
    return rows


def _print_result(result: dict[str, Any], rows: list[ModelBench]) -> None:
    peaks = ", ".join(f"{p} {v / 1e9:.1f}" for p, v in result["matmul_peaks_flop_per_s"].items())
    print(f"device: {result['device']}, torch {result['torch_version']}, {result['threads']} threads, "
          f"matmul peak GFLOP/s: {peaks}; bf16 hardware: {result['bf16_hardware']}")
    print(f"settings: {result['settings']}")
    print(format_table(rows))
    for failed in result["failed"]:
        print(f"FAILED {failed['model']} {failed['precision']} {'compiled' if failed['compiled'] else 'eager'}: "
              f"{failed['error']}")
    data = result["data_generation"]
    if data:
        print(f"data generation: {data['sequences_per_s']:.1f} sequences/s ({data['balls']} balls, "
              f"{data['frames']} frames, {data['size']}x{data['size']}; peak RSS {data['peak_memory_mb']:.0f} MB)")
