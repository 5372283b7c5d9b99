"""It must learn: a small SQAIR trained through the real pipeline (generated data, train_job,
evaluate_checkpoint) improves its IWAE bound and puts objects on balls; and it covers the balls and its
prior predicts the next frame better than copying the last one.

What each check runs and asserts is in `tests/learning_checks.py` (`CHECKS`), shared with
`tools/learning_margins.py`, which measures every threshold's margin over seeds x kernel families x a
rounding perturbation (docs/reproducibility.md). Both checks use the learning suite's switches
(`suites/learn.yaml`), run eager on one thread, and are deterministic for a given CPU kind and torch
build; on another CPU they follow another trajectory, which is why each threshold holds by the margin
measured in its docstring.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.learning_checks import BOUNDS, DYNAMICS, run_check


@pytest.fixture
def restore_torch_threads() -> Iterator[None]:
    """A check sets the thread count it was measured with; put the caller's back afterwards."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_sqair_improves_its_bound_and_finds_the_balls(tmp_path: Path, restore_torch_threads: None) -> None:
    """suites/learn.yaml's 4-ball data, model and optimizer (n_hidden 64, 10x10 glimpses, velocity
    prior, residual discovery, Adam 3e-4, clipping at 10) on 3-frame windows, no lr decay, eager, one
    thread, 600 iterations (`learning_checks.bound_check_job`). The training IWAE bound (means of 100
    iterations) must rise by more than 500 nats per 3-frame window (`BOUND_GAIN`), and best.pt's objects
    must cover more than half of the balls on 100 test sequences (`MIN_BOUND_COVERAGE`; an untrained model
    covers about 1% of them on the same data at 10 frames, as the dynamics check says).

    Measured on this repository's 2-core AMD EPYC (AVX-512, no AMX), torch 2.13.0+cpu, 2026-12-04
    (`python tools/learning_margins.py run --out FILE --checks bound --seeds S --families F`, the same
    function; `default` is the CPU's own kernels, AVX-512 here; `avx2` caps ATen, MKL and oneDNN at AVX2):

    | run | bound gain (nats) | coverage | duplicates | count accuracy |
    |---|---|---|---|---|
    | seed 0, default | 1,912.4 (-511.2 -> 1,401.3) | 0.916 | 0.026 | 0.880 |
    | seed 0, avx2 | 1,903.0 (-511.2 -> 1,391.8) | 0.916 | 0.022 | 0.907 |
    | seed 1, default | 1,846.9 (-507.1 -> 1,339.9) | 0.894 | 0.061 | 0.967 |
    | seed 1, avx2 | 1,848.9 (-507.1 -> 1,341.8) | 0.894 | 0.062 | 0.970 |
    | seed 2, default | 1,896.6 (-527.1 -> 1,369.5) | 0.901 | 0.031 | 0.920 |
    | seed 2, avx2 | 1,887.2 (-527.1 -> 1,360.2) | 0.905 | 0.043 | 0.957 |
    | seed 0, default, rounding perturbed (2026-12-05) | 1,910.7 (-511.2 -> 1,399.5) | 0.909 | 0.014 | 0.837 |
    | seed 0, avx2, rounding perturbed (2026-12-05) | 1,916.8 (-511.2 -> 1,405.6) | 0.906 | 0.025 | 0.880 |
    | seed 0, default, Intel Xeon with AMX | 1,899.0 (-511.2 -> 1,387.8) | 0.917 | 0.021 | 0.913 |
    | seed 1, default, Intel Xeon with AMX | 1,845.8 (-507.1 -> 1,338.7) | 0.886 | 0.058 | 0.967 |
    | seed 2, default, Intel Xeon with AMX | 1,886.2 (-527.1 -> 1,359.1) | 0.902 | 0.039 | 0.967 |
    | seed 0, avx2, Intel Xeon with AMX | 1,912.2 (-511.2 -> 1,401.0) | 0.916 | 0.033 | 0.927 |
    | seed 1, avx2, Intel Xeon with AMX | 1,845.0 (-507.1 -> 1,337.9) | 0.885 | 0.074 | 0.967 |
    | seed 2, avx2, Intel Xeon with AMX | 1,907.1 (-527.1 -> 1,380.0) | 0.909 | 0.023 | 0.930 |
    | threshold | > 500 | > 0.5 | not asserted | not asserted |
    | margin of the worst run | 1,345.0 (seed 1, avx2, AMX) | 0.385 (seed 1, avx2, AMX) | — | — |

    The AMX rows ran on a 2-core Intel Xeon with AVX-512 and AMX, issue 30's kind of machine, on
    2026-12-05 (`run --checks dynamics bound --seeds 0 1 2 --families default avx2 --jobs 2`).

    A model that stays at the empty frame gains about 60 nats here (-511 -> -451 over the first 200
    iterations, before seed 0 took off) and covers about 1% of the balls, so each threshold sits between
    the two outcomes, far from both. The perturbed rows: `run --checks bound --seeds 0 --families
    default avx2 --perturb 0`, 2026-12-05, on a fresh machine of the same kind, whose unperturbed
    seed-0 runs gave the rows above to the last digit (1,912.4 and 1,903.0).

    Why this setting. Until issue 30 the check ran the reference's switches (rnn prior, image
    discovery, no clipping) on 1-3 balls, Adam 3e-4 cut to a third at iterations 240 and 600, two
    threads. It took off on some trajectories and not on others: 755.4 -> 1,104.4 nats here; 755.3 ->
    765.4 on issue 30's AVX-512 + AMX machine, every run; 755 -> 764 here after a float32 rounding
    change (stacked matmul weights, docs/sqair.md "Step speed"); here under AVX2 kernels 755.4 / 772.5 /
    779.2 for the first 300 iterations and 935.6 at 400, after its learning rate had been cut. On 1-3
    balls the learning suite's switches stayed at the empty frame as well (seed 0: 744.9 -> 771.4
    through 700 iterations, then stopped). A check that takes off on one trajectory and not on another
    rides the machine's rounding, so it now trains on learn.yaml's 4 balls, where these switches take
    off on every seed and kernel family measured (between iterations 200 and 300 on seed 0). The
    reference model's learning is shown at paper size (results/paper-size-cpu/README.md), not in CI.

    Count accuracy is printed, not asserted: on 1-3 balls it was noise (seeds 0-2: 0.236 / 0.444 /
    0.340 against a majority answer of 0.417; untrained 0.354), and on 4 balls every frame has 4."""
    figures = run_check(BOUNDS, tmp_path)
    print(f"\nlearning check: IWAE bound {figures['bound_first']:.1f} -> {figures['bound_last']:.1f} "
          f"(gain {figures['bound_gain']:.1f}); coverage {figures['coverage']:.3f}; duplicates "
          f"{figures['duplicates']:.3f}; count accuracy {figures['count_accuracy']:.3f} (not asserted)")
    assert not BOUNDS.failures(figures), f"{BOUNDS.failures(figures)}; figures {figures}"


