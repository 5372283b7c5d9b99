"""Significance statistics on fixed numbers, checked against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rsqair_bench.report.significance import (
    Comparison,
    bootstrap_ci,
    compare,
    comparison_rows,
    holm,
    metrics_to_test,
    seed_means,
    significance_table,
    welch_p_value,
)


def test_welch_equal_variances_matches_the_closed_form_t4_cdf() -> None:
    # a = 1,2,3 and b = 4,5,6: difference 3, both variances 1, se = sqrt(1/3 + 1/3), t = 3 / se, df = 4.
    t = 3.0 / math.sqrt(2.0 / 3.0)
    u = t / math.sqrt(t * t + 4.0)
    p_by_hand = 1.0 - 1.5 * (u - u**3 / 3.0)  # two-sided tail of Student's t with 4 degrees of freedom
    assert p_by_hand == pytest.approx(0.0213116, abs=1e-6)
    assert welch_p_value([1, 2, 3], [4, 5, 6]) == pytest.approx(p_by_hand, rel=1e-9)
    assert welch_p_value([4, 5, 6], [1, 2, 3]) == pytest.approx(p_by_hand, rel=1e-9)  # two-sided


def test_welch_uses_unequal_variances_and_satterthwaite_df() -> None:
    a, b = [1.0, 2.0, 3.0], [2.0, 6.0, 10.0, 14.0]  # variances 1 and 80/3
    va, vb = 1.0 / 3.0, (80.0 / 3.0) / 4.0  # s^2 / n per group
    t = (8.0 - 2.0) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2.0 + vb**2 / 3.0)
    assert df == pytest.approx(49.0 / (1.0 / 18.0 + 400.0 / 27.0))  # = 3.295; Student's pooled test would use 5
    assert welch_p_value(a, b) == pytest.approx(2.0 * stats.t.sf(t, df), rel=1e-9)


def test_no_variance_at_all_is_untestable() -> None:
    assert math.isnan(welch_p_value([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]))
    assert bootstrap_ci([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]) == (1.0, 1.0)


def test_holm_by_hand() -> None:
    # sorted: 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> running max 0.06; nan is not a test
    adjusted = holm([0.01, 0.04, 0.03, math.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3])
    assert holm([0.5, 0.2]) == pytest.approx([0.5, 0.4])
    assert holm([0.9, 0.8, 0.7]) == pytest.approx([1.0, 1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_bootstrap_ci_is_deterministic_and_inside_the_possible_range() -> None:
    a, b = [10.0, 12.0, 11.0, 13.0, 9.0], [14.0, 15.0, 13.0, 17.0, 16.0]
    low, high = bootstrap_ci(a, b)
    assert (low, high) == bootstrap_ci(a, b)
    assert min(b) - max(a) <= low < np.mean(b) - np.mean(a) < high <= max(b) - min(a)
    assert low > 0  # every seed of b beats the mean of a by more than a's spread


def test_compare_needs_three_seeds_each() -> None:
    few = compare([1.0, 2.0], [3.0, 4.0, 5.0])
    assert not few.testable and few.not_tested_reason() == "n/a (2 seeds)"
    assert few.difference == pytest.approx(2.5) and math.isnan(few.p_value)
    enough = compare([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert enough.testable and enough.difference == pytest.approx(3.0)
    assert enough.p_value == pytest.approx(0.0213116, abs=1e-6)


def test_rows_mark_only_what_survives_holm() -> None:
    tests = [
        ({"model": "A"}, Comparison(5, 5, 1.0, 0.5, 1.5, 0.01)),  # Holm: 0.01 x 2 = 0.02 -> *
        ({"model": "B"}, Comparison(5, 5, 1.0, 0.1, 1.9, 0.03)),  # 0.03 x 1 = 0.03, but running max keeps 0.03 -> *
        ({"model": "C"}, Comparison(2, 5, 4.0)),  # not tested, not counted by Holm
    ]
    rows = comparison_rows(tests).set_index("model")
    assert rows.loc["A", "p (Holm)"] == "0.020" and rows.loc["A", "significant"] == "*"
    assert rows.loc["B", "p (Holm)"] == "0.030" and rows.loc["B", "significant"] == "*"
    assert rows.loc["C", "p (Welch)"] == "n/a (2 seeds)" and rows.loc["C", "difference"] == "+4.00"
    assert rows.loc["A", "95% CI"] == "[+0.50, +1.50]"


def _run(model: str, seed: int, samples: list[float]) -> dict:
    return {"model": model, "seed": seed, "splits": {"s": {"data_ll": {"mean": float(np.mean(samples)), "per_sample": samples}}}}


def test_seed_means_average_samples_within_a_seed_first() -> None:
    runs = [_run("m", 0, [1.0, 3.0]), _run("m", 1, [10.0, 20.0, 30.0])]
    assert seed_means(runs, "s", "data_ll") == {0: 2.0, 1: 20.0}
    assert seed_means(runs, "other", "data_ll") == {}


def test_table_tests_seed_means_not_samples() -> None:
    base = [_run("sqair", s, [float(s), float(s) + 2.0]) for s in range(3)]  # seed means 1, 2, 3
    model = [_run("x", s, [s + 3.0, s + 5.0]) for s in range(3)]  # seed means 4, 5, 6
    table = significance_table(base + model, "sqair", ["sqair", "x"], ["s"], {"x": "X"})
    row = table.iloc[0]
    assert (row["model"], row["metric"], row["seeds"], row["difference"]) == ("X", "data LL", "3 vs 3", "+3.00")
    assert row["p (Welch)"] == "0.021" and row["p (Holm)"] == "0.021" and row["significant"] == "*"


def test_dynamics_metrics_are_tested_when_present() -> None:
    def run(model: str, seed: int, error: list[float | None], coverage: float) -> dict:
        split = {
            "data_ll": {"mean": 1.0, "per_sample": [1.0]},
            "matching": {"inferred": {"coverage": coverage}, "sampled": {"centre_error_px": {"mean": 0.0, "per_sample": error}}},
            "references": {"copy_last": {"data_ll": -100.0}},  # reference predictors are no model's metric
        }
        return {"model": model, "seed": seed, "splits": {"s": split}}

    runs = [run("m", 0, [2.0, None, 4.0], 0.5), run("m", 1, [None], 0.75)]
    assert metrics_to_test(runs, "s") == ["data_ll", "matching.sampled.centre_error_px", "matching.inferred.coverage"]
    assert seed_means(runs, "s", "matching.sampled.centre_error_px") == {0: 3.0, 1: 0.0}  # None samples skipped
    assert seed_means(runs, "s", "matching.inferred.coverage") == {0: 0.5, 1: 0.75}
