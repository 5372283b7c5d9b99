"""metrics.json: its schema, its one writer (which always validates) and its one reader.

One file per job, `results/<suite>/<model>/seed<k>/metrics.json` (fields: docs/metrics.md). Who fills it:
- the job-level facts come from the checkpoint (`evaluate.job_info_from_checkpoint`, the `eval --out`
  command) or from the runner's job and train result (`runner.job.build_metrics`);
- `train` comes from the train result (`TrainStats`, one route: best.pt is never rewritten for it);
- each `splits` entry is what `evaluate.evaluate_checkpoint` returns for one split.
Whoever fills it, `write_metrics` is the only writer. The report, the significance tests, `report --compare`
and the GIFs read metrics.json only through `collect_metrics` and the grouping helpers below.

No torch here: `report` imports this module and stays light.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsqair_bench.core.io import atomic_write_text
from rsqair_bench.errors import DataError


# ----------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class TrainStats:
    """The `train` entry of metrics.json."""

    iterations: int | None = None
    seconds: float | None = None  # wall time over all (resumed) runs, validation included
    sequences_per_s: float | None = None  # training sequences per second of optimisation steps
    peak_memory_mb: float | None = None
    best_validation_bound: float | None = None
    # model_config.compile (files written before these fields lack them; readers take absent as null):
    compiled: bool | None = None  # the training steps ran compiled
    compile_fallback: str | None = None  # why they ran eager although compile was set (compiler.compiler_problem)
    compile_seconds: float | None = None  # the last (resumed) run's first compiled step, compilation included
    precision: str | None = None  # model_config.precision of the training steps; absent: fp32 (written before it existed)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


TRAIN_KEYS = [f.name for f in dataclasses.fields(TrainStats)]
OPTIONAL_TRAIN_KEYS = ("compiled", "compile_fallback", "compile_seconds", "precision")  # added later: not required when writing
TOP_KEYS = ["model", "paper_name", "seed", "suite", "config_hash", "checkpoint_iteration", "parameters",
            "device", "torch_version", "train"]
SPLIT_KEYS = ["data", "split", "max_objects", "frames", "sequences", "samples", "data_ll", "relational_ll",
              "sequences_with_collision", "iwae_bound", "count_accuracy", "eval_sequences_per_s", "peak_memory_mb",
              "references"]
# keys an evaluation may return per split that belong to the whole job (the runner hoists them to the top)
JOB_LEVEL_KEYS = ("config_hash", "checkpoint_iteration", "parameters", "device", "torch_version", "paper_name")


EVALUATION_VERSION = 4  # bumped when evaluation adds or changes a metric: `run` then re-evaluates finished jobs
# 1: data LL, relational LL, references, matching; 2: + contact groups, relation knock-out, relation output;
# 3: + prior error decomposition at frame T, one-step scores at every frame (`onestep_sequences`);
# 4: + both located by drawn centres (`prior_decomposition_drawn`, `one_step_drawn`)

# The state-space track (docs/states.md): its metrics.json says `"track": "states"`, and each split holds a
# `states` block (evaluation/states.py) instead of the pixel metrics. Its evaluation has its own version.
STATES_TRACK = "states"
STATES_EVALUATION_VERSION = 1  # 1: centre error, log-density, constant velocity per σ; oracle; ball counts
STATES_SPLIT_KEYS = ["data", "split", "max_objects", "frames", "sequences", "states"]
STATES_BLOCK_KEYS = ["history", "balls", "oracle_error_px", "noise"]


def evaluation_settings(split: Any, eval_cfg: Any) -> dict[str, Any]:
    """A split entry's `settings`: everything that decides its numbers besides the checkpoint and the seed
    (the EvalSplit as the suite gave it, the EvalConfig, the evaluation code's version). `run` compares
    it with the suite to find finished jobs whose evaluation is stale (runner.job.stale_splits)."""
    return {"split": dataclasses.asdict(split), "samples": eval_cfg.samples, "particles": eval_cfg.particles,
            "batch_size": eval_cfg.batch_size, "version": EVALUATION_VERSION}


def paper_name_or_model(model: str) -> str:
    """The table name of `model` (`R-SQAIR(IN)`), or `model` itself when the registry does not know it
    (a test fake, a plugin not loaded in this process)."""
    try:
        from rsqair_bench.registry import paper_name  # lazy: imports torch and the baselines

        return paper_name(model)
    except Exception:  # noqa: BLE001 - any registry failure falls back to our name
        return model


def validate_metrics(metrics: dict[str, Any]) -> None:
    """Raise ValueError naming the first missing key of the metrics.json schema."""
    def need(d: Any, keys: list[str], where: str) -> None:
        if not isinstance(d, dict):
            raise ValueError(f"metrics.json: {where} must be a mapping")
        for k in keys:
            if k not in d:
                raise ValueError(f"metrics.json: missing key {where}{k}")

    need(metrics, TOP_KEYS + ["splits"], "")
    need(metrics["parameters"], ["total", "relation"], "parameters.")
    need(metrics["train"], [k for k in TRAIN_KEYS if k not in OPTIONAL_TRAIN_KEYS], "train.")
    if metrics.get("track") == STATES_TRACK:
        for name, entry in metrics["splits"].items():
            need(entry, STATES_SPLIT_KEYS, f"splits.{name}.")
            need(entry["states"], STATES_BLOCK_KEYS, f"splits.{name}.states.")
        return
    for name, entry in metrics["splits"].items():
        need(entry, SPLIT_KEYS, f"splits.{name}.")
        for metric in ("data_ll", "relational_ll"):
            need(entry[metric], ["mean", "std", "per_sample"], f"splits.{name}.{metric}.")
            if len(entry[metric]["per_sample"]) != entry["samples"]:
                raise ValueError(f"metrics.json: splits.{name}.{metric}.per_sample has "
                                 f"{len(entry[metric]['per_sample'])} values, expected samples={entry['samples']}")
        need(entry["iwae_bound"], ["mean", "std"], f"splits.{name}.iwae_bound.")


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


# ----------------------------------------------------------------------------- the writer
def write_metrics(path: Path, job_info: dict[str, Any], splits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Validate against the schema and write metrics.json atomically; returns what was written."""
    from rsqair_bench.metrics_schema import SCHEMA_VERSION

    metrics = {"schema_version": SCHEMA_VERSION, **job_info, "splits": splits}
    metrics["schema_version"] = SCHEMA_VERSION  # this writer's layout, whatever job_info carried
    validate_metrics(metrics)
    metrics = finite_or_none(metrics)
    atomic_write_text(Path(path), json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    return metrics


# ----------------------------------------------------------------------------- the reader
MAIN_SPLITS = ["balls4/test", "balls678/test"]
MODEL_ORDER = ["sqair", "sqair+in", "sqair+rmc"]  # the paper's rows first, then the rest alphabetically
MISSING = "—"  # how every table prints a value no run has


JOB_METRICS = "*/seed*/metrics.json"  # a job's file: <results>/<model>/seed<k>/metrics.json (runner/suite.py)
_SEED_DIR = re.compile(r"^seed(0|[1-9][0-9]*)$")


def _is_job_file(path: Path, results_dir: Path) -> bool:
    parts = path.relative_to(results_dir).parts
    return len(parts) == 3 and parts[0] != "report" and _SEED_DIR.match(parts[1]) is not None


def unpooled_metrics(results_dir: Path) -> list[Path]:
    """The metrics.json files under results_dir that are not a job's (`<model>/seed<k>/metrics.json`) and
    not the report's: a backup copy (`sqair/seed0.bak/`), another suite's directory below this one. The
    report lists them and never reads them."""
    results_dir = Path(results_dir)
    found = []
    for path in sorted(results_dir.rglob("metrics.json")):
        parts = path.relative_to(results_dir).parts
        if parts[0] != "report" and not _is_job_file(path, results_dir):
            found.append(path)
    return found


def collect_metrics(results_dir: Path) -> list[dict[str, Any]]:
    """The metrics.json of every job directly in results_dir (`<model>/seed<k>/metrics.json`), each
    checked against the schema (`metrics_schema.read_metrics`) and given `_dir` = its job directory.

    What is pooled is defined by the layout `run` writes, not by where files happen to be: one file per
    (model, seed), which must name the model and seed of its directory, and one `suite` for them all.
    Why: every metrics.json anywhere below was pooled, so a backup `sqair/seed0.bak/` or another suite's
    job in a subfolder became a sixth seed of SQAIR (`6/5`). Other files are listed (`unpooled_metrics`),
    a file in the wrong job directory or a second suite is one DataError."""
    from rsqair_bench.metrics_schema import read_metrics

    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise DataError(f"{results_dir}: no such results directory")
    found = []
    for path in sorted(results_dir.glob(JOB_METRICS)):
        if not _is_job_file(path, results_dir):
            continue
        metrics = read_metrics(path)  # a regular file, UTF-8 JSON, every field of the schema its type
        where = f"{path.parent.parent.name}/{path.parent.name}"
        if where != f"{metrics['model']}/seed{metrics['seed']}":
            raise DataError(f"{path}: the metrics.json of {metrics['model']}/seed{metrics['seed']} lies in the job "
                            f"directory {where}; expected each job's own file there (a copied or moved file?)")
        metrics["_dir"] = path.parent
        found.append(metrics)
    _check_one_suite(found, results_dir)
    return found


def _check_one_suite(runs: list[dict[str, Any]], results_dir: Path) -> None:
    """One results directory, one suite: DataError naming the suites and a job of each otherwise.

    A suite that extends another and writes into its directory (suites/study_remedies.yaml: `base:
    study.yaml` and no `name:`, so results/study/) carries that suite's name, and passes."""
    suites: dict[Any, list[str]] = defaultdict(list)
    for r in runs:
        suites[r.get("suite")].append(f"{r['model']}/seed{r['seed']}")
    if len(suites) > 1:
        listed = "; ".join(f"{name!r}: {len(jobs)} job(s), e.g. {jobs[0]}" for name, jobs in suites.items())
        raise DataError(f"{results_dir}: jobs of {len(suites)} suites in one results directory ({listed}); expected "
                        "one suite's jobs: move the others to their own suite's directory")


def ordered_models(runs: list[dict]) -> list[str]:
    models = {r["model"] for r in runs}
    return [m for m in MODEL_ORDER if m in models] + sorted(models - set(MODEL_ORDER))


def ordered_splits(runs: list[dict]) -> list[str]:
    found = {s for r in runs for s in r["splits"]}
    return MAIN_SPLITS + sorted(found - set(MAIN_SPLITS))


def by_model(runs: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(runs, key=lambda r: r["seed"]):
        grouped[r["model"]].append(r)
    return grouped


def label(model: str, runs: list[dict]) -> str:
    return runs[0].get("paper_name") or model


def train_precisions(runs: list[dict]) -> str:
    """The training precisions of `runs` (`train.precision`), comma-separated; a file without the field
    counts as fp32: it was written before `model_config.precision` existed, when every run was fp32."""
    return ", ".join(sorted({str((r.get("train") or {}).get("precision") or "fp32") for r in runs}))
