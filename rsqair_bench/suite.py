"""Suite-level checks and the expansion of a suite into jobs (model x seed).

`config.py` already rejects unknown keys and wrong types; the checks here need the whole
suite at once (a seed listed twice, an eval split naming a data set the suite does not
define, a model no relation provides). Each error is one line: the suite file, the key
path, what was found and what was expected, e.g. `suites/x.yaml: seeds[2]: duplicated seed 1`.
"""

from __future__ import annotations

import argparse
import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from rsqair_bench.config import (
    DataSetConfig,
    EvalConfig,
    JobConfig,
    SuiteConfig,
    check_eval_config,
    check_eval_split,
    check_model_config,
    check_train_config,
    load_config,
)
from rsqair_bench.data.limits import MAX_FRAMES, MAX_SEQUENCES, MAX_SIZE, MIN_SIZE
from rsqair_bench.errors import ConfigError, RegistryError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_DATA_SUFFIXES = (".h5", ".hdf5")

Fail = Callable[[str, str], None]  # fail(key, message) raises ConfigError naming the suite file and the key


@dataclass
class Job:
    """One (model, seed) unit of work; self-contained and picklable so any executor can run it."""

    suite: str
    model: str
    seed: int
    config: JobConfig
    directory: Path  # results/<suite>/<model>/seed<k>
    eval: EvalConfig = field(default_factory=EvalConfig)
    data_paths: dict[str, str] = field(default_factory=dict)  # data set name -> .h5 path

    @property
    def name(self) -> str:
        return f"{self.model}/seed{self.seed}"

    def split_data_path(self, split_data: str) -> str:
        """An EvalSplit's `data` is a data set name of the suite or a path to an .h5 file."""
        return self.data_paths.get(split_data, split_data)


def validate_suite(suite: SuiteConfig, path: str | Path) -> SuiteConfig:
    """Semantic checks on a parsed suite; raises ConfigError naming `path` and the key. Returns the suite.

    Model names are the registry's rule, devices device.py's, value ranges config.py's `check_*`.
    """
    where = f"{path}:"

    def fail(key: str, message: str) -> None:
        raise ConfigError(f"{where} {key}: {message}")

    if not _NAME.match(suite.name):
        fail("name", f"expected a directory-safe name (letters, digits, _ . + -), found {suite.name!r}")
    _check_models(suite, fail)
    # ranges: the same checks train_job makes, so a suite that validates does not fail at train time
    _check_ranges(suite, where)
    _check_seeds(suite, fail)
    _check_data(suite, fail)
    _check_eval_splits(suite, where, fail)
    _check_where_to_run(suite, fail)
    return suite


def _check_models(suite: SuiteConfig, fail: Fail) -> None:
    from rsqair_bench import registry  # lazy: imports torch; plugins run code

    if not suite.models:
        fail("models", "expected at least one model, found an empty list")
    seen_models: dict[str, int] = {}
    for i, model in enumerate(suite.models):
        if model in seen_models:
            fail(f"models[{i}]", f"duplicated model {model!r} (also models[{seen_models[model]}])")
        seen_models[model] = i
        if not registry.is_model_name(model):
            fail(f"models[{i}]", f"unknown model {model!r} (expected 'sqair' or 'sqair+<relation>')")
    try:
        registry.load_plugins(list(suite.plugins))
        known = registry.model_names()
    except RegistryError as err:
        fail("plugins", str(err))
    for i, model in enumerate(suite.models):
        if model not in known:
            fail(f"models[{i}]", f"unknown model {model!r} (known: {', '.join(sorted(known))})")
    if suite.baseline is not None and suite.baseline not in suite.models:
        fail("baseline", f"expected one of the suite's models ({', '.join(suite.models)}), found {suite.baseline!r}")


def _check_ranges(suite: SuiteConfig, where: str) -> None:
    from rsqair_bench import registry

    check_model_config(suite.model_config, where)
    check_train_config(suite.train, where)
    check_eval_config(suite.eval, where)
    for model in suite.models:
        registry.check_relation_options(model, suite.model_config, suite.plugins, where)


def _check_seeds(suite: SuiteConfig, fail: Fail) -> None:
    if not suite.seeds:
        fail("seeds", "expected at least one seed, found an empty list")
    seen_seeds: set[int] = set()
    for i, seed in enumerate(suite.seeds):
        if seed < 0:
            fail(f"seeds[{i}]", f"expected a non-negative seed, found {seed}")
        if seed in seen_seeds:
            fail(f"seeds[{i}]", f"duplicated seed {seed}")
        seen_seeds.add(seed)


