"""`report A B --compare`: two results directories side by side (a CPU and a GPU run, before and after a change).

Per model, split and metric present in both: A's and B's seed-level means, the difference
B - A with a bootstrap CI, and Welch's test between the two sets of seeds, Holm-corrected
over the table (the same statistics as significance.md; docs/metrics.md says why). The two
runs are different trainings, so their seeds are independent samples even when the seed
numbers match. Throughput comes as B / A ratios with each side's device named, since a
speed-up means nothing without knowing what ran.

Its first section is a verdict, per model and split and overall: is B the same as A within the
seed spread (`report/spread.py`; a rerun on another CPU should be, docs/reproducibility.md)? The
overall `Verdict: ...` line is also printed last.

Writes <out>/compare.md, compare.csv and compare_throughput.csv (default out: A/report/compare).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rsqair_bench import metrics
from rsqair_bench.core.io import atomic_write_text, owned_directory
from rsqair_bench.errors import ConfigError, DataError
from rsqair_bench.report import significance
from rsqair_bench.report.failures import Failure, collect_failures
from rsqair_bench.report.pooling import unpooled_note
from rsqair_bench.report.spread import SpreadRow, verdict_lines
from rsqair_bench.report.textfmt import fixed, markdown_name, markdown_table


def _ordered_union(a: list[str], b: list[str]) -> list[str]:
    return list(dict.fromkeys(a + b))


def _summary(means: list[float]) -> str:
    if not means:
        return metrics.MISSING
    std = float(np.std(means, ddof=1)) if len(means) > 1 else 0.0
    return f"{fixed(float(np.mean(means)))} ± {fixed(std)} ({len(means)})"


NOT_COMPARABLE = "not comparable"
# what decides a split's numbers besides the weights: A and B must agree on each (issue: B - A was
# printed for splits that shared a name but had other frames, data files, samples or suites)
_SPLIT_FACTS = (("frames", "frames"), ("data", "data file"), ("samples", "samples"), ("sequences", "sequences"))


def _facts(runs: list[dict[str, Any]], split: str, key: str) -> list[str]:
    values = set()
    for r in runs:
        entry = r["splits"].get(split)
        if entry is not None:
            value = entry.get(key)
            values.add(Path(value).name if key == "data" and isinstance(value, str) else value)
    return sorted(str(v) for v in values)


def not_comparable(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]], split: str | None = None) -> str:
    """Why one model's split (or, without `split`, its runs) cannot be compared between A and B: the
    settings that differ, e.g. `frames 6 vs 10; suite quick vs learn`; "" when nothing does."""
    reasons = []
    suites = [sorted({str(r.get("suite")) for r in runs}) for runs in (runs_a, runs_b)]
    if suites[0] != suites[1]:
        reasons.append(f"suite {', '.join(suites[0])} vs {', '.join(suites[1])}")
    for key, name in _SPLIT_FACTS if split is not None else ():
        a, b = _facts(runs_a, split, key), _facts(runs_b, split, key)
        if a and b and (a != b or len(a) > 1):  # also a side whose own seeds differ (pooling.py)
            reasons.append(f"{name} {', '.join(a)} vs {', '.join(b)}")
    return "; ".join(reasons)


def metrics_table(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (model, split, metric) both sides have. A row whose split was evaluated differently
    (not_comparable) keeps its A and B columns but gets no difference and no test, and a `note` says why."""
    by_a, by_b = metrics.by_model(runs_a), metrics.by_model(runs_b)
    both = _ordered_union(metrics.ordered_models(runs_a), metrics.ordered_models(runs_b))
    models = [m for m in both if m in by_a and m in by_b]
    splits = _ordered_union(metrics.ordered_splits(runs_a), metrics.ordered_splits(runs_b))
    rows: list[tuple[dict[str, str], Any, str, int, int]] = []  # labels, Comparison (None: untested), reason, seeds
    sides = []
    for model in models:
        label = metrics.label(model, by_a[model])
        for split in splits:
            reason = not_comparable(by_a[model], by_b[model], split)
            for metric in significance.metrics_to_test(by_a[model] + by_b[model], split):
                a = list(significance.seed_means(by_a[model], split, metric).values())
                b = list(significance.seed_means(by_b[model], split, metric).values())
                if a and b:
                    labels = {"model": label, "split": split, "metric": significance.metric_label(metric)}
                    rows.append((labels, None if reason else significance.compare(a, b), reason or "", len(a), len(b)))
                    sides.append((_summary(a), _summary(b)))
    tested = significance.comparison_rows([(labels, c) for labels, c, *_ in rows if c is not None])
    table = tested
    if any(c is None for _, c, *_ in rows):  # put the untested rows back in their places, each with its reason
        columns = list(tested.columns) or ["model", "split", "metric", "seeds", "difference"]
        done = iter(tested.to_dict("records"))
        records = []
        for labels, c, reason, n_a, n_b in rows:
            if c is not None:
                records.append({**next(done), "note": ""})
                continue
            blank = {col: "n/a" for col in columns if col not in labels}
            blank["significant"] = ""
            records.append({**blank, **labels, "seeds": f"{n_b} vs {n_a}", "difference": NOT_COMPARABLE,
                            "note": f"{NOT_COMPARABLE}: {reason}"})
        table = pd.DataFrame(records, columns=[*columns, "note"])
    if len(table):
        table.insert(3, "A (seeds)", [a for a, _ in sides])
        table.insert(4, "B (seeds)", [b for _, b in sides])
        table = table.rename(columns={"difference": "B − A", "seeds": "seeds B vs A"})
    return table


