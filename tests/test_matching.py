"""Object-ball matching: Hungarian assignment within a radius, duplicates, capped centre errors."""

from __future__ import annotations

import numpy as np
import pytest

from rsqair_bench.evaluation.matching import (
    ErrorTally,
    InferredTally,
    TrackedTally,
    box_centres,
    capped_ball_errors,
    match_within_radius,
    visible_balls,
)


def test_a_second_object_on_a_ball_is_a_duplicate_and_far_objects_are_not() -> None:
    balls = np.array([[10.0, 10.0], [30.0, 30.0]])
    objects = np.array([[10.5, 10.0], [11.0, 10.0], [30.0, 34.0], [45.0, 45.0]])
    tally = InferredTally(radius=5.0)
    tally.add(objects, balls)
    out = tally.summary()
    assert out["coverage"] == 1.0
    assert out["duplicates"] == pytest.approx(1 / 4)  # (11, 10) is a second object on ball 0
    assert out["strays"] == pytest.approx(1 / 4)  # (45, 45) is on no ball
    assert out["centre_error_px"] == pytest.approx((0.5 + 4.0) / 2)
    assert (out["visible_balls"], out["present_objects"]) == (2, 4)


def test_assignment_maximises_matches_before_distance() -> None:
    # greedy nearest-first would give (2, 0) to ball 0 and leave (-2.5, 0) without a ball in range
    balls = np.array([[0.0, 0.0], [4.0, 0.0]])
    objects = np.array([[2.0, 0.0], [-2.5, 0.0]])
    rows, cols, dist = match_within_radius(objects, balls, 5.0)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]
    assert sorted(dist.tolist()) == pytest.approx([2.0, 2.5])


def test_missed_balls_lower_coverage_and_empty_frames_are_safe() -> None:
    tally = InferredTally(radius=5.0)
    tally.add(np.array([[0.0, 0.0]]), np.array([[0.0, 1.0], [20.0, 20.0]]))
    tally.add(np.zeros((0, 2)), np.array([[5.0, 5.0]]))
    tally.add(np.array([[1.0, 1.0]]), np.zeros((0, 2)))
    out = tally.summary()
    assert out["coverage"] == pytest.approx(1 / 3)
    assert out["duplicates"] == 0.0 and out["present_objects"] == 2
    assert out["strays"] == pytest.approx(1 / 2)  # the object in the frame without balls
    assert InferredTally().summary()["coverage"] is None


def test_capped_errors_bound_missed_and_far_balls() -> None:
    balls = np.array([[0.0, 0.0], [20.0, 0.0], [40.0, 0.0]])
    objects = np.array([[0.0, 3.0], [20.0, 30.0]])
    errors = capped_ball_errors(objects, balls, cap=10.0)
    assert errors.tolist() == pytest.approx([3.0, 10.0, 10.0])
    tally = ErrorTally(cap=10.0)
    tally.add(objects, balls)
    tally.add(np.zeros((0, 2)), np.array([[1.0, 1.0]]))
    assert tally.mean() == pytest.approx((3.0 + 10.0 + 10.0 + 10.0) / 4)
    assert ErrorTally().mean() is None


def test_visible_balls_and_box_centres() -> None:
    groups = np.zeros((2, 5, 5), dtype=np.int64)
    groups[0, 1, 1] = 2
    groups[1, 4, 4] = 1
    groups[1, 0, 0] = 3
    assert visible_balls(groups, 3).tolist() == [[False, True, False], [True, False, True]]
    assert box_centres(np.array([[2.0, 4.0, 6.0, 10.0]])).tolist() == [[4.0, 7.0]]


def test_tracked_error_follows_the_object_id_and_compares_with_copy_last() -> None:
    """Ball 0 is tracked by id 7, which the prior moves to 1 px from the ball's new place (copy-last:
    3 px); ball 1 has no object on it at T-1 (untracked); id 9 on ball 2 is dropped by the prior (cap)."""
    tally = TrackedTally(radius=5.0, cap=10.0)
    balls_before = np.array([[10.0, 10.0], [30.0, 30.0], [40.0, 10.0]])
    balls_after = np.array([[13.0, 10.0], [30.0, 33.0], [40.0, 14.0]])
    before = np.array([[10.5, 10.0], [40.0, 11.0]])
    tally.add(before, np.array([7, 9]), np.array([[12.0, 10.0]]), np.array([7]), balls_before, balls_after)
    out = tally.summary()
    assert out["tracked_balls"] == 2 and out["tracked_fraction"] == pytest.approx(2 / 3)
    assert out["prior_error_px"] == pytest.approx((1.0 + 10.0) / 2)
    assert out["copy_last_error_px"] == pytest.approx((3.0 + 4.0) / 2)
    assert TrackedTally().summary()["prior_error_px"] is None
