"""The report's tables: rows = models (paper names); columns = data LL and relational LL per split as
mean ± std over all seeds x samples values (the per_sample lists concatenated across seeds), and the
number of seeds finished; per-seed means and their spread; throughput; the research tables' files;
and each table as LaTeX. A split some seeds lack says so ("(3/5 seeds)"); a split no seed has is
"—". Nothing is averaged away silently. Pure: DataFrames and text in, text out (`report/write.py`
writes the files)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rsqair_bench.metrics import (
    MISSING,
    by_model,
    label,
    ordered_models,
    ordered_splits,
)
from rsqair_bench.report.textfmt import fixed, markdown_table

METRICS = {"data_ll": "data LL", "relational_ll": "relational LL"}

# The R-SQAIR paper's numbers (docs/reference.md, "The paper's results"), by our model name.
PAPER: dict[str, dict[tuple[str, str], float]] = {
    "sqair": {
        ("balls4/test", "data_ll"): 399.5,
        ("balls4/test", "relational_ll"): 0.21,
        ("balls678/test", "relational_ll"): -164.1,
    },
    "sqair+in": {
        ("balls4/test", "data_ll"): 429.2,
        ("balls4/test", "relational_ll"): 1.95,
        ("balls678/test", "relational_ll"): -96.7,
    },
    "sqair+rmc": {
        ("balls4/test", "data_ll"): 457.32,
        ("balls4/test", "relational_ll"): 3.62,
        ("balls678/test", "relational_ll"): -97.0,
    },
}


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is handled below
        mean, std = float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    if not (np.isfinite(mean) and np.isfinite(std)) and arr.size and np.isfinite(arr).all():
        scale = float(np.abs(arr).max())  # finite scores near the float limit: their sum overflowed, not they
        mean, std = mean_std(list(arr / scale))
        mean, std = mean * scale, std * scale
    return mean, std


def fmt(mean: float, std: float | None = None) -> str:
    """`412.35 ± 1.20`; a magnitude of 1e9 or more in scientific notation (textfmt.fixed), not 309 digits."""
    if std is None:
        return fixed(mean)
    return f"{fixed(mean)} ± {fixed(std)}"


def metric_values(runs: list[dict], split: str, metric: str) -> tuple[list[float], int]:
    """All seeds x samples values of a metric on a split, and how many seeds contributed."""
    values: list[float] = []
    seeds = 0
    for r in runs:
        entry = r["splits"].get(split, {}).get(metric)
        if entry is None:
            continue
        per_sample = entry.get("per_sample") or [entry["mean"]]
        values.extend(float(v) for v in per_sample)
        seeds += 1
    return values, seeds


# ----------------------------------------------------------------------------- tables
def main_table(runs: list[dict], expected_seeds: int | None = None, compare_paper: bool = False,
               splits: list[str] | None = None) -> pd.DataFrame:
    """The paper's table: one row per model; strings, so missing seeds/splits are explicit. `splits`:
    the columns (default: the runs' splits; the report passes every job's, some of them not pooled)."""
    from rsqair_bench.report.dynamics import horizon_mark

    grouped = by_model(runs)
    all_seeds = {r["seed"] for r in runs}
    expected = expected_seeds or len(all_seeds)
    splits = ordered_splits(runs) if splits is None else splits
    rows = []
    for model in ordered_models(runs):
        mruns = grouped[model]
        row: dict[str, str] = {"model": label(model, mruns), "seeds": f"{len(mruns)}/{expected}"}
        for split in splits:
            for metric, name in METRICS.items():
                values, seeds = metric_values(mruns, split, metric)
                cell = MISSING
                if values:
                    cell = fmt(*mean_std(values)) + horizon_mark(mruns, split)
                    if seeds < expected:
                        cell += f" ({seeds}/{expected} seeds)"
                row[f"{name} {split}"] = cell
                if compare_paper and any((split, metric) in p for p in PAPER.values()):
                    paper = PAPER.get(model, {}).get((split, metric))
                    row[f"paper {name} {split}"] = MISSING if paper is None else f"{paper:g}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def _seed_mean(entry: dict | None, metric: str) -> float | None:
    """A split entry's `metric.mean` (data LL, relational LL, IWAE bound), None where it has none."""
    block = (entry or {}).get(metric)
    return block.get("mean") if isinstance(block, dict) else None


