"""TensorBoard scalars (`JOB/tensorboard/`) when the `[dev]` extra installed tensorboard; without it
this observer does nothing, since TensorBoard is a convenience and train_log.csv the record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rsqair_bench.training.observers import LOG_COLUMNS, LogRow, TrainingObserver
from rsqair_bench.training.state import TrainRun


def _summary_writer(out_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: optional
        return None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


class TensorBoardLog(TrainingObserver):
    """The log rows' figures as `train/<column>` and each validation as `validation/iwae_bound`."""

    def __init__(self) -> None:
        self.writer: Any = None

    def on_start(self, run: TrainRun) -> None:
        self.writer = _summary_writer(run.out_dir)

    def on_log(self, run: TrainRun, row: LogRow) -> None:
        if self.writer is not None:
            cells = row.cells()  # the figures as train_log.csv has them (seconds rounded as there)
            for name, value in zip(LOG_COLUMNS[1:], cells[1:]):
                self.writer.add_scalar(f"train/{name}", float(value), row.iteration)

    def on_validation(self, run: TrainRun, score: float, improved: bool) -> None:
        if self.writer is not None:
            self.writer.add_scalar("validation/iwae_bound", score, run.state.iteration)

    def on_end(self, run: TrainRun, completed: bool) -> None:
        if self.writer is not None:
            self.writer.close()
