"""Is B the same as A within the seed spread? The verdict lines of `report A B --compare`.

Why: a rerun of a suite on another CPU (or torch build) follows another float trajectory per seed,
so its per-seed numbers differ, by up to tens of nats on the quick suite; what should hold is that
the tables agree within the seed-to-seed spread. Welch's test in the comparison table cannot say
so with the quick suite's 2 seeds (it needs 3 per side and has little power at 3), so the verdict
uses the spread of every model's seeds of that split and metric together:

- s: the pooled standard deviation of seed means, over every model on both sides (each model and
  side is a group with its own mean; s^2 = sum of squared deviations from the group means / sum of
  (seeds - 1)), so a model whose two seeds happen to agree does not get a zero-width allowance;
- a row (model, split, metric) is within the spread when |mean B - mean A| <= t * s * sqrt(1/n_A +
  1/n_B), with t the Student quantile at 1 - ALPHA / (2 m) for the pooled degrees of freedom and m
  the rows judged (Bonferroni): when A and B are the same experiment, the chance that any row of the
  table lands outside is at most ALPHA.

"Same within spread" therefore means: no difference larger than seed-to-seed variation explains;
with few seeds that allowance is wide (the line prints it), and a larger difference says the runs
are not the same experiment (a model that did not learn, a changed setting, a bug).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05  # family-wise: the chance that a true rerun gets "differs" somewhere in the table
SAME = "same within spread"
DIFFERS = "differs beyond the seed spread"
UNJUDGED = "cannot judge (one seed per model: no spread)"
NOTHING = "nothing to compare (no model and split in both, evaluated alike)"


@dataclass(frozen=True)
class SpreadRow:
    """One (model, split, metric) compared: the seed means on each side."""

    model: str
    split: str
    metric: str
    a: tuple[float, ...]
    b: tuple[float, ...]

    @property
    def difference(self) -> float:
        return float(np.mean(self.b) - np.mean(self.a))


@dataclass(frozen=True)
class Judged:
    """A row with its allowance: |B - A| <= allowed is within the spread; allowed is nan when unjudged."""

    row: SpreadRow
    allowed: float

    @property
    def judged(self) -> bool:
        return not math.isnan(self.allowed)

    @property
    def within(self) -> bool:
        return self.judged and abs(self.row.difference) <= self.allowed


def pooled_std(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """Pooled standard deviation over groups with their own means, and its degrees of freedom."""
    squares = sum(float(np.sum((np.asarray(g) - np.mean(g)) ** 2)) for g in groups if len(g) > 1)
    dof = sum(len(g) - 1 for g in groups if len(g) > 1)
    return (math.sqrt(squares / dof) if dof else math.nan), dof


def judge(rows: Sequence[SpreadRow], alpha: float = ALPHA) -> list[Judged]:
    """Each row with its allowance: the Bonferroni t quantile x pooled s x the difference's standard error."""
    from scipy import stats

    by_metric: dict[tuple[str, str], list[SpreadRow]] = defaultdict(list)
    for r in rows:
        by_metric[(r.split, r.metric)].append(r)
    spread = {key: pooled_std([g for r in group for g in (r.a, r.b)]) for key, group in by_metric.items()}
    m = sum(1 for r in rows if spread[(r.split, r.metric)][1] > 0)
    judged = []
    for r in rows:
        s, dof = spread[(r.split, r.metric)]
        if dof == 0:
            judged.append(Judged(r, math.nan))
            continue
        t = float(stats.t.ppf(1 - alpha / (2 * m), dof))
        judged.append(Judged(r, t * s * math.sqrt(1 / len(r.a) + 1 / len(r.b))))
    return judged


def _worst(items: list[Judged]) -> Judged:
    return max(items, key=lambda j: abs(j.row.difference) / j.allowed if j.allowed > 0 else math.inf)


def verdict_lines(rows: Sequence[SpreadRow], alpha: float = ALPHA) -> list[str]:
    """One line per model and split, then the overall `Verdict: ...` line (the last)."""
    judged = judge(rows, alpha)
    groups: dict[tuple[str, str], list[Judged]] = defaultdict(list)
    for j in judged:
        groups[(j.row.model, j.row.split)].append(j)
    lines = []
    for (model, split), items in groups.items():
        done = [j for j in items if j.judged]
        if not done:
            lines.append(f"- {model} {split}: {UNJUDGED}")
            continue
        out = [j for j in done if not j.within]
        worst = _worst(out or done)
        what = DIFFERS if out else SAME
        detail = ", ".join(f"{j.row.metric} B − A {j.row.difference:+.2f} (allowed ±{j.allowed:.2f})" for j in out) if out \
            else f"largest: {worst.row.metric} B − A {worst.row.difference:+.2f} (allowed ±{worst.allowed:.2f})"
        lines.append(f"- {model} {split}: {what}; {detail}")
    done = [j for j in judged if j.judged]
    out = [j for j in done if not j.within]
    if not judged:
        overall = f"Verdict: {NOTHING}"
    elif not done:
        overall = f"Verdict: {UNJUDGED}"
    elif out:
        overall = f"Verdict: {DIFFERS} ({len(out)} of {len(done)} rows outside; family-wise alpha {alpha})"
    else:
        overall = f"Verdict: {SAME} (all {len(done)} rows; family-wise alpha {alpha})"
    if done and len(done) < len(judged):
        overall += f"; {len(judged) - len(done)} rows not judged (one seed per model)"
    return [*lines, overall]
