"""The state-space track's report (docs/states.md), from its metrics.json files alone.

`report RESULTS_DIR` (and `run`) write this instead of the pixel tables when the directory's
metrics.json say `"track": "states"`:
- table.{md,csv}: per split, the centre error of the prior's mean (px) on colliding and on free balls
  and its log-density of the true centre, each model against σ, mean ± std over seeds, with the
  constant-velocity and exact-velocity-oracle references (table.csv: one row per value, long form);
- significance.{md,csv}: every model against the baseline (`sqair`: no relation) per split, σ and
  metric, with the significance machinery of the pixel report (report/significance.py: seeds as the
  unit, Welch's test, Holm over the table, MDD);
- per_seed.csv, throughput.{md,csv} (train seq/s there counts windows);
and report/states_figure.py draws figures/gain_vs_sigma.{png,pdf}. `states_texts` computes the tables;
report/write.py writes them and the figure, as it writes the pixel report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rsqair_bench.errors import DataError
from rsqair_bench.metrics import MISSING, STATES_TRACK, by_model, label, ordered_models
from rsqair_bench.report import significance
from rsqair_bench.report.failures import collect_failures, failures_note
from rsqair_bench.report.significance_table import resolve_baseline
from rsqair_bench.report.tables import fmt, mean_std, throughput_table
from rsqair_bench.report.textfmt import markdown_table

SPLIT_ORDER = ["balls4/test", "balls678/test"]
# (metric, group, label, higher is better) tested in significance.md, in this order
TESTED = [("error_px", "colliding", "centre error px, colliding", False), ("error_px", "free", "centre error px, free", False),
          ("log_density", "all", "log-density of the true centre", True)]


def is_states_report(runs: list[dict[str, Any]]) -> bool:
    """True when the runs are the state-space track's; a directory mixing the two tracks is refused."""
    tracks = {r.get("track") == STATES_TRACK for r in runs}
    if len(tracks) > 1:
        dirs = sorted(str(r["_dir"]) for r in runs if r.get("track") == STATES_TRACK)[:2]
        raise DataError(f"{runs[0]['_dir'].parent.parent}: mixes state-space jobs (e.g. {', '.join(dirs)}) with pixel "
                        "jobs; expected one track per results directory (a suite's results/<name>/)")
    return tracks == {True}


def noise_keys(runs: list[dict[str, Any]]) -> list[str]:
    """Every σ any run has, ascending (keys as written: `0`, `0.5`, ...)."""
    keys = {k for r in runs for s in r["splits"].values() for k in (s.get("states") or {}).get("noise", {})}
    return sorted(keys, key=float)


def splits_of(runs: list[dict[str, Any]]) -> list[str]:
    found = {s for r in runs for s in r["splits"]}
    return [s for s in SPLIT_ORDER if s in found] + sorted(found - set(SPLIT_ORDER))


def value(run: dict[str, Any], split: str, sigma: str, metric: str, group: str) -> float | None:
    """One seed's number: splits.<split>.states.noise.<σ>.<metric>.<group>, or None."""
    node = (((run["splits"].get(split) or {}).get("states") or {}).get("noise") or {}).get(sigma) or {}
    number = (node.get(metric) or {}).get(group)
    return float(number) if isinstance(number, (int, float)) and math.isfinite(number) else None


def seed_values(runs: list[dict[str, Any]], split: str, sigma: str, metric: str, group: str) -> dict[int, float]:
    found = {int(r["seed"]): value(r, split, sigma, metric, group) for r in runs}
    return {seed: v for seed, v in found.items() if v is not None}


def _cell(values: list[float]) -> str:
    return fmt(*mean_std(values)) if values else MISSING


def _reference_row(runs: list[dict[str, Any]], split: str, sigmas: list[str], group: str) -> dict[str, str]:
    """const-velocity on the noisy inputs: the same for every model of a seed, so one value per seed."""
    per_seed: dict[str, dict[int, float]] = {s: {} for s in sigmas}
    for r in runs:
        for s in sigmas:
            v = value(r, split, s, "const_velocity_error_px", group)
            if v is not None:
                per_seed[s][int(r["seed"])] = v
    return {f"σ {s} px": _cell(list(per_seed[s].values())) for s in sigmas}


def _oracle(runs: list[dict[str, Any]], split: str, group: str) -> str:
    for r in runs:
        number = (((r["splits"].get(split) or {}).get("states") or {}).get("oracle_error_px") or {}).get(group)
        if isinstance(number, (int, float)):
            return f"{number:.2f}"
    return MISSING


def error_table(runs: list[dict[str, Any]], split: str, metric: str, group: str, expected: int) -> pd.DataFrame:
    """Rows: models, then (for centre errors) the references; columns: σ, and how many seeds finished."""
    sigmas, grouped = noise_keys(runs), by_model(runs)
    rows = {}
    for model in ordered_models(runs):
        mruns = grouped[model]
        row = {f"σ {s} px": _cell(list(seed_values(mruns, split, s, metric, group).values())) for s in sigmas}
        rows[label(model, mruns)] = {**row, "seeds": f"{len(mruns)}/{expected}"}
    if metric == "error_px":
        rows["reference: const-velocity (noisy inputs)"] = {**_reference_row(runs, split, sigmas, group), "seeds": ""}
        oracle = _oracle(runs, split, group)
        rows["reference: exact-velocity oracle (no noise)"] = {**{f"σ {s} px": oracle for s in sigmas}, "seeds": ""}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table


