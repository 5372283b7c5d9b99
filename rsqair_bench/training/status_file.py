"""`JOB/status.json` for `run`'s live display: the phase (`compiling` while the first compiled step
compiles, `training`, `training ended`), the iteration and the last bound."""

from __future__ import annotations

from rsqair_bench.core.job_status import StatusWriter
from rsqair_bench.training.observers import TrainingObserver
from rsqair_bench.training.state import TrainRun


class StatusFile(TrainingObserver):
    """Keeps status.json current through `core.job_status.StatusWriter` (which limits how often it writes)."""

    def __init__(self) -> None:
        self.status: StatusWriter | None = None

    def on_start(self, run: TrainRun) -> None:
        cfg = run.cfg
        budget = None if cfg.max_minutes is None else 60.0 * cfg.max_minutes
        self.status = StatusWriter(run.out_dir, run.job.model, run.job.seed, cfg.max_iterations, run.state.iteration,
                                   budget_s=budget, elapsed_s=run.state.elapsed)

    def on_compile_start(self, run: TrainRun) -> None:
        self.status.phase("compiling")  # type: ignore[union-attr]

    def on_step(self, run: TrainRun, bound: float) -> None:
        self.status.step(run.state.iteration, bound)  # type: ignore[union-attr]

    def on_compile_end(self, run: TrainRun, seconds: float) -> None:
        self.status.phase("training")  # type: ignore[union-attr]

    def on_end(self, run: TrainRun, completed: bool) -> None:
        if self.status is not None:
            self.status.phase("training ended")
