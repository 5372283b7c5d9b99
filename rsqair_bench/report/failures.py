"""Failed jobs in the report: a model whose seeds all failed keeps its row (`0/N`), and why is listed.

A failed job has no metrics.json, so a report built from metrics.json alone would drop it
silently and a model that never trained would simply vanish from the table. The runner leaves
`error.txt` (the traceback, or "worker crashed: ...") in a failed job's directory
(<results>/<model>/seed<k>/); this module reads those files, nothing else.

A finished job whose re-evaluation failed (its best.pt gone, say) keeps its DONE and its previous
metrics.json beside the new error.txt (the runner removes error.txt whenever a job succeeds). Its
numbers are in the tables, but they are those of its previous evaluation, which may no longer be the
suite's: its model's seeds cell carries STALE_MARK and the note lists it (`Failure.kept`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rsqair_bench.core.io import read_regular_file
from rsqair_bench.metrics import MISSING, paper_name_or_model
from rsqair_bench.report.textfmt import markdown_name

_SEED_DIR = re.compile(r"^seed(-?\d+)$")


STALE_MARK = "§"


@dataclass(frozen=True)
class Failure:
    model: str
    seed: int
    reason: str  # the last line of error.txt: the exception and its message
    path: Path  # the error.txt
    kept: bool = False  # a metrics.json of an earlier evaluation is beside it (a failed re-evaluation)


def _reason(path: Path) -> str:
    try:  # a regular file only: a FIFO would block the report
        text = read_regular_file(path).decode(errors="replace")
    except OSError as err:
        return f"error.txt unreadable ({err.strerror or err})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "failed (empty error.txt)"


def collect_failures(results_dir: Path) -> list[Failure]:
    """Jobs with error.txt: failed ones, and (`kept`) finished ones whose re-evaluation failed.

    Why the second kind: after a failed re-evaluation the report showed the job's old split entries as
    current and listed no failure, because a job with metrics.json was skipped here."""
    failures = []
    for path in sorted(Path(results_dir).glob("*/seed*/error.txt")):
        match = _SEED_DIR.match(path.parent.name)
        if not match:
            continue
        kept = (path.parent / "metrics.json").exists()
        failures.append(Failure(path.parent.parent.name, int(match.group(1)), _reason(path), path, kept))
    return failures


def mark_kept(table: pd.DataFrame, runs: list[dict[str, Any]], failures: list[Failure]) -> pd.DataFrame:
    """STALE_MARK after the seeds cell of each model with a failed re-evaluation (`Failure.kept`)."""
    stale = {f.model for f in failures if f.kept}
    labels = {r["model"]: r.get("paper_name") or r["model"] for r in runs}
    table = table.copy()
    for model in sorted(stale):
        if labels.get(model) in table.index:
            table.loc[labels[model], "seeds"] = f"{table.loc[labels[model], 'seeds']} {STALE_MARK}"
    return table


def add_failed_models(table: pd.DataFrame, runs: list[dict[str, Any]], failures: list[Failure], expected: int) -> pd.DataFrame:
    """Append a `0/N` row (every metric `—`) for each model that failed on every seed it ran."""
    finished = {r["model"] for r in runs}
    lost = sorted({f.model for f in failures if not f.kept} - finished)
    if not lost:
        return table
    rows = pd.DataFrame(
        [{"seeds": f"0/{expected}", **{c: MISSING for c in table.columns if c != "seeds"}} for _ in lost],
        index=pd.Index([paper_name_or_model(m) for m in lost], name=table.index.name),
    )
    return pd.concat([table, rows[table.columns]])


def failures_note(failures: list[Failure], results_dir: Path) -> str:
    """Markdown lists under table.md: which job failed and why, and which re-evaluation failed (empty when none)."""
    failed = [f for f in failures if not f.kept]
    kept = [f for f in failures if f.kept]
    lines = []
    if failed:
        lines += ["", f"**Failed jobs ({len(failed)})**, not in the numbers above; rerun `run` to retry them:", ""]
        lines += [_failure_line(f, results_dir) for f in sorted(failed, key=lambda f: (f.model, f.seed))]
    if kept:
        lines += ["", f"{STALE_MARK} **Failed re-evaluations ({len(kept)})**: these jobs' numbers above are from their "
                  "previous evaluation, which may no longer be the suite's; fix the cause and rerun `run`:", ""]
        lines += [_failure_line(f, results_dir) for f in sorted(kept, key=lambda f: (f.model, f.seed))]
    return "\n".join(lines) + "\n" if lines else ""


def _failure_line(f: Failure, results_dir: Path) -> str:
    where = f.path.relative_to(results_dir) if f.path.is_relative_to(results_dir) else f.path
    return f"- {markdown_name(f.model)}/seed{f.seed}: {markdown_name(f.reason)} (`{markdown_name(where)}`)"