@pytest.mark.slow
def test_sqair_learns_dynamics_its_sampled_frame_beats_copy_last(tmp_path: Path, restore_torch_threads: None) -> None:
    """The learned-dynamics check: 4 balls, the learning suite's switches (velocity prior, small
    initial prior std, VIMCO, clipping, residual discovery with first-frame boxes on the residual's
    peak), eager, 1,000 iterations (`learning_checks.dynamics_check_job`). The frame sampled from the
    propagation prior must beat copying the last observed frame by more than 150 nats on the same
    frames; the inferred frames must cover the balls (>= 0.75) without duplicates (<= 0.2); the model
    must track most balls (> 0.5).

    Measured on the same AMD EPYC, torch 2.13.0+cpu (sampled frame 10, copy-last -114.7 nats on these 50
    sequences); the `default` rows on 2026-11-29 with the tool's earlier form (`python
    tools/learning_margins.py SEED 1 [--perturb]`, the same function; the training code is unchanged
    since), the `avx2` rows on 2026-12-04 (`run --checks dynamics --seeds S --families avx2`):

    | run | gain over copy-last (nats) | tracked fraction | coverage | duplicates | tracked prior / copy-last px |
    |---|---|---|---|---|---|
    | seed 0, default | 266.1 | 0.949 | 0.960 | 0.011 | 2.83 / 3.03 |
    | seed 1, default | 209.7 | 0.862 | 0.873 | 0.097 | 3.01 / 3.04 |
    | seed 2, default | 278.9 | 0.924 | 0.930 | 0.028 | 2.82 / 3.04 |
    | seed 0, default, rounding perturbed | 226.2 | 0.944 | 0.944 | 0.017 | 3.05 / 3.03 |
    | seed 0, avx2 (what `.ci/run`'s second family runs) | 259.1 | 0.938 | 0.947 | 0.017 | 2.74 / 3.03 |
    | seed 1, avx2 | 247.3 | 0.935 | 0.934 | 0.016 | 2.89 / 3.03 |
    | seed 2, avx2 (2026-12-05) | 309.9 | 0.945 | 0.945 | 0.027 | 2.81 / 3.05 |
    | seed 0, default, Intel Xeon with AMX (2026-12-05) | 270.7 | 0.948 | 0.955 | 0.011 | 2.77 / 3.03 |
    | seed 1, default, Intel Xeon with AMX (2026-12-05) | 271.2 | 0.928 | 0.941 | 0.014 | 2.68 / 3.03 |
    | seed 2, default, Intel Xeon with AMX (2026-12-05) | 332.8 | 0.938 | 0.945 | 0.018 | 2.57 / 3.03 |
    | seed 0, avx2, Intel Xeon with AMX (2026-12-05) | 254.0 | 0.944 | 0.954 | 0.010 | 2.84 / 3.06 |
    | seed 1, avx2, Intel Xeon with AMX (2026-12-05) | 263.6 | 0.947 | 0.948 | 0.011 | 2.80 / 3.04 |
    | seed 2, avx2, Intel Xeon with AMX (2026-12-05) | 302.9 | 0.949 | 0.948 | 0.021 | 2.73 / 3.03 |
    | threshold | > 150 | > 0.5 | >= 0.75 | <= 0.2 | not asserted |
    | margin of the worst run (seed 1, default, AMD) | 59.7 | 0.36 | 0.12 | 0.10 | — |

    Three seeds under each family on the AMD EPYC, and on an Intel Xeon with AVX-512 and AMX (the same
    command as the bound check's AMX rows). The perturbed avx2 run was not measured
    (docs/reproducibility.md gives the command).

    Every threshold is far from what an untrained model scores (coverage 0.01, gain below 0: it draws
    nothing). The tracked prior error against copy-last's is printed, not asserted: one rounding change
    flips it (seed 0 perturbed: 3.05 px against copy-last's 3.03, seed 1: 3.01 against 3.04, measured
    2026-11-29), so the data LL gain carries the claim "the prior predicts the next frame better than
    copying the last one"."""
    figures = run_check(DYNAMICS, tmp_path)
    print(f"\ndynamics check: sampled frame 10 data LL {figures['data_ll']:.1f} vs copy-last {figures['copy_last']:.1f} "
          f"(const-velocity oracle {figures['const_velocity']:.1f}); prior centre error "
          f"{figures['prior_centre_error_px']:.2f} px (capped, copy-last {figures['copy_last_centre_error_px']:.2f}); "
          f"tracked fraction {figures['tracked_fraction']:.3f}, tracked prior / copy-last error "
          f"{figures['tracked_prior_px']:.2f} / {figures['tracked_copy_last_px']:.2f} px; coverage "
          f"{figures['coverage']:.3f}, duplicates {figures['duplicates']:.3f}")
    assert not DYNAMICS.failures(figures), f"{DYNAMICS.failures(figures)}; figures {figures}"
