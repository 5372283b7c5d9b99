"""train_log.csv: one row every `train.log_every` steps, appended and flushed as it is written, so
a killed run leaves every row up to its last step; on resume the rows past the checkpoint are
trimmed first (they would otherwise appear twice)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any

from rsqair_bench.core.io import atomic_write_text
from rsqair_bench.training.observers import LOG_COLUMNS, LogRow, TrainingObserver
from rsqair_bench.training.state import TrainRun

LOG_FILE = "train_log.csv"


class CsvLog(TrainingObserver):
    """Appends the log rows to `JOB/train_log.csv`."""

    def __init__(self) -> None:
        self.file: IO[str] | None = None
        self.writer: Any = None

    def on_start(self, run: TrainRun) -> None:
        path = run.out_dir / LOG_FILE
        trim_log(path, run.state.iteration)
        self.file = path.open("a", newline="")
        self.writer = csv.writer(self.file)

    def on_log(self, run: TrainRun, row: LogRow) -> None:
        self.writer.writerow(row.cells())
        self.file.flush()  # type: ignore[union-attr]

    def on_end(self, run: TrainRun, completed: bool) -> None:
        if self.file is not None:
            self.file.close()


def trim_log(path: Path, keep_through: int) -> None:
    """Keep the header and rows with iteration <= keep_through (drops rows a killed run wrote past its checkpoint)."""
    rows: list[list[str]] = []
    if path.is_file():
        with path.open(newline="") as fh:
            for row in csv.reader(fh):
                if len(row) != len(LOG_COLUMNS) or row[0] == "iteration":
                    continue
                try:
                    if int(row[0]) <= keep_through:
                        rows.append(row)
                except ValueError:
                    continue
    lines = [",".join(LOG_COLUMNS)] + [",".join(r) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")
