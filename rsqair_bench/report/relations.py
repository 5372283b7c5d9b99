"""Report parts on the relation itself: is it used (knock-out), and how does it scale with neighbours?

Why a table of its own: a relational model can beat SQAIR for reasons that have nothing to do with
its relation (seed luck, a better take-off), and lose on 6-8 balls because its relation leaves the
range it saw in training. Two measures from metrics.json (docs/metrics.md) separate those:

- `knockout`: the same weights scored with Gamma cut off from the other objects
  (models/knockout.py). The drop (full minus knocked-out log-likelihood; knocked-out minus full
  centre error) is what the relation contributes; about zero means it is not used.
- `relation_output.by_neighbours`: the mean size of Gamma's context output per object, by its number
  of present neighbours. Trained on 4 balls, a relation sees 0-3 neighbours; on 6-8 balls up to 7.

No torch here: `report` stays light.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rsqair_bench.metrics import MISSING

KNOCKOUT_CAPTION = ("Relation knock-out: full model minus the same weights with every object alone in Gamma's scene "
                    "(log-likelihoods: a positive drop = the relation helps; centre errors: knocked-out minus full, "
                    "a positive value = the relation helps). Mean ± std over seeds; sampled frame T.")
NEIGHBOURS_CAPTION = ("Per seed: the prior's centre error on tracked balls (px) and the mean size (L2 norm) of Gamma's "
                      "output beyond z_{t-1}, by number of present neighbours, on each split.")


def _entry(run: dict, split: str) -> dict[str, Any]:
    return run["splits"].get(split) or {}


def _mean_of(block: Any) -> float | None:
    """A `{mean, per_sample}` block's value (the mean over its samples), a plain number, or None."""
    if isinstance(block, (int, float)) and not isinstance(block, bool):
        return float(block)
    if isinstance(block, dict):
        samples = [float(v) for v in block.get("per_sample") or [] if isinstance(v, (int, float))]
        if samples:
            return float(np.mean(samples))
        if isinstance(block.get("mean"), (int, float)):
            return float(block["mean"])
    return None


def knockout_drops(run: dict, split: str) -> dict[str, float | None]:
    """One seed's drops on one split; every value None when the run has no knock-out."""
    entry = _entry(run, split)
    ko = entry.get("knockout")
    sampled = (entry.get("matching") or {}).get("sampled") or {}
    keys = ("data LL drop", "relational LL drop", "prior err. increase px", "prior err. increase px, colliding")
    if not isinstance(ko, dict):
        return dict.fromkeys(keys)

    def diff(full: float | None, knocked: float | None, sign: float) -> float | None:
        return None if full is None or knocked is None else sign * (full - knocked)

    return dict(zip(keys, (
        diff(_mean_of(entry.get("data_ll")), _mean_of(ko.get("data_ll")), 1.0),
        diff(_mean_of(entry.get("relational_ll")), _mean_of(ko.get("relational_ll")), 1.0),
        diff(_mean_of(sampled.get("centre_error_px")), _mean_of(ko.get("centre_error_px")), -1.0),
        diff(_mean_of(sampled.get("centre_error_px_colliding")), _mean_of(ko.get("centre_error_px_colliding")), -1.0),
    )))


def _cell(values: list[float]) -> str:
    if not values:
        return MISSING
    arr = np.asarray(values, np.float64)
    return f"{arr.mean():+.2f} ± {arr.std(ddof=1) if arr.size > 1 else 0.0:.2f} ({arr.size})"


def knockout_table(models: list[str], grouped: dict[str, list[dict]], labels: dict[str, str],
                   splits: list[str]) -> pd.DataFrame:
    """One row per model with a knock-out on some split; columns '<measure> <split>'."""
    rows = []
    for model in models:
        runs = grouped[model]
        if not any(isinstance(_entry(r, s).get("knockout"), dict) for r in runs for s in splits):
            continue
        row: dict[str, str] = {"model": labels[model]}
        for split in splits:
            per_seed = [knockout_drops(r, split) for r in runs]
            for key in per_seed[0] if per_seed else ():
                row[f"{key} {split}"] = _cell([d[key] for d in per_seed if d[key] is not None])
        rows.append(row)
    return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()


def _by_neighbours(run: dict, split: str) -> str:
    """'n: size' pairs of relation_output.by_neighbours, e.g. '3: 1.42, 5: 2.10'."""
    block = (_entry(run, split).get("relation_output") or {}).get("by_neighbours") or {}
    parts = [f"{k}: {v['mean_norm']:.2f}" for k, v in sorted(block.items(), key=lambda kv: int(kv[0]))
             if isinstance(v, dict) and isinstance(v.get("mean_norm"), (int, float))]
    return ", ".join(parts) if parts else MISSING


def neighbours_table(models: list[str], grouped: dict[str, list[dict]], labels: dict[str, str],
                     splits: list[str]) -> pd.DataFrame:
    """Per model and seed: tracked prior error and relation output size by neighbours, on each split."""
    rows = []
    for model in models:
        for run in grouped[model]:
            row: dict[str, Any] = {"model": labels[model], "seed": run["seed"]}
            for split in splits:
                tracked = (((_entry(run, split).get("matching") or {}).get("sampled") or {}).get("tracked") or {})
                value = tracked.get("prior_error_px")
                row[f"tracked prior err. px {split}"] = MISSING if value is None else f"{value:.2f}"
                row[f"Gamma output size by neighbours {split}"] = _by_neighbours(run, split)
            rows.append(row)
    return pd.DataFrame(rows).set_index(["model", "seed"]) if rows else pd.DataFrame()
