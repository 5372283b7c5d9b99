"""Failed jobs in the report: a model whose seeds all failed keeps its row (`0/N`), and why is listed.

A failed job has no metrics.json, so a report built from metrics.json alone would drop it
silently and a model that never trained would simply vanish from the table. The runner leaves
`error.txt` (the traceback, or "worker crashed: ...") in a failed job's directory
(<results>/<model>/seed<k>/); this module reads those files, nothing else.
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


@dataclass(frozen=True)
class Failure:
    model: str
    seed: int
    reason: str  # the last line of error.txt: the exception and its message
    path: Path  # the error.txt


def _reason(path: Path) -> str:
    try:  # a regular file only: a FIFO would block the report
        text = read_regular_file(path).decode(errors="replace")
    except OSError as err:
        return f"error.txt unreadable ({err.strerror or err})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "failed (empty error.txt)"


def collect_failures(results_dir: Path) -> list[Failure]:
    """Jobs with error.txt and without metrics.json (a job that finished later is not a failure)."""
    failures = []
    for path in sorted(Path(results_dir).glob("*/seed*/error.txt")):
        match = _SEED_DIR.match(path.parent.name)
        if not match or (path.parent / "metrics.json").exists():
            continue
        failures.append(Failure(path.parent.parent.name, int(match.group(1)), _reason(path), path))
    return failures


def add_failed_models(table: pd.DataFrame, runs: list[dict[str, Any]], failures: list[Failure], expected: int) -> pd.DataFrame:
    """Append a `0/N` row (every metric `—`) for each model that failed on every seed it ran."""
    finished = {r["model"] for r in runs}
    lost = sorted({f.model for f in failures} - finished)
    if not lost:
        return table
    rows = pd.DataFrame(
        [{"seeds": f"0/{expected}", **{c: MISSING for c in table.columns if c != "seeds"}} for _ in lost],
        index=pd.Index([paper_name_or_model(m) for m in lost], name=table.index.name),
    )
    return pd.concat([table, rows[table.columns]])


def failures_note(failures: list[Failure], results_dir: Path) -> str:
    """Markdown list under table.md: which job failed and why (empty when none did)."""
    if not failures:
        return ""
    lines = ["", f"**Failed jobs ({len(failures)})**, not in the numbers above; rerun `run` to retry them:", ""]
    for f in sorted(failures, key=lambda f: (f.model, f.seed)):
        where = f.path.relative_to(results_dir) if f.path.is_relative_to(results_dir) else f.path
        lines.append(f"- {markdown_name(f.model)}/seed{f.seed}: {markdown_name(f.reason)} (`{markdown_name(where)}`)")
    return "\n".join(lines) + "\n"
