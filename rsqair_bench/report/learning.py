"""Which jobs learned? A note under table.md naming each job whose sampled frame does not beat copy-last
by a margin, with what its training curve and matching numbers say went wrong.

Why: a mean over seeds hides a seed that never took off (the bound stays below zero and the posterior
switches its objects off) or that collapsed later; such a seed drags a model's row down for reasons that
have nothing to do with its relation. The study asks every job to beat copy-last by LEARNED_MARGIN_NATS
on the 4-ball test split, or to be listed with its curve. Reads metrics.json (via the runs) and each
job's train_log.csv only.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from rsqair_bench.core.io import read_regular_file
from rsqair_bench.report.textfmt import markdown_name

LEARNED_MARGIN_NATS = 300.0  # the study's bar: sampled frame T minus copy-last, nats (issue: 23 of 25 jobs)
LEARNING_SPLIT = "balls4/test"  # the training distribution's test split


def _curve(job_dir: Path | None) -> list[tuple[int, float]]:
    """(iteration, training bound) rows of the job's train_log.csv; [] when it is missing or unreadable."""
    if job_dir is None:
        return []
    try:
        text = read_regular_file(Path(job_dir) / "train_log.csv").decode(errors="replace")
    except OSError:
        return []
    rows = []
    for row in csv.DictReader(text.splitlines()):
        try:
            rows.append((int(row["iteration"]), float(row["iwae_bound"])))
        except (KeyError, TypeError, ValueError):
            continue
    return rows


def diagnosis(run: dict[str, Any], split: str = LEARNING_SPLIT) -> str:
    """What the curve and the matching numbers say: take-off, collapse, coverage."""
    curve = _curve(run.get("_dir"))
    parts = []
    if curve:
        took_off = next((it for it, bound in curve if bound > 0), None)
        peak_it, peak = max(curve, key=lambda r: r[1])
        last_it, last = curve[-1]
        parts.append(f"never took off (bound {last:.0f} at iteration {last_it})" if took_off is None
                     else f"took off at iteration {took_off}")
        if took_off is not None and last < 0.5 * peak:
            parts.append(f"collapsed after iteration {peak_it} (bound {peak:.0f} -> {last:.0f})")
    matching = (run["splits"].get(split) or {}).get("matching") or {}
    inferred = matching.get("inferred") or {}
    if isinstance(inferred.get("coverage"), (int, float)):
        parts.append(f"coverage {inferred['coverage']:.2f}, duplicates {inferred.get('duplicates', 0):.3f}")
    return "; ".join(parts) or "no training log or matching numbers"


def margin(run: dict[str, Any], split: str = LEARNING_SPLIT) -> float | None:
    """Sampled frame T's data LL minus copy-last's on `split`; None without both."""
    entry = run["splits"].get(split) or {}
    copy = ((entry.get("references") or {}).get("copy_last") or {}).get("data_ll")
    model = (entry.get("data_ll") or {}).get("mean")
    return None if not isinstance(copy, (int, float)) or not isinstance(model, (int, float)) else float(model - copy)


def learning_note(runs: list[dict[str, Any]], split: str = LEARNING_SPLIT) -> str:
    """'' when no run has the split's copy-last reference; else one line, plus one line per job below the bar."""
    scored = [(r, margin(r, split)) for r in runs]
    scored = [(r, m) for r, m in scored if m is not None]
    if not scored:
        return ""
    below = sorted((r for r, m in scored if m < LEARNED_MARGIN_NATS), key=lambda r: (r["model"], r["seed"]))
    head = (f"\nLearned dynamics ({split}, sampled frame minus copy-last): {len(scored) - len(below)} of {len(scored)} "
            f"jobs beat copy-last by {LEARNED_MARGIN_NATS:.0f} nats or more (smallest margin "
            f"{min(m for _, m in scored):+.1f}).\n")
    lines = [f"- {markdown_name(r.get('paper_name') or r['model'])} seed {r['seed']}: {margin(r, split):+.1f} nats; "
             f"{diagnosis(r, split)}" for r in below]
    return head + ("\n".join(lines) + "\n" if lines else "")
