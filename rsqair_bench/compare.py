"""`report A B --compare`: two results directories side by side (a CPU and a GPU run, before and after a change).

Per model, split and metric present in both: A's and B's seed-level means, the difference
B - A with a bootstrap CI, and Welch's test between the two sets of seeds, Holm-corrected
over the table (the same statistics as significance.md; docs/metrics.md says why). The two
runs are different trainings, so their seeds are independent samples even when the seed
numbers match. Throughput comes as B / A ratios with each side's device named, since a
speed-up means nothing without knowing what ran.

Writes <out>/compare.md, compare.csv and compare_throughput.csv (default out: A/report/compare).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rsqair_bench import metrics, significance
from rsqair_bench.errors import ConfigError, DataError
from rsqair_bench.io import atomic_write_text


def _ordered_union(a: list[str], b: list[str]) -> list[str]:
    return list(dict.fromkeys(a + b))


def _summary(means: list[float]) -> str:
    if not means:
        return metrics.MISSING
    std = float(np.std(means, ddof=1)) if len(means) > 1 else 0.0
    return f"{np.mean(means):.2f} ± {std:.2f} ({len(means)})"


def metrics_table(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (model, split, metric) both sides have."""
    by_a, by_b = metrics.by_model(runs_a), metrics.by_model(runs_b)
    both = _ordered_union(metrics.ordered_models(runs_a), metrics.ordered_models(runs_b))
    models = [m for m in both if m in by_a and m in by_b]
    splits = _ordered_union(metrics.ordered_splits(runs_a), metrics.ordered_splits(runs_b))
    tests, sides = [], []
    for model in models:
        label = metrics.label(model, by_a[model])
        for split in splits:
            for metric in significance.metrics_to_test(by_a[model] + by_b[model], split):
                a = list(significance.seed_means(by_a[model], split, metric).values())
                b = list(significance.seed_means(by_b[model], split, metric).values())
                if a and b:
                    labels = {"model": label, "split": split, "metric": significance.metric_label(metric)}
                    tests.append((labels, significance.compare(a, b)))
                    sides.append((_summary(a), _summary(b)))
    table = significance.comparison_rows(tests)
    if len(table):
        table.insert(3, "A (seeds)", [a for a, _ in sides])
        table.insert(4, "B (seeds)", [b for _, b in sides])
        table = table.rename(columns={"difference": "B − A", "seeds": "seeds B vs A"})
    return table


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


def throughput_ratios(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]]) -> pd.DataFrame:
    """Per model in both: mean train and eval sequences/s on each side, B / A, and each side's device."""
    by_a, by_b = metrics.by_model(runs_a), metrics.by_model(runs_b)
    rows = []
    for model in _ordered_union(metrics.ordered_models(runs_a), metrics.ordered_models(runs_b)):
        if model not in by_a or model not in by_b:
            continue
        train_a, eval_a, dev_a = _speeds(by_a[model])
        train_b, eval_b, dev_b = _speeds(by_b[model])
        rows.append({
            "model": metrics.label(model, by_a[model]),
            "train seq/s A": _num(train_a), "train seq/s B": _num(train_b), "train B/A": _ratio(train_b, train_a),
            "eval seq/s A": _num(eval_a), "eval seq/s B": _num(eval_b), "eval B/A": _ratio(eval_b, eval_a),
            "device A": dev_a, "device B": dev_b,
        })
    return pd.DataFrame(rows)


def _only_in(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]]) -> str:
    a, b = {r["model"] for r in runs_a}, {r["model"] for r in runs_b}
    notes = []
    if a - b:
        notes.append(f"only in A (not compared): {', '.join(sorted(a - b))}")
    if b - a:
        notes.append(f"only in B (not compared): {', '.join(sorted(b - a))}")
    return "".join(f"\n{n}\n" for n in notes)


def write_comparison(dir_a: Path, dir_b: Path, out: Path | None = None) -> tuple[Path, str]:
    """Write the comparison files; returns the markdown path and its text."""
    dir_a, dir_b = Path(dir_a), Path(dir_b)
    runs_a, runs_b = metrics.collect_metrics(dir_a), metrics.collect_metrics(dir_b)
    for d, runs in ((dir_a, runs_a), (dir_b, runs_b)):
        if not runs:
            raise DataError(f"{d}: no metrics.json files found (run the suite first)")
    out = Path(out) if out else dir_a / "report" / "compare"
    out.mkdir(parents=True, exist_ok=True)
    table, speed = metrics_table(runs_a, runs_b), throughput_ratios(runs_a, runs_b)
    devices = [", ".join(sorted({str(r.get("device", "?")) for r in runs})) for runs in (runs_a, runs_b)]
    caption = significance.caption("A", table, difference="B minus A, per model")
    text = (
        f"# Comparison\n\nA = `{dir_a}` (device: {devices[0]})\n\nB = `{dir_b}` (device: {devices[1]})\n"
        + _only_in(runs_a, runs_b)
        + f"\n## Metrics\n\n{caption} A and B columns: mean ± std of seed means (seeds).\n\n"
        + (table.to_markdown(index=False, disable_numparse=True) if len(table) else metrics.MISSING)
        + "\n\n## Throughput (B / A)\n\n"
        + (speed.to_markdown(index=False, disable_numparse=True) if len(speed) else metrics.MISSING)
        + "\n"
    )
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
    return 0
