"""Reading a `bench --json` file as a throughput figure, every value checked before the cost uses it.

Why a module of its own: the dry run reads such files from the user (`--throughput FILE`) and from
results/bench/ on every default run, and each value it reads ends up a divisor (a rate, a batch, a
frame count). A file that is not one, a FIFO, a device, a rate of 0, inf or 1e308, a batch of 0 or
of the wrong type, once ended in a hang or a traceback; here it is one line naming the file and the
key. No torch: the dry run stays light.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsqair_bench.errors import ConfigError, found

BASE_MODEL = "sqair"  # whose figure stands in for a model a bench file does not list
BENCH_FILE_LIMIT = 2**20  # bytes: a bench file is a few kilobytes
# Rates a figure may have, in training iterations/s and evaluation sequences/s: wider than any CPU or
# GPU run of this model (0.5 it/s paper-size eager on one core, about 5 it/s guessed for one GPU), narrow
# enough that an hour count stays a readable number and never overflows.
MIN_RATE, MAX_RATE = 1e-6, 1e6
MAX_SETTING = 10**9  # an integer setting (batch, frames, ...) above this is not a measurement
INT_SETTINGS = ("batch", "particles", "frames", "max_objects", "n_hidden", "glimpse_size", "z_what")
PRECISIONS = ("fp32", "bf16")  # a row's `precision` (config.ModelConfig.precision; core/precision.py imports torch)


@dataclass
class Figure:
    """A throughput figure and where it came from.

    `settings` holds the keys of a `bench --json` file's settings (batch, particles, frames,
    n_hidden, glimpse_size, max_objects, z_what, optimizer), `threads`, and the training variant's
    `precision` and `compile`; the rates are per model at those settings.
    """

    kind: str  # "from file" | "measured" | "assumed"
    source: str  # the file, or how it was measured or assumed
    device: str  # the figure's device, as bench writes it
    device_kind: str  # cpu | cuda: what the figure stands for
    settings: dict[str, Any]
    train_iterations_per_s: dict[str, float]
    eval_sequences_per_s: dict[str, float]
    differences: list[str] = field(default_factory=list)  # settings that differ from the suite's run
    caveat: str = ""  # said after the differences (a figure of another architecture)

    def rates(self, model: str) -> tuple[float, float, bool]:
        """(train it/s, eval sequences/s, whether the figure is this model's own) for `model`."""
        name = model if model in self.train_iterations_per_s else self.stand_in()
        return self.train_iterations_per_s[name], self.eval_sequences_per_s[name], name == model

    def stand_in(self) -> str:
        """The model whose figure stands in for one the figure lacks: sqair, else the first listed."""
        return BASE_MODEL if BASE_MODEL in self.train_iterations_per_s else next(iter(self.train_iterations_per_s))


def rate_error(value: Any) -> str | None:
    """Why `value` is not a usable rate (a finite number in [MIN_RATE, MAX_RATE]), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number, found {type(value).__name__} {value!r}"
    if not (math.isfinite(value) and MIN_RATE <= value <= MAX_RATE):
        return f"expected a finite rate between {MIN_RATE:g} and {MAX_RATE:g}, found {value!r}"
    return None


def read_bench_figures(path: Path) -> list[Figure]:
    """Every training variant of a `bench --json` file, one Figure per (precision, mode) of its rows, in the
    file's order; a file that is not one is a one-line ConfigError.

    Why per variant: bench measures fp32 and bf16, eager and compiled, side by side in one file, and bf16's
    gain over fp32 ranges from none to several-fold with the step's size and the device. A file written
    before bench measured bf16 has rows without `precision` and `compiled`: fp32, in its settings' mode.
    Read through `io.read_regular_file` (a FIFO or /dev/zero is refused at once, not read)."""
    from rsqair_bench.core.io import read_regular_file

    where = f"--throughput {path}"
    try:
        doc = json.loads(read_regular_file(path, BENCH_FILE_LIMIT))
    except OSError as err:
        raise ConfigError(f"{where}: cannot read it ({err.strerror or err})") from None
    except (ValueError, RecursionError) as err:
        raise ConfigError(f"{where}: not a `bench --json` file ({type(err).__name__}: {err})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: not a `bench --json` file (expected a mapping, found {type(doc).__name__})")
    settings = _checked_settings(doc, where)
    groups = _checked_models(doc, where, settings.get("compile", False))
    device = doc.get("device")
    if not isinstance(device, str):
        raise ConfigError(f"{where}: not a `bench --json` file (device: expected a string, found {found(device)})")
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return [Figure("from file", str(path), device, kind, settings | {"precision": precision, "compile": compiled},
                   train, evals) for (precision, compiled), (train, evals) in groups.items()]


def read_bench_file(path: Path) -> Figure:
    """The first training variant of a `bench --json` file (`read_bench_figures`); the dry run picks among
    all of them (runner/throughput.py `best_variant`)."""
    return read_bench_figures(path)[0]


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SETTING


def _checked_settings(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """The file's settings and threads, each of the type bench writes (the cost divides by several)."""
    settings = doc.get("settings")
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: not a `bench --json` file (settings: expected a mapping, found {found(settings)})")
    for key in INT_SETTINGS:
        if key in settings and not _positive_int(settings[key]):
            raise ConfigError(f"{where}: settings.{key}: expected an integer between 1 and {MAX_SETTING:,}, "
                              f"found {found(settings[key])}")
    if "compile" in settings and not isinstance(settings["compile"], bool):
        raise ConfigError(f"{where}: settings.compile: expected true or false, found {found(settings['compile'])}")
    if "optimizer" in settings and not isinstance(settings["optimizer"], str):
        raise ConfigError(f"{where}: settings.optimizer: expected a string, found {found(settings['optimizer'])}")
    threads = doc.get("threads")
    if threads is not None and not _positive_int(threads):
        raise ConfigError(f"{where}: threads: expected an integer >= 1 or null, found {found(threads)}")
    # `precisions` and `modes` list what the file measured; each figure gets its own variant's instead
    return {k: v for k, v in settings.items() if k not in ("precisions", "modes")} | {"threads": threads}


Rates = dict[str, float]


def _checked_models(doc: dict[str, Any], where: str, compile_setting: bool) -> dict[tuple[str, bool], tuple[Rates, Rates]]:
    """Per training variant (precision, compiled), per model: training iterations/s and evaluation
    sequences/s, each a finite rate in range; a row without the variant's keys is fp32 in `compile_setting`'s mode."""
    models = doc.get("models")
    if not isinstance(models, list):
        raise ConfigError(f"{where}: not a `bench --json` file (models: expected a list, found {found(models)})")
    if not models:
        raise ConfigError(f"{where}: models: expected positive rates for at least one model, found none")
    groups: dict[tuple[str, bool], tuple[Rates, Rates]] = {}
    for i, entry in enumerate(models):
        name = entry.get("model") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise ConfigError(f"{where}: models[{i}].model: expected a model name, found {found(name)}")
        precision, compiled = entry.get("precision", "fp32"), entry.get("compiled", compile_setting)
        if precision not in PRECISIONS:
            raise ConfigError(f"{where}: models[{i}].precision: expected one of {', '.join(PRECISIONS)}, "
                              f"found {found(precision)}")
        if not isinstance(compiled, bool):
            raise ConfigError(f"{where}: models[{i}].compiled: expected true or false, found {found(compiled)}")
        train, evals = groups.setdefault((precision, compiled), ({}, {}))
        for key, into in (("train_iterations_per_s", train), ("eval_sequences_per_s", evals)):
            problem = rate_error(entry.get(key))
            if problem:
                raise ConfigError(f"{where}: models[{i}].{key}: {problem}")
            into[name] = float(entry[key])
    return groups
