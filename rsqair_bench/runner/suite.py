"""Suite-level checks and the expansion of a suite into jobs (model x seed).

`config.py` already rejects unknown keys and wrong types; the checks here need the whole
suite at once (a seed listed twice, an eval split naming a data set the suite does not
define, a model no relation provides). Each error is one line: the suite file, the key
path, what was found and what was expected, e.g. `suites/x.yaml: seeds[2]: duplicated seed 1`.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from rsqair_bench.config import (
    DataSetConfig,
    EvalConfig,
    EvalSplit,
    JobConfig,
    SuiteConfig,
    check_eval_config,
    check_eval_split,
    check_model_config,
    check_states_config,
    check_train_config,
    estimated_parameters,
    load_config,
)
from rsqair_bench.core.io import dangling_link
from rsqair_bench.core.seeding import effective_seed, seed_error
from rsqair_bench.data.limits import (
    MAX_EVAL_BATCH_BYTES,
    MAX_FRAMES,
    MAX_SEQUENCES,
    MAX_SIZE,
    MEMORY_FRACTION,
    MIN_SIZE,
    available_memory,
    check_memory,
    eval_memory_bytes,
)
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
    train_data_name: str = ""  # the suite's name of the training data set (a key of data_paths)
    data_checksums: dict[str, str | None] = field(default_factory=dict)  # data set name -> file checksum (`run`)

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
    _check_states(suite, where, fail)
    _check_where_to_run(suite, fail)
    return suite


def _check_models(suite: SuiteConfig, fail: Fail) -> None:
    from rsqair_bench import registry  # lazy: plugins run code

    if not suite.models:
        fail("models", "expected at least one model, found an empty list")
    seen_models: dict[str, int] = {}
    for i, model in enumerate(suite.models):
        if model in seen_models:
            fail(f"models[{i}]", f"duplicated model {model!r} (also models[{seen_models[model]}])")
        seen_models[model] = i
        if not registry.is_model_name(model):
            fail(f"models[{i}]", f"unknown model {model!r} (expected 'sqair' or 'sqair+<relation>')")
    if not _relations_statically_valid(suite):  # else the relations' files need no import (nor torch)
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


def _relations_statically_valid(suite: SuiteConfig) -> bool:
    """Every model and relation option of `suite` is fine by the text of `baselines/` (registry.statically_valid)."""
    from rsqair_bench import registry

    return registry.statically_valid(list(suite.models), dict(suite.model_config.relation_options), list(suite.plugins))


def _check_ranges(suite: SuiteConfig, where: str) -> None:
    from rsqair_bench import registry

    check_model_config(suite.model_config, where)
    check_train_config(suite.train, where)
    check_eval_config(suite.eval, where)
    _check_model_memory(suite, where)
    if _relations_statically_valid(suite):
        return
    for model in suite.models:
        registry.check_relation_options(model, suite.model_config, suite.plugins, where)


TRAINING_STATE_BYTES_PER_PARAMETER = 16  # float32 weights, gradients and Adam's two moments


def _check_model_memory(suite: SuiteConfig, where: str) -> None:
    """The model's training state (config.estimated_parameters x 16 bytes) against this machine's memory
    on the CPU, before any job builds it; a GPU, which `validate` does not query, is bounded by
    config.MAX_MODEL_PARAMETERS alone (check_model_config)."""
    if suite.device != "cpu":
        return
    count = estimated_parameters(suite.model_config)
    try:
        check_memory(count * TRAINING_STATE_BYTES_PER_PARAMETER,
                     f"the model's training state (about {count:.2g} parameters: weights, gradients, optimizer moments)",
                     "lower model_config.n_hidden or glimpse_size")
    except ConfigError as err:
        raise ConfigError(f"{where} model_config.n_hidden: {err}") from None


def _check_seeds(suite: SuiteConfig, fail: Fail) -> None:
    if not suite.seeds:
        fail("seeds", "expected at least one seed, found an empty list")
    seen_seeds: dict[int, int] = {}  # effective seed -> its first index
    for i, seed in enumerate(suite.seeds):
        problem = seed_error(seed)
        if problem:
            fail(f"seeds[{i}]", problem)
        first = seen_seeds.setdefault(effective_seed(seed), i)
        if first != i:  # compared as the random streams see them (seeding.effective_seed)
            fail(f"seeds[{i}]", f"duplicated seed {seed}")


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
    _check_data_fits_the_jobs(suite, fail)
    _check_shared_paths(suite, fail)


def _check_data_fits_the_jobs(suite: SuiteConfig, fail: Fail) -> None:
    """What every job would fail on at run time, known from the suite alone (issue: `validate` said ok,
    then each job failed): frames smaller than the model's crop, a batch larger than the training set."""
    crop = suite.model_config.image_size
    used = [suite.train_data] + [sp.data for sp in suite.eval.splits.values() if sp.data in suite.data]
    for name in dict.fromkeys(used):
        size = suite.data[name].size
        if size < crop:
            fail(f"data.{name}.size", f"{size} pixels, smaller than the {crop}x{crop} crop the model reads "
                                      f"(model_config.image_size); expected >= {crop}")
    training = suite.data[suite.train_data].splits["training"]
    if suite.train.batch_size > training:
        fail("train.batch_size", f"{suite.train.batch_size} but data.{suite.train_data}.splits.training has "
                                 f"{training} sequences; expected at most {training}")


