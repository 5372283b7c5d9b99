"""report/significance.{md,csv}: every model against the suite's baseline (statistics in significance.py)."""

from __future__ import annotations

from typing import Any

from rsqair_bench import metrics
from rsqair_bench.report import significance
from rsqair_bench.report.textfmt import markdown_name, markdown_table

DEFAULT_BASELINE = "sqair"


def resolve_baseline(requested: str | None, models: list[str]) -> str:
    """The suite's `baseline`, else `sqair` when the suite has it, else the first model of the table."""
    if requested:
        return requested
    return DEFAULT_BASELINE if DEFAULT_BASELINE in models or not models else models[0]


def significance_files(runs: list[dict[str, Any]], baseline: str | None = None) -> dict[str, str]:
    """significance.md and significance.csv as text (`report/write.py` writes them with the others)."""
    models = metrics.ordered_models(runs)
    grouped = metrics.by_model(runs)
    labels = {m: metrics.label(m, grouped[m]) for m in models}
    base = resolve_baseline(baseline, models)
    if base in grouped:
        table = significance.significance_table(runs, base, models, metrics.ordered_splits(runs), labels)
        caption = significance.caption(labels[base], table)
        body = markdown_table(table, index=False) if len(table) else "no other model to compare"
    else:
        table = significance.comparison_rows([])
        caption = f"No significance tests: the baseline model {base!r} has no finished seed in this directory"
        body = metrics.MISSING
    return {"significance.md": f"# Significance against {markdown_name(labels.get(base, base))}\n\n{caption}\n\n{body}\n",
            "significance.csv": table.to_csv(index=False)}

