"""Is model X better than the baseline? Difference of means, bootstrap CI and Welch's test over seeds.

The unit of replication is the training seed: the sampled last frames of one seed share one
set of weights, so they are not independent draws, and treating 5 seeds x 5 samples as 25
observations overstates the evidence five-fold. Samples are therefore averaged within a seed
first, and every statistic here sees one number per seed. Why Welch's t-test and not a
permutation test, and why a percentile bootstrap: docs/metrics.md ("Significance").

With fewer than `MIN_SEEDS` seeds on either side nothing is estimated: the cell says
"n/a (k seeds)". p-values are Holm-adjusted over the whole table (every model x split x
metric test in it), and only the adjusted value decides the `*`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MIN_SEEDS = 3  # below this a variance (hence a CI or a t-test) over seeds means nothing
ALPHA = 0.05
CONFIDENCE = 0.95
N_RESAMPLES = 9999
BOOTSTRAP_SEED = 0  # the CI is deterministic: the same metrics.json files give the same report
POWER = 0.8  # the minimum detectable difference is the one Welch's test finds with this probability

# metrics tested first and named as in table.md / dynamics.md; dotted keys reach into a split's
# nested blocks; any other top-level `{"mean": ...}` entry of a split follows (e.g. iwae_bound)
NAMED_METRICS = {
    "data_ll": "data LL",
    "relational_ll": "relational LL",
    "matching.sampled.centre_error_px": "prior centre error px",  # lower is better
    "matching.sampled.centre_error_px_colliding": "prior centre error px, colliding balls",  # lower is better
    "one_step.mean_error_px.colliding": "one-step prior mean error px, colliding balls",  # lower is better
    "matching.inferred.coverage": "coverage",
    "matching.inferred.duplicates": "duplicates",  # lower is better
    "matching.inferred.centre_error_px": "inferred centre error px",  # lower is better
}
NOT_TESTED = {"reference", "references", "matching", "prior_decomposition", "one_step"}  # reference predictors are
# not models; the other blocks: their tested figures are named above


@dataclass(frozen=True)
class Comparison:
    """One test: `b` (the model) against `a` (the baseline), both lists of seed-level means."""

    n_a: int
    n_b: int
    difference: float  # mean(b) - mean(a)
    ci_low: float = math.nan
    ci_high: float = math.nan
    p_value: float = math.nan  # Welch's two-sided t-test; nan when not testable
    mdd: float = math.nan  # minimum detectable difference at POWER (`minimum_detectable_difference`)

    @property
    def testable(self) -> bool:
        return min(self.n_a, self.n_b) >= MIN_SEEDS

    def not_tested_reason(self) -> str:
        return f"n/a ({min(self.n_a, self.n_b)} seeds)"


# ----------------------------------------------------------------------------- the statistics
def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's unequal-variance t-test; nan (untestable) if neither group varies."""
    from scipy import stats

    a_arr, b_arr = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if np.ptp(a_arr) == 0.0 and np.ptp(b_arr) == 0.0:
        return math.nan
    return float(stats.ttest_ind(b_arr, a_arr, equal_var=False).pvalue)


def bootstrap_ci(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(b) - mean(a), resampling seeds within each group independently."""
    from scipy import stats

    a_arr, b_arr = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if np.ptp(a_arr) == 0.0 and np.ptp(b_arr) == 0.0:
        diff = float(b_arr.mean() - a_arr.mean())
        return diff, diff

    def statistic(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return np.mean(y, axis=axis) - np.mean(x, axis=axis)

    # scipy >= 1.15 calls the generator `rng`; 1.10-1.14 call it `random_state`
    key = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    result = stats.bootstrap(
        (a_arr, b_arr),
        statistic,
        vectorized=True,
        paired=False,
        confidence_level=confidence,
        n_resamples=N_RESAMPLES,
        method="percentile",
        **{key: np.random.default_rng(BOOTSTRAP_SEED)},
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def minimum_detectable_difference(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA,
                                  power: float = POWER) -> float:
    """The smallest true |mean(b) - mean(a)| that Welch's two-sided test at `alpha` detects with
    probability `power`, given the seed-to-seed standard deviations measured in `a` and `b`:

        MDD = (t_{1 - alpha/2, df} + t_{power, df}) * sqrt(s_a^2 / n_a + s_b^2 / n_b)

    with s the sample standard deviations (ddof 1) and df Welch-Satterthwaite's degrees of freedom (the
    usual normal-theory approximation, with t quantiles for few seeds). Why: with 5 seeds, "not
    significant" alone cannot tell "no effect" from "an effect smaller than the noise allows to see";
    the MDD says how small. Per test, at the unadjusted alpha (Holm's correction only raises it).
    nan when neither side varies."""
    from scipy import stats

    a_arr, b_arr = np.asarray(a, np.float64), np.asarray(b, np.float64)
    va, vb = a_arr.var(ddof=1) / len(a_arr), b_arr.var(ddof=1) / len(b_arr)  # squared standard errors
    if va + vb == 0.0:
        return math.nan
    df = (va + vb) ** 2 / (va**2 / (len(a_arr) - 1) + vb**2 / (len(b_arr) - 1))
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * math.sqrt(va + vb))


def compare(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """mean(b) - mean(a) with CI, p-value and MDD when both sides have at least MIN_SEEDS seeds."""
    if not len(a) or not len(b):
        return Comparison(len(a), len(b), math.nan)
    diff = float(np.mean(b) - np.mean(a))
    if min(len(a), len(b)) < MIN_SEEDS:
        return Comparison(len(a), len(b), diff)
    low, high = bootstrap_ci(a, b)
    return Comparison(len(a), len(b), diff, low, high, welch_p_value(a, b), minimum_detectable_difference(a, b))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (nan stays nan and is not counted among the tests).

    Sorted ascending, the i-th smallest of m tests is multiplied by (m - i), then made monotone
    with a running maximum and capped at 1: reject where adjusted < alpha.
    """
    idx = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: p_values[i])
    m = len(order)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# ----------------------------------------------------------------------------- from metrics.json