_GENERATED = ("balls", "frames", "size", "seed", "splits")  # what decides a generated file's content


def _check_shared_paths(suite: SuiteConfig, fail: Fail) -> None:
    """Two data sets with one `path` must describe one file: otherwise the first generated wins and the
    other is refused (or, for a file from elsewhere, silently read) at run time."""
    seen: dict[Path, str] = {}
    for name, ds in suite.data.items():
        key = Path(ds.path).expanduser().resolve()
        other = seen.setdefault(key, name)
        if other == name:
            continue
        first = suite.data[other]
        for field_name in _GENERATED:
            if getattr(first, field_name) != getattr(ds, field_name):
                fail(f"data.{name}.path", f"{ds.path!r} is also data.{other}.path, but {field_name} differs "
                                          f"({getattr(ds, field_name)!r} vs {getattr(first, field_name)!r}); "
                                          "expected one path per data set")


def _check_eval_splits(suite: SuiteConfig, where: str, fail: Fail) -> None:
    if not suite.eval.splits:
        fail("eval.splits", "expected at least one evaluation split, found none (the jobs would train and never be scored)")
    for key, sp in suite.eval.splits.items():
        k = f"eval.splits.{key}"
        if sp.data in suite.data:
            ds = suite.data[sp.data]
            if sp.split not in ds.splits:
                fail(f"{k}.split", f"data set {sp.data!r} has no split {sp.split!r} (has: {', '.join(ds.splits)})")
            if sp.frames > ds.frames:
                fail(f"{k}.frames", f"{sp.frames} frames but data.{sp.data} has {ds.frames}")
            held = ds.splits.get(sp.split)
            if sp.onestep_sequences is not None and held is not None and sp.onestep_sequences > held:
                fail(f"{k}.onestep_sequences", f"{sp.onestep_sequences} sequences but data.{sp.data}.splits."
                                               f"{sp.split} has {held}; expected at most {held}")
        elif not sp.data.endswith(_DATA_SUFFIXES):
            fail(f"{k}.data", f"unknown data set {sp.data!r} (expected one of {', '.join(suite.data)} or an .h5 path)")
        check_eval_split(sp, where, k)
        _check_eval_memory(suite, k, sp, fail)


def _check_states(suite: SuiteConfig, where: str, fail: Fail) -> None:
    """The state-space track (docs/states.md): its settings' ranges, and frames left to predict after the
    input history in the training data and in every evaluated split."""
    if suite.states is None:
        return
    check_states_config(suite.states, suite.model_config, where)
    history = suite.states.history
    if suite.data[suite.train_data].frames <= history:
        fail(f"data.{suite.train_data}.frames", f"{suite.data[suite.train_data].frames} frames, expected more than "
                                                f"states.history {history} (frames t > history are predicted)")
    for key, sp in suite.eval.splits.items():
        if sp.frames <= history:
            fail(f"eval.splits.{key}.frames", f"{sp.frames}, expected more than states.history {history}")


