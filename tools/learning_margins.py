"""Run the learned-dynamics check (tests/test_learning.py) for one seed and thread count; print its figures.

Why: the check's thresholds must hold by a margin over several seeds and over a rounding change, not on
one float trajectory. `--perturb` adds one float32 rounding step's worth of noise (relative 2^-24) to
every initial weight: the kind of difference another CPU's kernels or a torch patch release makes, which
then grows along the trajectory as any rounding difference does. (Two threads instead of one would
change the summation order too, but on a loaded 2-core machine a 2-thread run took over an hour.)

    python tools/learning_margins.py SEED THREADS [WORKDIR] [--perturb]    (about 6 minutes alone on 2 cores)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_learning import run_dynamics_check  # noqa: E402

ULP = 2.0**-24  # float32's unit roundoff


def perturbed_factory(seed: int):  # noqa: ANN201 - a ModelFactory
    """The registry's models with every initial weight multiplied by (1 + ULP * N(0, 1)), noise seeded."""
    from rsqair_bench.registry import build_model

    def build(name: str, config):  # noqa: ANN001, ANN202
        model = build_model(name, config)
        g = torch.Generator().manual_seed(10_000 + seed)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + ULP * torch.randn(p.shape, generator=g))
        return model

    return build


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--perturb"]
    seed, threads = int(args[0]), int(args[1])
    workdir = Path(args[2]) if len(args) > 2 else Path(tempfile.mkdtemp())
    workdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    factory = perturbed_factory(seed) if "--perturb" in sys.argv else None
    m = run_dynamics_check(workdir, seed, threads, factory)
    sampled, inferred = m["matching"]["sampled"], m["matching"]["inferred"]
    row = {
        "seed": seed, "threads": threads, "perturbed": factory is not None, "data_ll": m["data_ll"]["mean"],
        "copy_last": m["references"]["copy_last"]["data_ll"],
        "gain": m["data_ll"]["mean"] - m["references"]["copy_last"]["data_ll"],
        "tracked_fraction": sampled["tracked"]["tracked_fraction"],
        "tracked_prior_px": sampled["tracked"]["prior_error_px"], "tracked_copy_px": sampled["tracked"]["copy_last_error_px"],
        "coverage": inferred["coverage"], "duplicates": inferred["duplicates"],
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
