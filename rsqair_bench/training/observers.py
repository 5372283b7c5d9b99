"""The one interface between the training loop and everything a run writes besides its weights.

Why: the loop (`training/loop.py`) should read top to bottom as the training protocol; the CSV log,
TensorBoard, the progress bar, status.json and the checkpoints are observers it notifies at fixed
points, in the spirit of PyTorch Lightning's `Callback`. An observer never changes the run's
numbers: it reads `TrainRun`/`TrainState` and writes files, so adding or removing one cannot change
a loss, a random draw or a metric. Hooks are called in the order of the observer list.
"""

from __future__ import annotations

from dataclasses import dataclass

from rsqair_bench.training.state import TrainRun

# train_log.csv's columns, in order; TensorBoard names its scalars after them
LOG_COLUMNS = ["iteration", "seq_len", "iwae_bound", "loss", "lr", "seconds", "sequences_per_s"]


@dataclass(frozen=True)
class LogRow:
    """One train_log.csv row: means over the steps since the previous row, built once by the loop so
    that every observer reports the same figures."""

    iteration: int
    seq_len: int
    bound: float  # mean IWAE bound of the finite steps since the last row
    loss: float
    lr: float
    seconds: float  # wall time over all (resumed) runs
    sequences_per_s: float  # over the optimisation steps since the last row

    def cells(self) -> list[int | str]:
        """The row as written (LOG_COLUMNS order): repr keeps every digit of the floats that matter."""
        return [self.iteration, self.seq_len, repr(self.bound), repr(self.loss), repr(self.lr),
                f"{self.seconds:.3f}", f"{self.sequences_per_s:.3f}"]


class TrainingObserver:
    """Hooks of the training loop; every one does nothing unless overridden.

    A base class rather than a Protocol so that an observer implements only the hooks it needs."""

    def on_start(self, run: TrainRun) -> None:
        """Before the first step of this (possibly resumed) run: open files, draw the bar."""

    def on_compile_start(self, run: TrainRun) -> None:
        """Before a step that compiles (the run's first step with model_config.compile)."""

    def on_step(self, run: TrainRun, bound: float) -> None:
        """After every optimisation step; `bound` is NaN for a skipped step."""

    def on_compile_end(self, run: TrainRun, seconds: float) -> None:
        """After the compiling step, which took `seconds` (compilation included)."""

    def on_log(self, run: TrainRun, row: LogRow) -> None:
        """Every `train.log_every` steps: the means since the last row."""

    def on_validation(self, run: TrainRun, score: float, improved: bool) -> None:
        """After a validation; `run.state` already says whether training finished or stopped early."""

    def on_checkpoint(self, run: TrainRun) -> None:
        """checkpoint.pt is due (`train.checkpoint_every`, the end of training, or a `max_steps` pause)."""

    def on_end(self, run: TrainRun, completed: bool) -> None:
        """After the last step, also when the loop raised (`completed` False): close what on_start opened."""


class Observers(TrainingObserver):
    """Several observers notified as one, in list order."""

    def __init__(self, observers: list[TrainingObserver]) -> None:
        self.observers = observers

    def on_start(self, run: TrainRun) -> None:
        for observer in self.observers:
            observer.on_start(run)

    def on_compile_start(self, run: TrainRun) -> None:
        for observer in self.observers:
            observer.on_compile_start(run)

    def on_step(self, run: TrainRun, bound: float) -> None:
        for observer in self.observers:
            observer.on_step(run, bound)

    def on_compile_end(self, run: TrainRun, seconds: float) -> None:
        for observer in self.observers:
            observer.on_compile_end(run, seconds)

    def on_log(self, run: TrainRun, row: LogRow) -> None:
        for observer in self.observers:
            observer.on_log(run, row)

    def on_validation(self, run: TrainRun, score: float, improved: bool) -> None:
        for observer in self.observers:
            observer.on_validation(run, score, improved)

    def on_checkpoint(self, run: TrainRun) -> None:
        for observer in self.observers:
            observer.on_checkpoint(run)

    def on_end(self, run: TrainRun, completed: bool) -> None:
        for observer in self.observers:
            observer.on_end(run, completed)
