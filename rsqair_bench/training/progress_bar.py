"""The tqdm bar of a training run (drawn only when `core.progress.progress_enabled` says so: not in
the runner's worker processes, whose display is the live table)."""

from __future__ import annotations

from typing import Any

from rsqair_bench.core.progress import progress_enabled
from rsqair_bench.training.observers import LogRow, TrainingObserver
from rsqair_bench.training.state import TrainRun


class ProgressBar(TrainingObserver):
    """One tick per step; the current sequence length and mean bound after every log row."""

    def __init__(self, progress: bool) -> None:
        self.progress = progress
        self.bar: Any = None

    def on_start(self, run: TrainRun) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=run.cfg.max_iterations, initial=run.state.iteration,
                        disable=not progress_enabled(self.progress), unit="it")

    def on_step(self, run: TrainRun, bound: float) -> None:
        self.bar.update(1)

    def on_log(self, run: TrainRun, row: LogRow) -> None:
        self.bar.set_postfix(L=row.seq_len, bound=f"{row.bound:.1f}")

    def on_end(self, run: TrainRun, completed: bool) -> None:
        if self.bar is not None:
            self.bar.close()
