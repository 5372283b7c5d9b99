"""dynamics.md's two sections on the prior's error: its decomposition at frame T and its one-step error.

Why here and not in the wide matching table: each figure has a split (interior / edge / outside balls,
colliding / free balls) and a row count, which read best as rows. The numbers come from metrics.json's
`prior_decomposition` and `one_step` blocks and their `_drawn` twins (docs/metrics.md); runs without them
give no section. Both show the drawn-centre figures first, the headline, and the box-centre ones beside
them, for continuity with results evaluated before the drawn centre existed (their drawn cells are empty).
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

# Each caption is dynamics.md's heading line, then the note on the two locators as a paragraph under it.
LOCATOR_NOTE = ("Drawn: every object (posterior, prior mean, prior sample) located by the centre of mass of what it "
                "alone renders, the headline (an object that draws nothing falls back to its box centre: the "
                "fallback shares); box: by its box centre, as before. Each locator also decides which balls are "
                "tracked (docs/metrics.md, \"Drawn centres\").")
DECOMPOSITION_CAPTION = ("The prior's centre error on tracked balls at the sampled frame T, taken apart, by drawn centre "
                         "and by box centre (px, mean ± std over seeds; rows: tracked ball x sample, summed over samples, "
                         "mean over seeds)\n\n" + LOCATOR_NOTE)
ONE_STEP_CAPTION = ("One-step prediction at every frame t = 3..T from the posterior of the frames before it, tracked "
                    "balls, by drawn centre and by box centre (px, mean ± std over seeds; ball-frames: mean over "
                    "seeds)\n\n" + LOCATOR_NOTE)
# metrics.json block per locator, the headline first (docs/metrics.md, "Drawn centres")
LOCATORS = {"drawn": "_drawn", "box": ""}
# metrics.json key -> row label, in reading order (docs/metrics.md, "Prior error decomposition")
DECOMPOSITION_ROWS = {
    "rows": "tracked rows",
    "sample_error_px": "prior samples (what the benchmark scores)",
    "mean_error_px": "prior mean (no sampling)",
    "where_std_px_x": "prior where std x",
    "where_std_px_y": "prior where std y",
    "posterior_error_px": "posterior at T-1",
    "velocity_rule_error_px": "velocity rule 2 c(T-1) - c(T-2) on the posterior",
    "const_velocity_error_px": "const-velocity oracle (true states)",
    "fallback_posterior": "share fallen back to the box centre: posterior at T-1",
    "fallback_sample": "share fallen back to the box centre: sample",
    "fallback_prior_mean": "share fallen back to the box centre: prior mean",
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


def _splits_with(runs: list[dict], splits: list[str], *blocks: str) -> list[str]:
    return [s for s in splits if any(_block(r, s, block) for r in runs for block in blocks)]


def decomposition_table(models: list[str], grouped: dict[str, list[dict]], labels: dict[str, str],
                        splits: list[str]) -> pd.DataFrame:
    """Rows (model, split, figure); columns all / interior / edge / outside, each by drawn centre and beside it
    by box centre (the fallback shares exist for drawn centres only)."""
    runs = [r for m in models for r in grouped[m]]
    blocks = [f"prior_decomposition{suffix}" for suffix in LOCATORS.values()]
    rows = []
    for model in models:
        for split in _splits_with(runs, splits, *blocks):
            for key, name in DECOMPOSITION_ROWS.items():
                row = {"model": labels[model], "split": split, "figure": name}
                for group in REGIONS:
                    for locator, suffix in LOCATORS.items():
                        values = _seed_values(grouped[model], split, f"prior_decomposition{suffix}", key, group)
                        row[f"{group} ({locator})"] = _count(values) if key == "rows" else _cell(values)
                rows.append(row)
    return pd.DataFrame(rows)


def one_step_table(models: list[str], grouped: dict[str, list[dict]], labels: dict[str, str], splits: list[str],
                   baseline: str) -> pd.DataFrame:
    """Rows (model, split, locator), drawn centres first: the prior mean's and a sample's one-step error on
    colliding / free balls, the colliding ball-frames scored, the oracle on the same balls, the colliding error's
    MDD against `baseline` by the same locator, and (drawn) how often a centre fell back to the box centre."""
    runs = [r for m in models for r in grouped[m]]
    rows = []
    for model in models:
        for split in _splits_with(runs, splits, *(f"one_step{suffix}" for suffix in LOCATORS.values())):
            for locator, suffix in LOCATORS.items():
                rows.append(_one_step_row(grouped, model, split, labels, baseline, locator, f"one_step{suffix}"))
    return pd.DataFrame(rows)


def _one_step_row(grouped: dict[str, list[dict]], model: str, split: str, labels: dict[str, str], baseline: str,
                  locator: str, block: str) -> dict[str, str]:
    mine = grouped[model]
    get = lambda key, group: _seed_values(mine, split, block, key, group)  # noqa: E731
    row = {"model": labels[model], "split": split, "locator": locator}
    for key, name in (("mean_error_px", "prior mean err."), ("sample_error_px", "prior sample err."),
                      ("const_velocity_error_px", "const-velocity err.")):
        row[f"{name} colliding"] = _cell(get(key, "colliding"))
        row[f"{name} free"] = _cell(get(key, "free"))
    row["log density median, all (nats)"] = _cell(get("log_density_median", "all"))
    row["colliding ball-frames"] = _count(get("rows", "colliding"))
    row[f"MDD vs {labels.get(baseline, baseline)}, prior mean err. colliding"] = _mdd_cell(
        grouped.get(baseline, []), mine, split, block, model == baseline)
    shares = [get(key, "all") for key in ("fallback_posterior", "fallback_prior_mean", "fallback_sample")]
    row["fallen back to box: posterior / mean / sample"] = (
        MISSING if not all(shares) else " / ".join(f"{100 * np.mean(v):.1f}%" for v in shares))
    return row


def _mdd_cell(base: list[dict], mine: list[dict], split: str, block: str, is_baseline: bool) -> str:
    """The colliding-ball error's minimum detectable difference against the baseline (80% power, seeds as the unit)."""
    if is_baseline:
        return "(baseline)"
    a = _seed_values(base, split, block, "mean_error_px", "colliding")
    b = _seed_values(mine, split, block, "mean_error_px", "colliding")
    if min(len(a), len(b)) < MIN_SEEDS:
        return f"n/a ({min(len(a), len(b))} seeds)"
    mdd = minimum_detectable_difference(a, b)
    return MISSING if math.isnan(mdd) else f"{mdd:.2f}"
