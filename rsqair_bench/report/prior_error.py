"""dynamics.md's two sections on the prior's error: its decomposition at frame T and its one-step error.

Why here and not in the wide matching table: each figure has a split (interior / edge / outside balls,
colliding / free balls) and a row count, which read best as rows. The numbers come from metrics.json's
`prior_decomposition` and `one_step` blocks (docs/metrics.md); runs without them give no section.
The one-step table carries, per model, the minimum detectable difference of its colliding-ball error
against the baseline (`significance.minimum_detectable_difference`, the seed as the unit), the number the
study needs to know whether a relational gain of a few tenths of a pixel could show.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rsqair_bench.metrics import MISSING
from rsqair_bench.report.significance import MIN_SEEDS, minimum_detectable_difference

DECOMPOSITION_CAPTION = ("The prior's centre error on tracked balls at the sampled frame T, taken apart (px, mean ± std "
                         "over seeds; rows: tracked ball x sample, summed over samples, mean over seeds)")
ONE_STEP_CAPTION = ("One-step prediction at every frame t = 3..T from the posterior of the frames before it, tracked "
                    "balls (px, mean ± std over seeds; ball-frames: mean over seeds)")
# metrics.json key -> row label, in reading order (docs/metrics.md, "Prior error decomposition")
DECOMPOSITION_ROWS = {
    "rows": "tracked rows",
    "sample_error_px": "prior samples (what the benchmark scores)",
    "mean_error_px": "prior mean (no sampling)",
    "where_std_px_x": "prior std x",
    "where_std_px_y": "prior std y",
    "posterior_error_px": "posterior at T-1",
    "velocity_rule_error_px": "velocity rule 2 c(T-1) - c(T-2) on the posterior",
    "const_velocity_error_px": "const-velocity oracle (true states)",
}
REGIONS = ("all", "interior", "edge", "outside")


def _block(run: dict, split: str, name: str) -> dict:
    return (run["splits"].get(split) or {}).get(name) or {}


def _seed_values(runs: list[dict], split: str, block: str, key: str, group: str) -> list[float]:
    """One value per run of metrics.json `splits[split][block][key][group]` (runs without it skipped)."""
    out = []
    for r in runs:
        value = (_block(r, split, block).get(key) or {}).get(group)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out.append(float(value))
    return out


def _cell(values: list[float], digits: int = 2) -> str:
    if not values:
        return MISSING
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return f"{arr.mean():.{digits}f} ± {std:.{digits}f}"


def _count(values: list[float]) -> str:
    return MISSING if not values else f"{np.mean(values):.0f}"


def _splits_with(runs: list[dict], splits: list[str], block: str) -> list[str]:
    return [s for s in splits if any(_block(r, s, block) for r in runs)]


def decomposition_table(models: list[str], grouped: dict[str, list[dict]], labels: dict[str, str],
                        splits: list[str]) -> pd.DataFrame:
    """Rows (model, split, figure); columns all / interior / edge / outside."""
    runs = [r for m in models for r in grouped[m]]
    rows = []
    for model in models:
        for split in _splits_with(runs, splits, "prior_decomposition"):
            for key, name in DECOMPOSITION_ROWS.items():
                row = {"model": labels[model], "split": split, "figure": name}
                for group in REGIONS:
                    values = _seed_values(grouped[model], split, "prior_decomposition", key, group)
                    row[group] = _count(values) if key == "rows" else _cell(values)
                rows.append(row)
    return pd.DataFrame(rows)


def one_step_table(models: list[str], grouped: dict[str, list[dict]], labels: dict[str, str], splits: list[str],
                   baseline: str) -> pd.DataFrame:
    """Rows (model, split): the prior mean's and a sample's one-step error on colliding / free balls, the
    colliding ball-frames scored, the oracle on the same balls, and the colliding error's MDD against `baseline`."""
    runs = [r for m in models for r in grouped[m]]
    rows = []
    for model in models:
        for split in _splits_with(runs, splits, "one_step"):
            mine = grouped[model]
            get = lambda key, group: _seed_values(mine, split, "one_step", key, group)  # noqa: E731
            row = {"model": labels[model], "split": split}
            for key, name in (("mean_error_px", "prior mean err."), ("sample_error_px", "prior sample err."),
                              ("const_velocity_error_px", "const-velocity err.")):
                row[f"{name} colliding"] = _cell(get(key, "colliding"))
                row[f"{name} free"] = _cell(get(key, "free"))
            row["log density median, all (nats)"] = _cell(get("log_density_median", "all"))
            row["colliding ball-frames"] = _count(_seed_values(mine, split, "one_step", "rows", "colliding"))
            row[f"MDD vs {labels.get(baseline, baseline)}, prior mean err. colliding"] = _mdd_cell(
                grouped.get(baseline, []), mine, split, model == baseline)
            rows.append(row)
    return pd.DataFrame(rows)


def _mdd_cell(base: list[dict], mine: list[dict], split: str, is_baseline: bool) -> str:
    """The colliding-ball error's minimum detectable difference against the baseline (80% power, seeds as the unit)."""
    if is_baseline:
        return "(baseline)"
    a = _seed_values(base, split, "one_step", "mean_error_px", "colliding")
    b = _seed_values(mine, split, "one_step", "mean_error_px", "colliding")
    if min(len(a), len(b)) < MIN_SEEDS:
        return f"n/a ({min(len(a), len(b))} seeds)"
    mdd = minimum_detectable_difference(a, b)
    return MISSING if math.isnan(mdd) else f"{mdd:.2f}"