def per_seed_tables(runs: list[dict], unpooled: set[tuple[str, str]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each seed's means per split, and per model the spread (std, min, max) of the seed means; a
    (model, split) in `unpooled` (its seeds evaluated differently: report/pooling.py) gets no spread row."""
    splits = ordered_splits(runs)
    grouped = by_model(runs)
    rows, spread = [], []
    for model in ordered_models(runs):
        for r in grouped[model]:
            row: dict[str, Any] = {"model": label(model, grouped[model]), "seed": r["seed"]}
            for split in splits:
                s = r["splits"].get(split)
                for metric, name in {**METRICS, "iwae_bound": "IWAE bound"}.items():
                    value = _seed_mean(s, metric)
                    row[f"{name} {split}"] = MISSING if value is None else fmt(value)
                accuracy = (s or {}).get("count_accuracy")
                row[f"count acc. {split}"] = MISSING if accuracy is None else f"{accuracy:.3f}"
            rows.append(row)
        for split in splits:
            if (model, split) in (unpooled or set()):
                continue
            for metric, name in METRICS.items():
                means = [m for r in grouped[model] if (m := _seed_mean(r["splits"].get(split), metric)) is not None]
                if not means:
                    continue
                spread.append(
                    {
                        "model": label(model, grouped[model]),
                        "split": split,
                        "metric": name,
                        "seeds": len(means),
                        "mean of seed means": fmt(float(np.mean(means))),
                        "std of seed means": fmt(float(np.std(means, ddof=1)) if len(means) > 1 else 0.0),
                        "min": fmt(min(means)),
                        "max": fmt(max(means)),
                    }
                )
    return pd.DataFrame(rows).set_index(["model", "seed"]), pd.DataFrame(spread)


def throughput_table(runs: list[dict]) -> pd.DataFrame:
    grouped = by_model(runs)
    rows = []
    for model in ordered_models(runs):
        mruns = grouped[model]
        train_sps = [r["train"]["sequences_per_s"] for r in mruns if (r.get("train") or {}).get("sequences_per_s") is not None]
        train_mem = [r["train"]["peak_memory_mb"] for r in mruns if (r.get("train") or {}).get("peak_memory_mb") is not None]
        eval_sps = [
            s["eval_sequences_per_s"] for r in mruns for s in r["splits"].values() if s.get("eval_sequences_per_s") is not None
        ]
        eval_mem = [s["peak_memory_mb"] for r in mruns for s in r["splits"].values() if s.get("peak_memory_mb") is not None]
        params = mruns[0].get("parameters") or {}
        rows.append(
            {
                "model": label(model, mruns),
                "runs": len(mruns),
                "train seq/s": fmt(*mean_std(train_sps)) if train_sps else MISSING,
                "eval seq/s": fmt(*mean_std(eval_sps)) if eval_sps else MISSING,
                "train peak MB": f"{max(train_mem):.0f}" if train_mem else MISSING,
                "eval peak MB": f"{max(eval_mem):.0f}" if eval_mem else MISSING,
                "params total": MISSING if params.get("total") is None else f"{params['total']:,}",
                "params relation": MISSING if params.get("relation") is None else f"{params['relation']:,}",
                "device": ", ".join(sorted({str(r.get("device", "?")) for r in mruns})),
                "torch": ", ".join(sorted({str(r.get("torch_version", "?")) for r in mruns})),
            }
        )
    return pd.DataFrame(rows).set_index("model")


_LATEX_CHARS = {"\\": r"\textbackslash{}", **{ch: "\\" + ch for ch in "&%$#_{}"}, "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
                "`": r"\textasciigrave{}", "\n": " ", "\r": " "}


def _latex_escape(text: str) -> str:
    """Text as LaTeX prints it, in one pass (so `\\` does not become `\\textbackslash\\{\\}`): names come
    from metrics.json, and no command, math, quote or line break may come of them."""
    out = "".join(_LATEX_CHARS.get(ch, ch) for ch in str(text))
    out = out.replace("±", r"$\pm$").replace("†", r"$^\dagger$").replace("‡", r"$^\ddagger$").replace("§", r"\S{}")
    return out.replace(MISSING, "--")


def to_latex(table: pd.DataFrame, caption: str) -> str:
    """The table as a LaTeX table float: the tabular laid out by tabulate, every cell escaped here.

    Why tabulate's `latex_raw`: its `latex`/`latex_booktabs` formats escape cells themselves, with
    fewer rules than `_latex_escape` (no `|`, backtick or line break) and without `$\\pm$` for ±,
    so escaping before them would escape twice. Numbers are passed as the text the other tables
    print (`disable_numparse`), so tabulate never reformats one."""
    from tabulate import tabulate

    header = [_latex_escape(h) for h in [table.index.name or "", *table.columns]]
    rows = [[_latex_escape(v) for v in [idx, *row.tolist()]] for idx, row in table.iterrows()]
    tabular = tabulate(rows, headers=header, tablefmt="latex_raw", disable_numparse=True,
                       colalign=("left", *["right"] * len(table.columns)))
    lines = [r"\begin{table}[t]", r"\centering", r"\small", tabular,
             rf"\caption{{{_latex_escape(caption)}}}", r"\end{table}", ""]
    return "\n".join(lines)


def dynamics_files(runs: list[dict], baseline: str | None = None) -> dict[str, str]:
    """dynamics.{md,csv,tex}: object-ball matching per model (docs/metrics.md); none if no run has it.
    With the `prior_decomposition` / `one_step` blocks, dynamics.md gets a section for each (and
    prior_decomposition.csv / one_step.csv); `baseline` (default: as significance.md's) is the model the
    one-step colliding error's MDD is taken against."""
    from rsqair_bench.report.dynamics import dynamics_table, horizon_footnote
    from rsqair_bench.report.prior_error import (
        DECOMPOSITION_CAPTION,
        ONE_STEP_CAPTION,
        decomposition_table,
        one_step_table,
    )
    from rsqair_bench.report.significance_table import resolve_baseline

    grouped = by_model(runs)
    models = ordered_models(runs)
    labels = {m: label(m, grouped[m]) for m in models}
    table = dynamics_table(runs, models, grouped, labels, ordered_splits(runs))
    if not len(table):
        return {}
    caption = ("Object-ball matching: inferred frames (coverage, duplicates, centre error) and the "
               "prior's centre error at the sampled frame T (px)")
    text = f"# {caption}\n\n" + markdown_table(table) + "\n" + horizon_footnote(table)
    files = {"dynamics.csv": table.to_csv(), "dynamics.tex": to_latex(table, caption)}
    parts = {"prior_decomposition": (DECOMPOSITION_CAPTION, decomposition_table(models, grouped, labels, ordered_splits(runs))),
             "one_step": (ONE_STEP_CAPTION, one_step_table(models, grouped, labels, ordered_splits(runs),
                                                           resolve_baseline(baseline, models)))}
    for name, (part_caption, part) in parts.items():
        if len(part):
            text += f"\n# {part_caption}\n\n" + markdown_table(part, index=False) + "\n"
            files[f"{name}.csv"] = part.to_csv(index=False)
    return {"dynamics.md": text, **files}


def relation_files(runs: list[dict]) -> dict[str, str]:
    """relation_use.{md,csv,tex} (knock-out drops) and neighbours.{md,csv} (per seed); none without them."""
    from rsqair_bench.report.relations import KNOCKOUT_CAPTION, NEIGHBOURS_CAPTION, knockout_table, neighbours_table

    grouped = by_model(runs)
    models = ordered_models(runs)
    labels = {m: label(m, grouped[m]) for m in models}
    files: dict[str, str] = {}
    knockout = knockout_table(models, grouped, labels, ordered_splits(runs))
    if len(knockout):
        files.update({"relation_use.md": f"# {KNOCKOUT_CAPTION}\n\n" + markdown_table(knockout) + "\n",
                      "relation_use.csv": knockout.to_csv(), "relation_use.tex": to_latex(knockout, KNOCKOUT_CAPTION)})
    neighbours = neighbours_table(models, grouped, labels, ordered_splits(runs))
    if len(neighbours):
        files.update({"neighbours.md": f"# {NEIGHBOURS_CAPTION}\n\n"
                      + markdown_table(neighbours.reset_index(), index=False) + "\n",
                      "neighbours.csv": neighbours.to_csv()})
    return files
