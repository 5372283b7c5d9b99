"""One job (model x seed) of a suite run: `execute_job` trains, evaluates best.pt on every eval
split, writes metrics.json and then DONE, under the job directory's lock; and the checks that tell a
finished job whose evaluation (or training data) changed since (`stale_splits`,
`refuse_changed_training_data`). The same function runs under every executor; its train, eval and
metrics steps are parameters so tests can run it with fake ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rsqair_bench.config import (
    EvalConfig,
    EvalSplit,
    JobConfig,
    dump_yaml,
)
from rsqair_bench.core.io import atomic_write_text, check_writable_dir, directory_lock, read_regular_file
from rsqair_bench.core.job_status import mark_phase
from rsqair_bench.errors import BenchError, ConfigError, LockedError, OutputError
from rsqair_bench.metrics import (
    JOB_LEVEL_KEYS,
    STATES_EVALUATION_VERSION,
    STATES_TRACK,
    TRAIN_KEYS,
    TrainStats,
    evaluation_settings,
    paper_name_or_model,
    write_metrics,
)
from rsqair_bench.runner.suite import Job

log = logging.getLogger(__name__)

# train_fn(job_config, out_dir, progress) -> TrainResult (a dataclass or a dict)
TrainFn = Callable[..., Any]
# eval_fn(checkpoint, data_path, split, eval_cfg, device=..., seed=...) -> one split's metrics dict
EvalFn = Callable[..., dict]
# metrics_fn(job, train_result, splits, path) writes metrics.json
MetricsFn = Callable[["Job", Any, dict, Path], Any]

Status = Literal["done", "skipped", "locked", "failed"]


@dataclass
class JobOutcome:
    name: str  # <model>/seed<k>
    status: Status
    directory: str
    seconds: float = 0.0
    error: str | None = None  # one line; the traceback is in error.txt


# ----------------------------------------------------------------------------- the job function
def _default_train(job: JobConfig, out_dir: Path, progress: bool = True) -> Any:
    if job.states is not None:  # the state-space track (docs/states.md)
        from rsqair_bench.training.states import train_states_job

        return train_states_job(job, out_dir, progress=progress)
    from rsqair_bench.training.loop import train_job  # lazy: keeps `run --dry-run` and the CLI light

    return train_job(job, out_dir, progress=progress)


def _default_eval(
    checkpoint: Path, data_path: str, split: EvalSplit, eval_cfg: EvalConfig, device: str = "auto", seed: int = 0
) -> dict:
    from rsqair_bench.evaluation.evaluate import evaluate_checkpoint

    rollout = rollout_path(checkpoint.parent, split)  # for the report's Figure 3
    return evaluate_checkpoint(checkpoint, data_path, split, eval_cfg, device=device, seed=seed, rollout_path=rollout,
                               knockout=True)


def _default_states_eval(
    checkpoint: Path, data_path: str, split: EvalSplit, eval_cfg: EvalConfig, device: str = "auto", seed: int = 0
) -> dict:
    from rsqair_bench.evaluation.states import evaluate_states

    return evaluate_states(checkpoint, data_path, split, eval_cfg, device=device, seed=seed)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")
_NAME_PART = 60  # characters of one part of a rollout file name


def _name_part(text: str) -> str:
    """`text` as one part of a file name: kept when it is a safe name (a data set name such as `balls4`),
    else its last path component with unsafe characters replaced and a hash of the whole text appended,
    so that two splits never share a file and no part can name a directory."""
    if text and len(text) <= _NAME_PART and not _UNSAFE.search(text) and not text.startswith("."):
        return text
    readable = _UNSAFE.sub("_", text.rsplit("/", 1)[-1]).lstrip(".")[:_NAME_PART - 11]
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def rollout_path(job_dir: Path, split: EvalSplit) -> Path:
    """`JOB/rollout_<data>_<split>.npz`, always a file directly in the job directory.

    Why: the name was `rollout_{split.data}_{split.split}.npz` with the split's data as given, and an eval
    split may name its data by path: `data: ../../x.h5` wrote the rollout outside the results directory,
    and `./data/t4.h5` made folders inside the job directory. Data set names (every committed result's)
    keep the name they had."""
    return Path(job_dir) / f"rollout_{_name_part(split.data)}_{_name_part(split.split)}.npz"


def _default_metrics(job: Job, train_result: Any, splits: dict[str, dict], path: Path) -> dict:
    """Job facts from best.pt (evaluate.job_info_from_checkpoint), training totals from the train result.

    A state-space job's facts all come with its train result (training/states.py), and its file says
    `"track": "states"` (metrics.STATES_TRACK), which selects that track's schema and report."""
    if job.config.states is not None:
        metrics = build_metrics(job, train_result, splits)
        entries = metrics.pop("splits")
        return write_metrics(path, {**metrics, "track": STATES_TRACK}, entries)
    from rsqair_bench.evaluation.evaluate import job_info_from_checkpoint

    info = job_info_from_checkpoint(job.directory / "best.pt", suite=job.suite, device=job.config.device)
    info["train"] = _train_stats(train_result)
    return write_metrics(path, info, splits)


def write_basic_metrics(job: Job, train_result: Any, splits: dict[str, dict], path: Path) -> dict:
    """metrics.json from build_metrics, without reading the checkpoint (for fake or external train steps)."""
    metrics = build_metrics(job, train_result, splits)
    return write_metrics(path, metrics, metrics.pop("splits"))


def _as_dict(result: Any) -> dict[str, Any]:
    """A train result as a mapping: training.state.TrainResult, or a plain dict of the same fields (fakes, external steps)."""
    if result is None:
        return {}
    if isinstance(result, dict):
        return dict(result)
    if dataclasses.is_dataclass(result):
        return dataclasses.asdict(result)
    return dict(vars(result))


def _train_stats(train_result: Any) -> dict[str, Any]:
    """The `train` entry of metrics.json from a train result (the one route training figures take)."""
    tr = _as_dict(train_result)
    return tr.get("train") or TrainStats(**{k: tr.get(k) for k in TRAIN_KEYS}).as_dict()


def _torch_version() -> str:
    try:  # without importing torch (seconds) when the train step did not
        return sys.modules["torch"].__version__ if "torch" in sys.modules else importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_metrics(job: Job, train_result: Any, splits: dict[str, dict]) -> dict[str, Any]:
    """metrics.json for one job (schema: metrics.py, docs/metrics.md).

    Job-level facts come from the train result when it has them, else from an evaluated split
    (evaluation reads the checkpoint), else from the job itself.
    """
    tr = _as_dict(train_result)
    splits = {k: dict(v) for k, v in splits.items()}
    hoisted: dict[str, Any] = {}
    for split_metrics in splits.values():
        for key in JOB_LEVEL_KEYS:
            if key in split_metrics:
                hoisted.setdefault(key, split_metrics.pop(key))

    def pick(key: str, default: Any) -> Any:
        return tr.get(key, hoisted.get(key, default))

    config_hash = hashlib.sha256(dump_yaml(job.config).encode()).hexdigest()[:16]
    return {
        "model": job.model,
        "paper_name": tr.get("paper_name") or hoisted.get("paper_name") or paper_name_or_model(job.model),
        "seed": job.seed,
        "suite": job.suite,
        "config_hash": pick("config_hash", config_hash),
        "checkpoint_iteration": pick("checkpoint_iteration", tr.get("best_iteration")),
        "parameters": pick("parameters", {}),
        "device": pick("device", job.config.device),
        "torch_version": pick("torch_version", _torch_version()),
        "train": _train_stats(train_result),
        "splits": splits,
    }


def execute_job(
    job: Job,
    progress: bool = False,
    train_fn: TrainFn | None = None,
    eval_fn: EvalFn | None = None,
    metrics_fn: MetricsFn | None = None,
) -> JobOutcome:
    """Train, evaluate best.pt on every eval split, write metrics.json, then DONE. Never raises."""
    start = time.perf_counter()
    out = job.directory
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(directory_lock(out))  # the lock `train --out` takes too
        except LockedError:
            return JobOutcome(job.name, "locked", str(out), error="locked by another runner")
        return _execute_locked(job, out, start, progress, train_fn, eval_fn, metrics_fn)


def _execute_locked(job: Job, out: Path, start: float, progress: bool, train_fn: TrainFn | None,
                    eval_fn: EvalFn | None, metrics_fn: MetricsFn | None) -> JobOutcome:
    """execute_job's work, under the job directory's lock."""
    finished = (out / "DONE").exists()
    stale = stale_splits(job) if finished else {}
    if finished and not stale:  # another runner finished it while we waited
        return JobOutcome(job.name, "skipped", str(out))
    try:
        check_job_outputs(job)  # before hours of training or minutes of evaluation, not after
        if finished:  # trained already: evaluate best.pt again where the evaluation changed
            train_result, splits = _reevaluation_inputs(job, stale)
            todo = stale
        else:
            atomic_write_text(out / "config.yaml", dump_yaml(job.config))
            atomic_write_text(out / TRAIN_DATA_FILE, json.dumps(_train_data_identity(job), indent=2) + "\n")
            train_result, splits = (train_fn or _default_train)(job.config, out, progress=progress), {}
            todo = dict.fromkeys(job.eval.splits, "not evaluated")
        mark_phase(out, "evaluating")  # for the live display; no-op without a status file
        for key in todo:
            split = job.eval.splits[key]
            default_eval = _default_eval if job.config.states is None else _default_states_eval
            entry = (eval_fn or default_eval)(
                out / "best.pt", job.split_data_path(split.data), split, job.eval, device=job.config.device, seed=job.seed
            )
            splits[key] = {**entry, "settings": _split_settings(job, key)}
        (metrics_fn or _default_metrics)(job, train_result, splits, out / "metrics.json")
        (out / "error.txt").unlink(missing_ok=True)
        atomic_write_text(out / "DONE", time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
    except BaseException as err:  # noqa: BLE001 - a job's failure is recorded, not propagated
        if isinstance(err, KeyboardInterrupt):
            raise
        try:
            atomic_write_text(out / "error.txt", traceback.format_exc())
        except OutputError as unwritable:  # the outcome still says why the job failed
            log.warning("%s", unwritable)
        line = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        return JobOutcome(job.name, "failed", str(out), time.perf_counter() - start, line)
    return JobOutcome(job.name, "done", str(out), time.perf_counter() - start)


# ----------------------------------------------------------------------------- finished jobs: what is stale
TRAIN_DATA_FILE = "train_data.json"  # the identity of the data a job trained on, written before training
RUNNER_FILES = ("config.yaml", TRAIN_DATA_FILE, "metrics.json", "DONE", "error.txt")  # what the runner writes


def check_job_outputs(job: Job) -> None:
    """Refuse, before any work, a job whose outputs cannot be written: a job directory that takes no new
    files, or a directory where the runner writes a file (metrics.json, DONE, a rollout, ...).

    Why: with `metrics.json` replaced by a directory, a re-evaluation ran every split, replaced the
    rollouts, and only then failed `cannot write (Is a directory)`; `eval --out` is checked first too."""
    out = job.directory
    check_writable_dir(out, f"the job {job.name}")
    names = [*RUNNER_FILES, *(rollout_path(out, split).name for split in job.eval.splits.values())]
    for name in names:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            raise OutputError(f"{path}: is a directory, expected a file the runner writes (or nothing); "
                              "move it away and rerun")


def _split_settings(job: Job, key: str) -> dict[str, Any]:
    """A split entry's `settings` (metrics.evaluation_settings) plus the identity of the file it scores."""
    split = job.eval.splits[key]
    settings = {**evaluation_settings(split, job.eval), "data_checksum": job.data_checksums.get(split.data)}
    if job.config.states is not None:  # the state-space track's evaluation has its own version
        settings.update(track=STATES_TRACK, version=STATES_EVALUATION_VERSION)
    return settings


def _train_data_identity(job: Job) -> dict[str, Any]:
    return {"path": job.config.train_data, "checksum": job.data_checksums.get(job.train_data_name)}


def _read_json(path: Path) -> Any:
    """A small JSON file the runner wrote, or None when it is missing, not a regular file or unreadable."""
    try:
        return json.loads(read_regular_file(path).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None


def stale_splits(job: Job) -> dict[str, str]:
    """For a finished job: eval split key -> why its metrics.json entry no longer answers the suite
    (never evaluated, other settings, another data file, an older evaluation version). {} when none.

    Why: a rerun used to skip finished jobs, so after an edit of `eval:` (samples, frames, a new split)
    or a new evaluation metric, the report showed the old numbers under the new suite. Evaluation is a
    pure function of best.pt, the data and these settings, so `run` evaluates again without retraining."""
    metrics = _read_json(job.directory / "metrics.json")
    entries = metrics.get("splits") if isinstance(metrics, dict) else None
    if not isinstance(entries, dict):
        return dict.fromkeys(job.eval.splits, "no readable metrics.json")
    stale = {}
    for key in job.eval.splits:
        entry = entries.get(key)
        have = entry.get("settings") if isinstance(entry, dict) else None
        want = _split_settings(job, key)
        if not isinstance(entry, dict):
            stale[key] = "not evaluated"
        elif not isinstance(have, dict) or have.get("version") != want["version"]:
            stale[key] = f"evaluated by an older version (now {want['version']})"
        elif have != want:
            changed = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            stale[key] = f"{', '.join(changed)} changed"
    return stale


def _reevaluation_inputs(job: Job, stale: dict[str, str]) -> tuple[dict[str, Any], dict[str, dict]]:
    """The finished job's training facts (its metrics.json's `train` and job-level entries, standing in
    for the train result) and the split entries that stay (current, still in the suite: not in `stale`).

    Training figures missing from metrics.json (unreadable, or nulls an older version wrote after one
    was) are taken from the job's checkpoints (`_training_facts`), never left null when those have them."""
    metrics = _read_json(job.directory / "metrics.json")
    metrics = metrics if isinstance(metrics, dict) else {}
    entries = metrics.get("splits") if isinstance(metrics.get("splits"), dict) else {}
    keep = {k: v for k, v in entries.items() if k in job.eval.splits and k not in stale}
    facts = {k: metrics[k] for k in ("train", *JOB_LEVEL_KEYS) if metrics.get(k) is not None}
    train = facts.get("train")
    if not isinstance(train, dict) or all(v is None for v in train.values()):
        for key, value in _training_facts(job).items():
            if key == "train" or facts.get(key) is None:
                facts[key] = value
    return facts, keep


def _training_facts(job: Job) -> dict[str, Any]:
    """The `train` block (and the parameter counts and config hash) as saved in checkpoint.pt (its last
    save: the end of training), else in best.pt (as of its best validation); {} with a warning when
    neither has them.

    Why: with metrics.json truncated, a re-evaluation wrote `train` all null; the figures were in
    checkpoint.pt (`train_stats`) and nothing read them back."""
    from rsqair_bench.checkpoint import load_checkpoint  # lazy: torch; a re-evaluation loads it anyway

    for name in ("checkpoint.pt", "best.pt"):
        path = job.directory / name
        try:
            state = load_checkpoint(path)
        except BenchError as err:
            log.warning("%s: no training figures from %s (%s)", job.name, path, str(err).splitlines()[0])
            continue
        stats = state.get("train_stats")
        if isinstance(stats, dict) and any(stats.get(k) is not None for k in TRAIN_KEYS):
            log.warning("%s: metrics.json had no training figures; took them from %s", job.name, path)
            facts = {"train": {k: stats.get(k) for k in TRAIN_KEYS}}
            facts.update({k: state[k] for k in ("parameters", "config_hash") if state.get(k) is not None})
            return facts
    log.warning("%s: metrics.json had no training figures and no checkpoint holds them: `train` stays null", job.name)
    return {}


def refuse_changed_training_data(jobs: list[Job], results_dir: Path) -> None:
    """Refuse to reuse a finished job whose training data file is not the one the suite now names.

    Why: the finished-job check compares settings, and the data path stays the same when a file is
    regenerated with another seed; its checksum does not. Jobs from before this record are trusted."""
    changed = []
    for job in jobs:
        saved = _read_json(job.directory / TRAIN_DATA_FILE)
        if not (job.directory / "DONE").exists() or not isinstance(saved, dict) or saved.get("checksum") is None:
            continue  # a job that recorded no checksum (a file without one, before they were taken) is trusted
        now = job.data_checksums.get(job.train_data_name)
        if saved.get("checksum") != now:
            changed.append(f"{job.name} (trained on {saved.get('path')} with checksum {str(saved.get('checksum'))[:12]}, "
                           f"now {str(now)[:12]})")
    if changed:
        raise ConfigError(
            f"{results_dir}: {len(changed)} finished job(s) trained on another data file than the suite's: "
            f"{', '.join(changed)}. Their results would be reported as if trained on this one. To retrain, move "
            f"{results_dir} aside or delete those job directories; to keep them, restore the data file."
        )
