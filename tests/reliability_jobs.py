"""Fake train/eval/data steps for the crash-isolation test (case 3 of tests/test_reliability.py).

A separate module without torch: each job runs in a fresh spawned process that imports it, so it
must import fast.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from rsqair_bench.config import DataSetConfig, EvalConfig, EvalSplit, JobConfig


def crash_train(job: JobConfig, out_dir: Path, progress: bool = False) -> dict[str, Any]:
    """A job whose directory holds `kill_self` SIGKILLs its own process, as a bad plugin relation could."""
    out_dir = Path(out_dir)
    if (out_dir / "kill_self").exists():
        os.kill(os.getpid(), signal.SIGKILL)
    (out_dir / "best.pt").write_text("best")
    return {"iterations": 1, "seconds": 0.1, "sequences_per_s": 1.0, "peak_memory_mb": 1.0,
            "best_validation_bound": -1.0, "best_iteration": 1, "parameters": {"total": 1, "relation": 0},
            "config_hash": "fake", "paper_name": "SQAIR"}


def crash_eval(checkpoint: Path, data_path: str, split: EvalSplit, eval_cfg: EvalConfig, device: str = "auto",
               seed: int = 0) -> dict:
    per = [1.0] * eval_cfg.samples
    return {"data": data_path, "split": split.split, "max_objects": 4, "frames": split.frames, "sequences": 1,
            "samples": eval_cfg.samples, "data_ll": {"mean": 1.0, "std": 0.0, "per_sample": per},
            "relational_ll": {"mean": 1.0, "std": 0.0, "per_sample": per}, "sequences_with_collision": 0,
            "iwae_bound": {"mean": -1.0, "std": 0.0}, "count_accuracy": 1.0, "eval_sequences_per_s": 1.0,
            "peak_memory_mb": 1.0, "references": None}


def no_data(ds: DataSetConfig) -> Path:
    return Path(ds.path)
