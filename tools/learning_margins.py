"""Run the learned-dynamics check (tests/test_learning.py) for one seed and thread count; print its figures.

Why: the check's thresholds must hold by a margin over several seeds and over a rounding change, not on
one float trajectory. Two threads instead of one change the order of float32 sums in the matmuls, the
kind of change another CPU's kernels or a torch patch release makes.

    python tools/learning_margins.py SEED THREADS [WORKDIR]     (about 6 minutes alone on 2 cores)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_learning import run_dynamics_check  # noqa: E402


def main() -> None:
    seed, threads = int(sys.argv[1]), int(sys.argv[2])
    workdir = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(tempfile.mkdtemp())
    workdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    m = run_dynamics_check(workdir, seed, threads)
    sampled, inferred = m["matching"]["sampled"], m["matching"]["inferred"]
    row = {
        "seed": seed, "threads": threads, "data_ll": m["data_ll"]["mean"],
        "copy_last": m["references"]["copy_last"]["data_ll"],
        "gain": m["data_ll"]["mean"] - m["references"]["copy_last"]["data_ll"],
        "tracked_fraction": sampled["tracked"]["tracked_fraction"],
        "tracked_prior_px": sampled["tracked"]["prior_error_px"], "tracked_copy_px": sampled["tracked"]["copy_last_error_px"],
        "coverage": inferred["coverage"], "duplicates": inferred["duplicates"],
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
