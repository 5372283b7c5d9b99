"""Which throughput figure `run --dry-run` prices a suite with, and the facts of the run it is compared to.

In order: `--throughput FILE` (a `bench --json` file), `--throughput IT_PER_S` (an assumed training
rate at the suite's setting), `--throughput measure` (a few eager training steps timed here, at the
suite's setting), else the committed results/bench/*.json of the suite's device kind that matches it
best: of its architecture when one is, else the closest, whose architecture differences are named
and not scaled. Every figure says where it came from; none is a measurement of the run itself.

Why the default never measures: timing steps means importing torch and training (7 s for
suites/study.yaml on a loaded 2-core machine), for a dry run that should answer at once and change
nothing. torch is imported only inside `measure_throughput`; the device probe (`probe_device_kind`)
uses torch only when the process has already loaded it.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rsqair_bench.config import SuiteConfig
from rsqair_bench.errors import ConfigError
from rsqair_bench.runner.bench_file import BASE_MODEL, MAX_RATE, MIN_RATE, Figure, rate_error, read_bench_file

BENCH_DIR = Path(__file__).resolve().parents[2] / "results" / "bench"  # the committed `bench --json` files
# Evaluation sequences/s per training sequence/s, for an assumed rate (`--throughput IT_PER_S`), which
# gives no evaluation figure: a forward pass without backward or update. The committed CPU files
# measured 2.3-2.7 (eager 2.7 / 2.5, compiled training 2.3).
EVAL_PER_TRAIN_SEQUENCES = 2.5
# Settings a throughput figure must share with the suite to stand for it unscaled: a different
# architecture changes the step's cost by an unknown factor, so a committed file that differs in one
# of these is not used (a measurement is made instead); an explicit --throughput file is used anyway.
ARCHITECTURE = ("n_hidden", "glimpse_size", "max_objects", "z_what")
# How much each other setting counts when choosing among committed files of the right architecture.
MATCH_WEIGHTS = {"compile": 4, "batch": 3, "particles": 3, "threads": 1, "optimizer": 1}
MEASURE_WARMUP = 1  # untimed steps before timing (the first allocates, and compiles when compiled)
MEASURE_STEPS = 2  # timed training steps of a dry-run measurement: enough for hours-scale estimates

MEASURE = "measure"  # `--throughput measure`: time a few steps here


def run_settings(suite: SuiteConfig, workers: int, threads: int | None = None) -> dict[str, Any]:
    """The suite's run in the keys of a bench file's settings (frames: the curriculum's maximum)."""
    mc, tr = suite.model_config, suite.train
    return {
        "batch": tr.batch_size, "particles": tr.particles, "frames": tr.curriculum_max,
        "n_hidden": mc.n_hidden, "glimpse_size": mc.glimpse_size, "max_objects": mc.max_objects,
        "z_what": mc.z_what, "compile": mc.compile, "optimizer": tr.optimizer,
        "threads": threads if threads is not None else job_threads(suite, workers),
    }


def job_threads(suite: SuiteConfig, workers: int) -> int:
    """torch threads per job on a CPU, as the runner sets them (`runner._run_jobs`; torch's default in-process)."""
    cores = os.cpu_count() or 1
    if suite.train.torch_threads:
        return suite.train.torch_threads
    return cores if workers == 1 else max(1, cores // workers)


def differences(figure_settings: dict[str, Any], run: dict[str, Any],
                scaled: tuple[str, ...] = ("batch", "particles", "frames")) -> list[str]:
    """Settings where the figure differs from the run, as 'key FIGURE (run: RUN; scaled|not scaled)'."""
    out = []
    for key, wanted in run.items():
        have = figure_settings.get(key)
        if have is None or have == wanted:
            continue
        how = "scaled" if key in scaled else "not scaled"
        out.append(f"{key} {_show(have)} (run: {_show(wanted)}; {how})")
    return out


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _match_score(figure: Figure, run: dict[str, Any]) -> int:
    return sum(w for key, w in MATCH_WEIGHTS.items() if figure.settings.get(key) == run.get(key))


def best_committed_file(bench_dir: Path, device_kind: str, run: dict[str, Any]) -> Figure | None:
    """The committed bench file for `device_kind` closest to the run: the fewest architecture settings
    that differ (ARCHITECTURE; none, when a file of the suite's architecture exists), then the best match
    of the others (MATCH_WEIGHTS). A file of another architecture carries a caveat saying so.

    Ties go to the first file by name, so the choice does not depend on the directory's order. Files
    that are not bench files (runner/bench_file.py refuses them) are not candidates."""
    best: tuple[tuple[int, int], Figure] | None = None
    for path in sorted(Path(bench_dir).glob("*.json")) if Path(bench_dir).is_dir() else []:
        try:
            figure = read_bench_file(path)
        except ConfigError:
            continue  # not a bench file: not a candidate
        if figure.device_kind != device_kind:
            continue
        other = sum(figure.settings.get(k) != run[k] for k in ARCHITECTURE if figure.settings.get(k) is not None)
        rank = (-other, _match_score(figure, run))
        if best is None or rank > best[0]:
            best = (rank, figure)
    if best is None:
        return None
    figure = best[1]
    if best[0][0] < 0:
        figure.caveat = (f"no committed file has this suite's architecture, so this is the closest one, not scaled "
                         f"for it: the estimate can be off by a large factor (`--throughput {MEASURE}` times "
                         f"{MEASURE_STEPS} steps here instead)")
    return figure


def assumed_figure(rate: float, suite: SuiteConfig, run: dict[str, Any], device_kind: str) -> Figure:
    """An assumed training rate at the suite's own setting (`--throughput IT_PER_S`)."""
    evals = rate * suite.train.batch_size * EVAL_PER_TRAIN_SEQUENCES
    return Figure("assumed", f"--throughput {rate:g} it/s at {run['frames']} frames, on whatever device the run gets "
                  f"(evaluation: {EVAL_PER_TRAIN_SEQUENCES:g}x the training sequences/s)", "not measured", device_kind,
                  dict(run), {BASE_MODEL: rate}, {BASE_MODEL: evals})


def measure_throughput(suite: SuiteConfig, device_name: str, run: dict[str, Any]) -> Figure:
    """A few eager training steps and one evaluation pass of the suite's first model, here, at its setting.

    Eager even when the suite compiles: compiling takes minutes, which a dry run must not. torch is
    imported here and nowhere else in this module."""
    import torch

    from rsqair_bench.core.device import device_description, resolve_device
    from rsqair_bench.registry import build_model, load_plugins
    from rsqair_bench.runner.bench import make_train_step
    from rsqair_bench.training.optim import build_optimizer, optimizer_update

    device = resolve_device(device_name)
    load_plugins(list(suite.plugins))
    model_name = suite.models[0]
    config = replace(suite.model_config, compile=False)
    tr = suite.train
    generator = torch.Generator().manual_seed(0)
    model = build_model(model_name, config).to(device)
    optimizer = build_optimizer(model, tr, False)
    update = optimizer_update(optimizer, False)
    size = config.image_size
    x = (torch.rand(tr.batch_size, tr.curriculum_max, 1, size, size, generator=generator) > 0.92).float().to(device)
    sample_gen = torch.Generator(device=device).manual_seed(0)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step = make_train_step(model, optimizer, update, x, tr.particles, sample_gen)

    old_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(run["threads"])  # the job's own thread count (`job_threads`)
    try:
        for _ in range(MEASURE_WARMUP):
            step()
        sync()
        t0 = time.perf_counter()
        for _ in range(MEASURE_STEPS):
            step()
        sync()
        step_seconds = (time.perf_counter() - t0) / MEASURE_STEPS
        with torch.no_grad():
            t0 = time.perf_counter()
            model(x, tr.particles, sample_gen)
            sync()
            eval_seconds = time.perf_counter() - t0
        settings = dict(run) | {"compile": False, "threads": torch.get_num_threads()}
        description = device_description(device)
    finally:
        torch.set_num_threads(old_threads)
    how = (f"{MEASURE_STEPS} eager training steps of {model_name} here after {MEASURE_WARMUP} warm-up, "
           f"{tr.batch_size} sequences of {tr.curriculum_max} frames (whatever else runs here slows them too)")
    return Figure("measured", how, description, device.type, settings, {model_name: 1.0 / step_seconds},
                  {model_name: tr.batch_size / eval_seconds})


# ----------------------------------------------------------------------------- the device
def probe_device_kind(setting: str) -> tuple[str, str]:
    """(cpu | cuda, a note) for a suite's `device` setting on this machine, without importing torch.

    Why a probe: the dry run must not load torch only to ask whether CUDA exists. When torch is
    already loaded its answer is used; otherwise CUDA is taken to be present when the installed torch
    is not a '+cpu' build and an NVIDIA driver is loaded (/proc/driver/nvidia/version or /dev/nvidia0).
    `run` itself asks torch (`device.check_run_device`)."""
    if setting == "cpu":
        return "cpu", "cpu"
    available = cuda_available_probe()
    if setting == "auto":
        return ("cuda", "auto -> cuda") if available else ("cpu", "auto -> cpu (no CUDA here)")
    return "cuda", setting if available else f"{setting} (no CUDA here: `run` will refuse to start)"


def cuda_available_probe() -> bool:
    """Whether CUDA looks usable here: torch's answer when torch is loaded, else the build and the driver."""
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return False
    if "+cpu" in version:
        return False
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def choose_figure(suite: SuiteConfig, workers: int, throughput: str | None, device_kind: str,
                  bench_dir: Path = BENCH_DIR, can_measure: bool = True) -> Figure | None:
    """The figure the estimate uses: --throughput (a file, a rate, or `measure`), else a committed file.

    None when no committed file is of the suite's device kind. Nothing is measured unless asked:
    `measure` on a machine without the suite's device (`can_measure` False) is a one-line error."""
    run = run_settings(suite, workers)
    if throughput == MEASURE:
        if not can_measure:
            raise ConfigError(f"--throughput {MEASURE}: no {device_kind} on this machine to measure on; pass "
                              "--throughput FILE (a `bench --json` file) or --throughput IT_PER_S")
        figure = measure_throughput(suite, suite.device, run)
    elif throughput is not None:
        try:
            rate = float(throughput)
        except ValueError:
            figure = read_bench_file(Path(throughput))
        else:
            if rate_error(rate):
                raise ConfigError(f"--throughput: expected a bench --json file, `{MEASURE}`, or a training rate "
                                  f"between {MIN_RATE:g} and {MAX_RATE:g} it/s, found {throughput!r}")
            return assumed_figure(rate, suite, run, device_kind)
    else:
        figure = best_committed_file(bench_dir, device_kind, run)
        if figure is None:
            return None
    if figure.device_kind == "cuda" or device_kind == "cuda":
        run = {k: v for k, v in run.items() if k != "threads"}  # CPU threads say nothing about a GPU's rate
    figure.differences = differences(figure.settings, run)
    if figure.device_kind != device_kind:  # only a file given with --throughput can be of another kind
        figure.differences.insert(0, f"device {figure.device} (run: {device_kind}; not scaled)")
    return figure