def _check_eval_memory(suite: SuiteConfig, key: str, sp: EvalSplit, fail: Fail) -> None:
    """The memory of one evaluation batch, estimated as `eval` does (limits.eval_memory_bytes), so that
    `eval.samples: 10**9` is refused now and not after all training. On the CPU the bound is this
    machine's memory (as `eval` checks it); for a GPU, which this check does not query, a bound no
    device reaches; `eval` checks the device's free memory again before the first batch."""
    ds = suite.data.get(sp.data)
    n = sp.sequences if sp.sequences is not None else (ds.splits.get(sp.split) if ds is not None else None)
    batch = min(suite.eval.batch_size, n) if n else suite.eval.batch_size
    slots = sp.max_objects if sp.max_objects is not None else suite.model_config.max_objects
    cfg = suite.eval
    need = eval_memory_bytes(batch, cfg.samples, cfg.particles, sp.frames, suite.model_config.image_size, slots)
    available = available_memory() if suite.device == "cpu" else MAX_EVAL_BATCH_BYTES / MEMORY_FRACTION
    try:
        check_memory(need, f"one evaluation batch ({batch} sequences x {max(cfg.samples, cfg.particles)} "
                           f"samples/particles x {sp.frames} frames x {slots} object slots)",
                     "lower eval.samples, eval.particles or eval.batch_size", available=available)
    except ConfigError as err:
        fail(key, str(err))


def _check_where_to_run(suite: SuiteConfig, fail: Fail) -> None:
    from rsqair_bench.core.device import DEVICE_NAMES, is_device_name

    if ".." in PurePath(suite.results).parts:
        fail("results", f"path {suite.results!r} escapes with '..' (expected a directory inside the project or an absolute path)")
    system = _system_directory(Path(suite.results))
    if system is not None:
        fail("results", f"{suite.results!r} is {system}; expected a directory of your own (e.g. results)")
    dangling = dangling_link(Path(suite.results) / suite.name)
    if dangling is not None:
        fail("results", f"{str(dangling)!r} is a symbolic link to {os.readlink(dangling)!r}, which does not exist; "
                        "expected a directory (or nothing)")
    blocker = _file_in_the_way(Path(suite.results) / suite.name)
    if blocker is not None:
        fail("results", f"{str(blocker)!r} is a file, expected a directory (or nothing) at {suite.results!r}/{suite.name}")
    if suite.workers < 1:
        fail("workers", f"expected >= 1, found {suite.workers}")
    if not is_device_name(suite.device):
        fail("device", f"expected {DEVICE_NAMES}, found {suite.device!r}")
    if not (0 < suite.ray.num_cpus_per_job < math.inf):
        fail("ray.num_cpus_per_job", f"expected a finite number > 0, found {suite.ray.num_cpus_per_job}")
    if not (0 <= suite.ray.num_gpus_per_job < math.inf):
        fail("ray.num_gpus_per_job", f"expected a finite number >= 0, found {suite.ray.num_gpus_per_job}")


_PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")  # nothing below these is a place for results
_SYSTEM_DIRECTORIES = ("/bin", "/boot", "/etc", "/lib", "/lib32", "/lib64", "/sbin", "/usr", "/var", "/run")


def _system_directory(results: Path) -> str | None:
    """What `results` is when it is the filesystem root or a system directory (`results: /proc`), else None.

    Why: such a suite validated, and `run` would have made <results>/<suite>/ there (or failed deep in
    the first job)."""
    resolved = results.expanduser().resolve()
    if resolved == Path(resolved.anchor):
        return "the filesystem root"
    text = resolved.as_posix()
    for top in _PSEUDO_FILESYSTEMS:
        if text == top or text.startswith(top + "/"):
            return f"inside the system's {top} filesystem"
    if text in _SYSTEM_DIRECTORIES:
        return "a system directory"
    return None


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
    dangling = dangling_link(Path(ds.path).parent)
    if dangling is not None:
        fail(f"{k}.path", f"{str(dangling)!r} is a symbolic link to {os.readlink(dangling)!r}, which does not exist; "
                          "expected a folder or a link to one (remove the link, or create its target)")


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
                states=copy.deepcopy(suite.states),
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
                    train_data_name=suite.train_data,
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
