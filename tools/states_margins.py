"""Run the state-space positive control (tests/test_states_learning.py) for one list of seeds; print its figures.

Why: the control's threshold must hold by a margin over several seed lists and under another set of CPU
kernels, not on one float trajectory. Run it a second time with `ATEN_CPU_CAPABILITY=avx2
MKL_ENABLE_INSTRUCTIONS=AVX2` (torch then uses its AVX2 kernels on an AVX-512 CPU: other float rounding).

    python tools/states_margins.py 0,1,2 [WORKDIR]      (about 75 s of CPU time, two jobs at a time)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_states_learning import TARGET_GAIN_PX, colliding_errors  # noqa: E402


def main() -> int:
    import torch

    seeds = [int(s) for s in sys.argv[1].split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tmp)
        errors = colliding_errors(workdir, seeds)
    none, relation = errors["sqair"], errors["sqair+in"]
    gain = statistics.mean(none) - statistics.mean(relation)
    print(json.dumps({
        "seeds": seeds, "kernels": torch.backends.cpu.get_cpu_capability(), "no_relation_px": none, "in_px": relation,
        "gain_px": gain, "margin_px": gain - TARGET_GAIN_PX, "seed_gap_px": min(none) - max(relation),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