def spread_rows(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]]) -> list[SpreadRow]:
    """The rows of `metrics_table` that get a difference (both sides have seeds, evaluated alike), with
    their seed means: what the verdict (`report/spread.py`) judges."""
    by_a, by_b = metrics.by_model(runs_a), metrics.by_model(runs_b)
    splits = _ordered_union(metrics.ordered_splits(runs_a), metrics.ordered_splits(runs_b))
    rows = []
    for model in [m for m in _ordered_union(metrics.ordered_models(runs_a), metrics.ordered_models(runs_b))
                  if m in by_a and m in by_b]:
        for split in [s for s in splits if not not_comparable(by_a[model], by_b[model], s)]:
            for metric in significance.metrics_to_test(by_a[model] + by_b[model], split):
                a = tuple(significance.seed_means(by_a[model], split, metric).values())
                b = tuple(significance.seed_means(by_b[model], split, metric).values())
                if a and b:
                    rows.append(SpreadRow(metrics.label(model, by_a[model]), split, significance.metric_label(metric), a, b))
    return rows


def _mean_of(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _speeds(runs: list[dict[str, Any]]) -> tuple[float | None, float | None, str]:
    train = [r["train"]["sequences_per_s"] for r in runs if (r.get("train") or {}).get("sequences_per_s") is not None]
    evals = [s["eval_sequences_per_s"] for r in runs for s in r["splits"].values() if s.get("eval_sequences_per_s") is not None]
    devices = ", ".join(sorted({str(r.get("device", "?")) for r in runs}))
    return _mean_of(train), _mean_of(evals), devices


def _ratio(b: float | None, a: float | None) -> str:
    return f"{b / a:.2f}x" if a and b is not None else metrics.MISSING


def _num(value: float | None) -> str:
    return metrics.MISSING if value is None else f"{value:.1f}"


def _sizes(runs: list[dict[str, Any]]) -> list[str]:
    """The parameter counts of a model's runs (a speed is of one model size)."""
    return sorted({f"{(r.get('parameters') or {}).get('total')}" for r in runs})


def throughput_ratios(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]]) -> pd.DataFrame:
    """Per model in both: mean train and eval sequences/s on each side, B / A, and each side's device.

    A ratio between different model sizes (parameter counts) says nothing about the devices: both ratios
    are then `not comparable` and a `note` gives the sizes; so is the eval ratio when a split was
    evaluated differently (frames, samples, ...)."""
    by_a, by_b = metrics.by_model(runs_a), metrics.by_model(runs_b)
    splits = _ordered_union(metrics.ordered_splits(runs_a), metrics.ordered_splits(runs_b))
    rows = []
    for model in _ordered_union(metrics.ordered_models(runs_a), metrics.ordered_models(runs_b)):
        if model not in by_a or model not in by_b:
            continue
        train_a, eval_a, dev_a = _speeds(by_a[model])
        train_b, eval_b, dev_b = _speeds(by_b[model])
        row = {
            "model": metrics.label(model, by_a[model]),
            "train seq/s A": _num(train_a), "train seq/s B": _num(train_b), "train B/A": _ratio(train_b, train_a),
            "eval seq/s A": _num(eval_a), "eval seq/s B": _num(eval_b), "eval B/A": _ratio(eval_b, eval_a),
            "precision A": metrics.train_precisions(by_a[model]), "precision B": metrics.train_precisions(by_b[model]),
            "device A": dev_a, "device B": dev_b,
        }
        sizes = _sizes(by_a[model]), _sizes(by_b[model])
        evals = "; ".join(filter(None, (not_comparable(by_a[model], by_b[model], s) for s in splits)))
        if sizes[0] != sizes[1]:
            row["train B/A"] = row["eval B/A"] = NOT_COMPARABLE
            row["note"] = f"{NOT_COMPARABLE}: parameters {', '.join(sizes[0])} vs {', '.join(sizes[1])}"
        elif evals:
            row["eval B/A"] = NOT_COMPARABLE
            row["note"] = f"eval {NOT_COMPARABLE}: {evals}"
        rows.append(row)
    table = pd.DataFrame(rows)
    if "note" in table.columns:
        table["note"] = table["note"].fillna("")
    return table


