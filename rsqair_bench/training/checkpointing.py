"""The checkpoints a run writes: `best.pt` when a validation improves on the best (and, at the end,
the last model when no validation was finite), `checkpoint.pt` whenever the loop says one is due.
The loop decides when; this observer writes `TrainRun.snapshot` through `checkpoint.save_checkpoint`
(atomic), so the checkpoint layout stays owned by `checkpoint.py` and `training/state.py`."""

from __future__ import annotations

from rsqair_bench import checkpoint as ckpt
from rsqair_bench.training.observers import TrainingObserver
from rsqair_bench.training.state import TrainRun


class Checkpointer(TrainingObserver):
    """Writes best.pt and checkpoint.pt."""

    def on_validation(self, run: TrainRun, score: float, improved: bool) -> None:
        if improved:
            ckpt.save_checkpoint(run.best, run.snapshot("best"))

    def on_checkpoint(self, run: TrainRun) -> None:
        ckpt.save_checkpoint(run.latest, run.snapshot("latest"))

    def on_end(self, run: TrainRun, completed: bool) -> None:
        if completed and run.state.finished and not run.best.exists():  # every validation was non-finite:
            ckpt.save_checkpoint(run.best, run.snapshot("best"))       # keep the last model as best