def _counts(runs: list[dict[str, Any]], split: str) -> str:
    for r in runs:
        balls = ((r["splits"].get(split) or {}).get("states") or {}).get("balls") or {}
        if balls:
            share = balls.get("colliding", 0) / max(balls.get("all", 0), 1)
            return (f"{balls.get('colliding', 0):,} colliding and {balls.get('free', 0):,} free ball-frames "
                    f"({share:.1%} colliding)")
    return "no ball counts"


SECTIONS = [("error_px", "colliding", "centre error of the prior's mean, colliding balls (px; lower is better)"),
            ("error_px", "free", "centre error of the prior's mean, free balls (px; lower is better)"),
            ("log_density", "all", "log-density of the true centre, all balls (nats per ball, per px²; higher is better)")]


def table_markdown(runs: list[dict[str, Any]], expected: int) -> str:
    """table.md's body: one section per split and metric."""
    parts = ["# State-space track: one-step prediction of each ball's centre from its true states with input noise σ\n",
             "Mean ± std over seeds of each seed's average over the split's ball-frames (frames t = history .. T-1). "
             "Colliding: ball-ball contact at t-1 or t; free: the other balls. σ: std of the Gaussian noise on every "
             "input centre, px per axis, in training and in testing (one model per σ). Definitions: docs/states.md.\n"]
    for split in splits_of(runs):
        parts.append(f"## {split}: {_counts(runs, split)}\n")
        for metric, group, title in SECTIONS:
            parts.append(f"### {title}\n\n" + markdown_table(error_table(runs, split, metric, group, expected)) + "\n")
    return "\n".join(parts)


def table_long(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Every seed's value (per_seed.csv) in long form."""
    rows = []
    for r in runs:
        for split in splits_of(runs):
            for sigma in noise_keys(runs):
                for metric in ("error_px", "log_density", "const_velocity_error_px"):
                    for group in ("colliding", "free", "all"):
                        v = value(r, split, sigma, metric, group)
                        if v is not None:
                            rows.append({"model": r["model"], "paper_name": label(r["model"], [r]), "seed": r["seed"],
                                         "split": split, "noise_px": float(sigma), "metric": metric, "group": group,
                                         "value": v})
    return pd.DataFrame(rows)


def summary_long(per_seed: pd.DataFrame) -> pd.DataFrame:
    """table.csv: mean, std and seeds per model, split, σ, metric and group."""
    if per_seed.empty:
        return per_seed
    keys = ["model", "paper_name", "split", "noise_px", "metric", "group"]
    def spread(values: pd.Series) -> float:
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    out = per_seed.groupby(keys, sort=False)["value"].agg(mean="mean", std=spread, seeds="count")
    return out.reset_index()


def significance_frame(runs: list[dict[str, Any]], baseline: str) -> pd.DataFrame:
    """Every model against `baseline` per split, σ and tested metric (model minus baseline)."""
    grouped = by_model(runs)
    tests = []
    for model in ordered_models(runs):
        if model == baseline:
            continue
        for split in splits_of(runs):
            for sigma in noise_keys(runs):
                for metric, group, name, _ in TESTED:
                    a = list(seed_values(grouped[baseline], split, sigma, metric, group).values())
                    b = list(seed_values(grouped[model], split, sigma, metric, group).values())
                    if a and b:
                        labels = {"model": label(model, grouped[model]), "split": split, "noise px": sigma, "metric": name}
                        tests.append((labels, significance.compare(a, b)))
    return significance.comparison_rows(tests)


def significance_texts(runs: list[dict[str, Any]], baseline: str | None) -> dict[str, str]:
    """significance.md and significance.csv."""
    models = ordered_models(runs)
    base = resolve_baseline(baseline, models)
    grouped = by_model(runs)
    if base in grouped:
        table = significance_frame(runs, base)
        base_label = label(base, grouped[base])
        caption = significance.caption(base_label, table).replace(  # the pixel caption's metrics, ours named
            "higher log-likelihood and coverage are better, lower centre error and duplicates are better",
            "lower centre error and higher log-density are better; σ: the input noise std, px")
        body = markdown_table(table, index=False) if len(table) else "no other model to compare"
    else:
        table, base_label = significance.comparison_rows([]), base
        caption, body = f"No significance tests: the baseline model {base!r} has no finished seed here", MISSING
    return {"significance.md": f"# State-space track: significance against {base_label} (no relation)\n\n"
                               f"{caption}\n\n{body}\n",
            "significance.csv": table.to_csv(index=False)}


def states_texts(runs: list[dict[str, Any]], results_dir: Path, expected_seeds: int | None,
                 baseline: str | None) -> dict[str, str]:
    """Every table of the state-space report by file name, computed before anything is written
    (report/write.py writes them, and the gain figure from report/states_figure.py)."""
    failures = collect_failures(results_dir)
    expected = expected_seeds or len({r["seed"] for r in runs} | {f.seed for f in failures})
    texts = {"table.md": table_markdown(runs, expected) + failures_note(failures, results_dir)}
    per_seed = table_long(runs)
    texts["table.csv"] = summary_long(per_seed).to_csv(index=False)
    texts["per_seed.csv"] = per_seed.to_csv(index=False)
    through = throughput_table(runs)
    texts["throughput.md"] = ("# Throughput\n\ntrain seq/s: training windows per second (one window: one sequence "
                              "and one predicted frame), over all σ models of a job.\n\n" + markdown_table(through) + "\n")
    texts["throughput.csv"] = through.to_csv()
    texts.update(significance_texts(runs, baseline))
    return texts