def _only_in(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]],
             failed_a: list[Failure] | None = None, failed_b: list[Failure] | None = None) -> str:
    """Models one side lacks, and the jobs that failed on either side: a model whose jobs failed in B is
    "failed in B", not "only in A"."""
    stale = [(side, f) for side, failed in (("A", failed_a), ("B", failed_b)) for f in failed or [] if f.kept]
    failed_a = [f for f in failed_a or [] if not f.kept]  # kept: a failed re-evaluation, its numbers are in
    failed_b = [f for f in failed_b or [] if not f.kept]
    a, b = {r["model"] for r in runs_a}, {r["model"] for r in runs_b}
    lost_a, lost_b = {f.model for f in failed_a}, {f.model for f in failed_b}
    notes = []
    if a - b - lost_b:
        notes.append(f"only in A (not compared): {', '.join(markdown_name(m) for m in sorted(a - b - lost_b))}")
    if b - a - lost_a:
        notes.append(f"only in B (not compared): {', '.join(markdown_name(m) for m in sorted(b - a - lost_a))}")
    for side, failed in (("A", failed_a), ("B", failed_b)):
        if failed:
            jobs = "; ".join(f"{markdown_name(f.model)}/seed{f.seed}: {markdown_name(f.reason)}" for f in failed)
            notes.append(f"failed in {side} (not in the numbers; rerun `run` to retry): {jobs}")
    if stale:
        jobs = "; ".join(f"{side}: {markdown_name(f.model)}/seed{f.seed}: {markdown_name(f.reason)}" for side, f in stale)
        notes.append(f"re-evaluation failed (their numbers are from the previous evaluation): {jobs}")
    return "".join(f"\n{n}\n" for n in notes)


def _code(text: object) -> str:
    """`text` as a Markdown code span, also when it holds a backtick."""
    text = " ".join(str(text).splitlines())
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def write_comparison(dir_a: Path, dir_b: Path, out: Path | None = None) -> tuple[Path, str]:
    """Write the comparison files; returns the markdown path and its text."""
    dir_a, dir_b = Path(dir_a), Path(dir_b)
    runs_a, runs_b = metrics.collect_metrics(dir_a), metrics.collect_metrics(dir_b)
    failed_a, failed_b = collect_failures(dir_a), collect_failures(dir_b)
    for d, runs, failed in ((dir_a, runs_a, failed_a), (dir_b, runs_b, failed_b)):
        if not runs and failed:  # a failed re-evaluation (`kept`) has a metrics.json, so runs is not empty
            first = failed[0]
            raise DataError(f"{d}: all {len(failed)} jobs failed, nothing to compare (e.g. {first.model}/seed{first.seed}: "
                            f"{first.reason[:200]}; see each job's error.txt and rerun `run` to retry)")
        if not runs:
            raise DataError(f"{d}: no metrics.json files found (run the suite first)")
    out = Path(out) if out else dir_a / "report" / "compare"
    table, speed = metrics_table(runs_a, runs_b), throughput_ratios(runs_a, runs_b)
    devices = [", ".join(sorted({str(r.get("device", "?")) for r in runs})) for runs in (runs_a, runs_b)]
    verdict = verdict_lines(spread_rows(runs_a, runs_b))
    caption = significance.caption("A", table, difference="B minus A, per model")
    if "note" in table.columns:
        caption += (f" Rows marked {NOT_COMPARABLE} were evaluated differently in A and B (the note says how): "
                    "they get no difference and no test.")
    text = (
        f"# Comparison\n\nA = {_code(dir_a)} (device: {markdown_name(devices[0])})\n\n"
        f"B = {_code(dir_b)} (device: {markdown_name(devices[1])})\n"
        + _only_in(runs_a, runs_b, failed_a, failed_b)
        + "\n## Verdict: the same within the seed spread?\n\n" + "\n".join(verdict)
        + "\n\nA row (model, split, metric) is within the spread when |B − A| is at most what seed-to-seed "
        "variation explains (the allowance: Student t, Bonferroni over the rows, times the seed spread pooled "
        "over every model of that split and metric); docs/metrics.md, \"Same within spread\".\n"
        + "".join(unpooled_note(metrics.unpooled_metrics(d), d, f"{side}: not in the numbers")
                  for side, d in (("A", dir_a), ("B", dir_b)))
        + f"\n## Metrics\n\n{caption} A and B columns: mean ± std of seed means (seeds).\n\n"
        + (markdown_table(table, index=False) if len(table) else metrics.MISSING)
        + "\n\n## Throughput (B / A)\n\n"
        + (markdown_table(speed, index=False) if len(speed) else metrics.MISSING)
        + "\n"
    )
    with owned_directory(out):  # one writer at a time; temp files of a killed one are removed
        atomic_write_text(out / "compare.md", text)
        atomic_write_text(out / "compare.csv", table.to_csv(index=False))
        atomic_write_text(out / "compare_throughput.csv", speed.to_csv(index=False))
    return out / "compare.md", text


def command(args: argparse.Namespace) -> int:
    if not args.results_dir or not args.other:
        raise ConfigError("report --compare: give two results directories, A and B")
    path, text = write_comparison(Path(args.results_dir), Path(args.other), Path(args.out) if args.out else None)
    print(text)
    print(f"comparison in {path.parent}")
    print(next(line for line in text.splitlines() if line.startswith("Verdict: ")))
    return 0