def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def seed_value(split_entry: dict[str, Any] | None, metric: str) -> float | None:
    """One seed's value of `metric` (dotted path): the mean of its `per_sample`, its `mean`, or a plain number."""
    node: Any = split_entry
    for key in metric.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    if _number(node):
        return float(node)
    if not isinstance(node, dict):
        return None
    samples = [v for v in node.get("per_sample") or [] if _number(v)]
    if samples:
        return float(np.mean(np.asarray(samples, np.float64)))
    return float(node["mean"]) if _number(node.get("mean")) else None


def seed_means(runs: list[dict[str, Any]], split: str, metric: str) -> dict[int, float]:
    """Per seed, the mean over that seed's sampled frames (`per_sample`), else its stored `mean`."""
    means: dict[int, float] = {}
    for r in runs:
        value = seed_value(r["splits"].get(split), metric)
        if value is not None:
            means[int(r["seed"])] = value
    return means


def metrics_to_test(runs: list[dict[str, Any]], split: str) -> list[str]:
    """The named metrics any run has, then every other per-split metric stored as `{"mean": number, ...}`."""
    named = [m for m in NAMED_METRICS if any(seed_value(r["splits"].get(split), m) is not None for r in runs)]
    others = {
        key
        for r in runs
        for key, entry in (r["splits"].get(split) or {}).items()
        if key not in NOT_TESTED and key not in NAMED_METRICS and isinstance(entry, dict) and _number(entry.get("mean"))
    }
    return named + sorted(others)


def metric_label(metric: str) -> str:
    return NAMED_METRICS.get(metric, metric.replace("_", " "))


def _fmt(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:+.2f}"


def _fmt_p(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.3f}" if value >= 0.001 else "<0.001"


MDD_COLUMN = f"MDD ({POWER:.0%} power)"


def comparison_rows(tests: list[tuple[dict[str, str], Comparison]], alpha: float = ALPHA) -> pd.DataFrame:
    """Table rows from labelled comparisons; Holm's correction runs over every testable row."""
    adjusted = holm([c.p_value if c.testable else math.nan for _, c in tests])
    rows = []
    for (labels, c), p_holm in zip(tests, adjusted):
        row = dict(labels)
        row["seeds"] = f"{c.n_b} vs {c.n_a}"
        row["difference"] = _fmt(c.difference)
        if c.testable:
            row["95% CI"] = f"[{_fmt(c.ci_low)}, {_fmt(c.ci_high)}]"
            row["p (Welch)"] = _fmt_p(c.p_value)
            row["p (Holm)"] = _fmt_p(p_holm)
            row["significant"] = "*" if p_holm < alpha else ""
            row[MDD_COLUMN] = "—" if math.isnan(c.mdd) else f"{c.mdd:.2f}"
        else:
            reason = c.not_tested_reason()
            row.update({"95% CI": reason, "p (Welch)": reason, "p (Holm)": reason, "significant": "", MDD_COLUMN: reason})
        rows.append(row)
    return pd.DataFrame(rows)


def significance_table(runs: list[dict[str, Any]], baseline: str, models: list[str], splits: list[str],
                       labels: dict[str, str]) -> pd.DataFrame:
    """One row per (model != baseline, split, metric) both sides have: model minus baseline."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_model.setdefault(r["model"], []).append(r)
    base_runs = by_model.get(baseline, [])
    tests: list[tuple[dict[str, str], Comparison]] = []
    for model in models:
        if model == baseline:
            continue
        for split in splits:
            for metric in metrics_to_test(by_model[model] + base_runs, split):
                a = list(seed_means(base_runs, split, metric).values())
                b = list(seed_means(by_model[model], split, metric).values())
                if a and b:
                    tests.append(({"model": labels.get(model, model), "split": split, "metric": metric_label(metric)},
                                  compare(a, b)))
    return comparison_rows(tests)


def caption(baseline_label: str, table: pd.DataFrame, alpha: float = ALPHA, difference: str = "model minus baseline") -> str:
    """What the table's numbers are, and how many tests Holm's correction counted."""
    tested = sum(1 for p in table.get("p (Holm)", []) if p[:1].isdigit() or p.startswith("<"))
    return (
        f"Difference of means against {baseline_label} ({difference}; higher log-likelihood and coverage are better, "
        f"lower centre error and duplicates are better), "
        f"with seed-level means as the unit (samples averaged within a seed first). "
        f"95% CI: percentile bootstrap over seeds ({N_RESAMPLES} resamples). p: Welch's two-sided t-test. "
        f"MDD: the smallest true difference Welch's test at {alpha:g} finds with {POWER:.0%} probability, from the "
        f"measured seed-to-seed spread (a non-significant difference is smaller than this, or absent). "
        + (
            f"* = significant at {alpha:g} after Holm's correction over the {tested} tests in this table. "
            if tested
            else f"No cell has {MIN_SEEDS} seeds on both sides, so nothing is tested (and nothing marked *). "
        )
        + f"Fewer than {MIN_SEEDS} seeds on either side: n/a (k seeds)."
    )
