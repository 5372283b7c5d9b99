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
    """1-3 balls, 3-frame windows, up to 3 objects, n_hidden 64, 10x10 glimpses, the learning suite's
    switches and Adam 3e-4, 1,200 iterations (`learning_checks.bound_check_job`). The training IWAE
    bound (means of 100 iterations) must rise by more than 300 nats per sequence, and best.pt's objects
    must cover more than 15% of the balls (untrained: 0.010).

    MEASURED_TABLE_BOUND

    Why these switches and not the reference's (rnn prior, image discovery, no clipping): with the
    reference's the check stayed at its initial bound on some trajectories: on issue 30's AVX-512 +
    AMX machine (755.3 -> 765.4, every run), and here after a float32 rounding change (stacking
    matmul weights, docs/sqair.md "Step speed": 755 -> 764). REFERENCE_EVIDENCE
    A check that takes off on one trajectory and not on another rides the machine's rounding; the
    learning suite's switches take off on every seed and kernel family measured. The reference model's
    learning is shown at paper size (results/paper-size-cpu/README.md), not in CI.

    Count accuracy is printed, not asserted: at this scale it was noise (seeds 0-2: 0.236 / 0.444 /
    0.340 against a majority answer of 0.417; untrained 0.354)."""
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
