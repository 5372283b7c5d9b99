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
    iterations) must rise by more than BOUND_GAIN nats per 3-frame window, and best.pt's objects must
    cover more than MIN_COVERAGE of the balls on 100 test sequences (untrained: about 0.01).

    MEASURED_TABLE_BOUND

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

    MEASURED_TABLE_DYNAMICS

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
