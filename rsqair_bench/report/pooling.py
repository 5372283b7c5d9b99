"""Which seeds the report may pool: a model's split is pooled over its seeds only when every seed was
evaluated alike.

Why: `report` pooled seeds of one model that were evaluated with different settings (6 frames for one
seed and 10 for the others, 1 sample against 5, an older evaluation version) into one cell, unmarked:
`R-SQAIR(IN) 314.48 ± 44.19` where the seeds evaluated alike give 299.89. A re-evaluation that failed
for one seed (its best.pt gone) leaves exactly this state. Such a (model, split) is now not pooled:
its cells in the pooled tables (table, dynamics, relation use, significance, Figure 4) say so and a
note gives what differs and for which seeds; `per_seed.md` keeps each seed's own numbers.
`report --compare` marks a split evaluated differently in A and B the same way (`compare.py`).

The facts compared are those that change a split's numbers besides the weights (docs/metrics.md,
"Re-evaluation of finished jobs"): frames, samples, particles, sequences, object slots, the data file
(its stored checksum where recorded, else its name) and the evaluation version. The evaluation batch
size is not one: it changes how sequences are grouped, not what is measured.

No torch here: `report` stays light.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

MIXED_MARK = "‡"
NOT_POOLED = f"not pooled {MIXED_MARK}"
_FIRST_VERSION = 1  # a split entry without `settings` was written before the evaluation recorded its version


def evaluation_facts(entry: dict[str, Any]) -> dict[str, Any]:
    """What decided one split entry's numbers besides the checkpoint; None where the file does not say."""
    settings = entry.get("settings") or {}
    checksum = settings.get("data_checksum")
    data = entry.get("data")
    return {
        "frames": entry.get("frames"),
        "samples": entry.get("samples"),
        "particles": entry.get("particles", settings.get("particles")),
        "sequences": entry.get("sequences"),
        "object slots": entry.get("max_objects"),
        "data file": Path(data).name if isinstance(data, str) else None,
        "data checksum": checksum[:12] if isinstance(checksum, str) else None,
        "evaluation version": settings.get("version", _FIRST_VERSION) if settings else _FIRST_VERSION,
    }


def _seeds(seeds: list[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(str(s) for s in seeds)


def _difference(by_seed: dict[int, dict[str, Any]]) -> str:
    """'frames 6 (seed 1) vs 10 (seeds 0, 2)' for each fact on which the seeds differ; '' when none."""
    parts = []
    for fact in next(iter(by_seed.values())):
        groups: dict[Any, list[int]] = defaultdict(list)
        for seed, facts in sorted(by_seed.items()):
            if facts[fact] is not None:  # not recorded: nothing to compare
                groups[facts[fact]].append(seed)
        if len(groups) > 1:
            ordered = sorted(groups.items(), key=lambda kv: (len(kv[1]), str(kv[0])))
            parts.append(f"{fact} " + " vs ".join(f"{value} ({_seeds(seeds)})" for value, seeds in ordered))
    return "; ".join(parts)


def mixed_settings(runs: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(model, split) -> what differs between its seeds' evaluations, for each split not evaluated alike."""
    by_key: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in runs:
        for split, entry in r["splits"].items():
            by_key[(r["model"], split)][r["seed"]] = evaluation_facts(entry)
    mixed = {}
    for key, by_seed in by_key.items():
        why = _difference(by_seed) if len(by_seed) > 1 else ""
        if why:
            mixed[key] = why
    return mixed


def without_mixed(runs: list[dict[str, Any]], mixed: dict[tuple[str, str], str]) -> list[dict[str, Any]]:
    """The runs as the pooled tables see them: each (model, split) of `mixed` left out of every seed."""
    if not mixed:
        return runs
    out = []
    for r in runs:
        splits = {s: e for s, e in r["splits"].items() if (r["model"], s) not in mixed}
        out.append({**r, "splits": splits})
    return out


def mark_mixed(table: pd.DataFrame, mixed: dict[tuple[str, str], str], labels: dict[str, str],
               metrics: dict[str, str]) -> pd.DataFrame:
    """`table` (rows: model labels; columns '<metric name> <split>') with NOT_POOLED in each mixed cell."""
    table = table.copy()
    for (model, split), _ in mixed.items():
        for name in metrics.values():
            column = f"{name} {split}"
            if labels.get(model) in table.index and column in table.columns:
                table.loc[labels[model], column] = NOT_POOLED
    return table


def mixed_note(mixed: dict[tuple[str, str], str], labels: dict[str, str]) -> str:
    """The Markdown note under table.md that explains MIXED_MARK; '' when every split was evaluated alike."""
    if not mixed:
        return ""
    from rsqair_bench.report.textfmt import markdown_name

    lines = ["", f"{MIXED_MARK} not pooled: the seeds of these models were evaluated with different settings on the "
             "split, so no mean over them is shown here, in dynamics, relation use, significance or Figure 4 "
             "(`per_seed.md` has each seed's numbers; `run` evaluates stale seeds again alike):", ""]
    for (model, split), why in sorted(mixed.items()):
        lines.append(f"- {markdown_name(labels.get(model, model))} {markdown_name(split)}: {markdown_name(why)}")
    return "\n".join(lines) + "\n"


UNPOOLED_LISTED = 20  # files named in the note; the rest are counted


def unpooled_note(files: list[Path], results_dir: Path, title: str = "Not in the numbers") -> str:
    """The Markdown note listing the metrics.json files the report did not read (metrics.unpooled_metrics)."""
    if not files:
        return ""
    from rsqair_bench.report.textfmt import markdown_name

    lines = ["", f"**{title} ({len(files)})**: metrics.json files that are not a job's "
             "`<model>/seed<k>/metrics.json` directly in this directory (a backup copy, another suite's results "
             "below this one); they were not read:", ""]
    for path in files[:UNPOOLED_LISTED]:
        where = path.relative_to(results_dir) if path.is_relative_to(results_dir) else path
        lines.append(f"- `{markdown_name(where)}`")
    if len(files) > UNPOOLED_LISTED:
        lines.append(f"- and {len(files) - UNPOOLED_LISTED} more")
    return "\n".join(lines) + "\n"