def _check_data(suite: SuiteConfig, fail: Fail) -> None:
    if not suite.data:
        fail("data", "expected at least one data set, found none")
    for name, ds in suite.data.items():
        _check_dataset(name, ds, fail)
    if suite.train_data not in suite.data:
        fail("train_data", f"unknown data set {suite.train_data!r} (defined in data: {', '.join(suite.data)})")
    train_ds = suite.data[suite.train_data]
    for split in ("training", "validation"):
        if split not in train_ds.splits:
            fail(f"data.{suite.train_data}.splits", f"training data needs a {split!r} split, found {sorted(train_ds.splits)}")
    if suite.train.curriculum_max > train_ds.frames:
        fail("train.curriculum_max", f"{suite.train.curriculum_max} frames but data.{suite.train_data} has {train_ds.frames}")


def _check_eval_splits(suite: SuiteConfig, where: str, fail: Fail) -> None:
    for key, sp in suite.eval.splits.items():
        k = f"eval.splits.{key}"
        if sp.data in suite.data:
            ds = suite.data[sp.data]
            if sp.split not in ds.splits:
                fail(f"{k}.split", f"data set {sp.data!r} has no split {sp.split!r} (has: {', '.join(ds.splits)})")
            if sp.frames > ds.frames:
                fail(f"{k}.frames", f"{sp.frames} frames but data.{sp.data} has {ds.frames}")
        elif not sp.data.endswith(_DATA_SUFFIXES):
            fail(f"{k}.data", f"unknown data set {sp.data!r} (expected one of {', '.join(suite.data)} or an .h5 path)")
        check_eval_split(sp, where, k)


def _check_where_to_run(suite: SuiteConfig, fail: Fail) -> None:
    from rsqair_bench.device import DEVICE_NAMES, is_device_name  # lazy: imports torch

    if ".." in PurePath(suite.results).parts:
        fail("results", f"path {suite.results!r} escapes with '..' (expected a directory inside the project or an absolute path)")
    blocker = _file_in_the_way(Path(suite.results) / suite.name)
    if blocker is not None:
        fail("results", f"{str(blocker)!r} is a file, expected a directory (or nothing) at {suite.results!r}/{suite.name}")
    if suite.workers < 1:
        fail("workers", f"expected >= 1, found {suite.workers}")
    if not is_device_name(suite.device):
        fail("device", f"expected {DEVICE_NAMES}, found {suite.device!r}")
    if suite.ray.num_cpus_per_job <= 0:
        fail("ray.num_cpus_per_job", f"expected > 0, found {suite.ray.num_cpus_per_job}")
    if suite.ray.num_gpus_per_job < 0:
        fail("ray.num_gpus_per_job", f"expected >= 0, found {suite.ray.num_gpus_per_job}")


def _file_in_the_way(directory: Path) -> Path | None:
    """The first existing non-directory on the way to `directory` (results: pointing at a file), else None."""
    for candidate in [*reversed(directory.parents), directory]:
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


def _check_dataset(name: str, ds: DataSetConfig, fail: Fail) -> None:
    k = f"data.{name}"
    if "/" in name or name in (".", ".."):
        fail(k, f"data set names must not contain '/', found {name!r}")
    if ds.balls not in ("4", "6-8"):
        fail(f"{k}.balls", f"expected '4' or '6-8', found {ds.balls!r}")
    if not 2 <= ds.frames <= MAX_FRAMES:
        fail(f"{k}.frames", f"expected between 2 and {MAX_FRAMES}, found {ds.frames}")
    if not MIN_SIZE <= ds.size <= MAX_SIZE:
        fail(f"{k}.size", f"expected between {MIN_SIZE} and {MAX_SIZE} pixels, found {ds.size}")
    if not ds.splits:
        fail(f"{k}.splits", "expected at least one split, found none")
    for split, n in ds.splits.items():
        if not 1 <= n <= MAX_SEQUENCES:
            fail(f"{k}.splits.{split}", f"expected between 1 and {MAX_SEQUENCES} sequences, found {n}")


def expand_jobs(suite: SuiteConfig) -> list[Job]:
    """Model x seed jobs in suite order, each with its resolved JobConfig and directory."""
    data_paths = {name: ds.path for name, ds in suite.data.items()}
    root = Path(suite.results) / suite.name
    jobs = []
    for model in suite.models:
        for seed in suite.seeds:
            config = JobConfig(
                model=model,
                seed=seed,
                train_data=data_paths[suite.train_data],
                device=suite.device,
                model_config=copy.deepcopy(suite.model_config),
                train=copy.deepcopy(suite.train),
                plugins=list(suite.plugins),
            )
            jobs.append(
                Job(
                    suite=suite.name,
                    model=model,
                    seed=seed,
                    config=config,
                    directory=root / model / f"seed{seed}",
                    eval=copy.deepcopy(suite.eval),
                    data_paths=dict(data_paths),
                )
            )
    return jobs


# ----------------------------------------------------------------------------- CLI: validate
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="suite YAML file")


def command(args: argparse.Namespace) -> int:
    suite = validate_suite(load_config(SuiteConfig, args.suite), args.suite)
    print(f"{args.suite}: ok ({len(suite.models)} models x {len(suite.seeds)} seeds)")
    return 0
