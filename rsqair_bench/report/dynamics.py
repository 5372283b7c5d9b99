"""Report parts for learned dynamics: reference-predictor rows, the dynamics table, horizon marks.

Why: a model's sampled-frame log-likelihood is meaningful only between the reference predictors
(docs/metrics.md), so the main table and Figure 4 carry them; the object-ball matching numbers
(coverage, duplicates, centre errors) get their own table because they do not depend on pixel
sums. Everything comes from metrics.json (`references`, `matching`, `beyond_trained_horizon`);
runs written before these existed simply have no reference rows or dynamics columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rsqair_bench.evaluation.references import LABELS, REFERENCES
from rsqair_bench.metrics import MISSING

HORIZON_MARK = "†"
HORIZON_NOTE = (f"{HORIZON_MARK} scored at more frames T than the checkpoint was trained on "
                "(curriculum length below T); see docs/metrics.md")
REFERENCE_STYLE = {"empty": ":", "copy_last": "--", "const_velocity": "-.", "perfect": "-"}


def reference_label(name: str) -> str:
    """Row label of a reference predictor, e.g. 'reference: copy-last'."""
    return f"reference: {LABELS[name]}"


def reference_value(runs: list[dict], split: str, name: str, key: str) -> float | None:
    """A reference's `key` on `split`, averaged over the runs that have it (they score the same
    sequences, so the values agree); None when no run has it."""
    values = []
    for r in runs:
        ref = ((r["splits"].get(split) or {}).get("references") or {}).get(name) or {}
        if ref.get(key) is not None:
            values.append(float(ref[key]))
    return float(np.mean(values)) if values else None


def has_references(runs: list[dict]) -> bool:
    return any((s or {}).get("references") for r in runs for s in r["splits"].values())


def with_reference_rows(table: pd.DataFrame, runs: list[dict], metrics: dict[str, str]) -> pd.DataFrame:
    """Append one row per reference predictor to the main table (columns '<metric name> <split>')."""
    if not has_references(runs):
        return table
    splits = {s for r in runs for s in r["splits"]}
    rows = []
    for name in REFERENCES:
        row = {}
        for column in table.columns:
            row[column] = MISSING
            for metric, label in metrics.items():
                split = column[len(label) + 1:] if column.startswith(f"{label} ") else None
                if split in splits:
                    value = reference_value(runs, split, name, metric)
                    row[column] = MISSING if value is None else f"{value:.2f}"
        rows.append(pd.Series(row, name=reference_label(name)))
    out = pd.concat([table, pd.DataFrame(rows)])
    out.index.name = table.index.name
    return out


def horizon_footnote(table: pd.DataFrame) -> str:
    """The note explaining HORIZON_MARK, when some cell of `table` carries it; else ''."""
    marked = any(HORIZON_MARK in str(v) for v in table.to_numpy().ravel())
    return f"\n{HORIZON_NOTE}\n" if marked else ""


def horizon_mark(runs: list[dict], split: str) -> str:
    """' †' when any of the runs scored `split` past its trained horizon, else ''."""
    beyond = any((r["splits"].get(split) or {}).get("beyond_trained_horizon") for r in runs)
    return f" {HORIZON_MARK}" if beyond else ""


def _matching(run: dict, split: str, section: str) -> dict:
    """run's metrics.json `splits[split].matching[section]`, or {} where any level is missing."""
    return ((((run["splits"].get(split) or {}).get("matching") or {}).get(section)) or {})


def _seed_values(runs: list[dict], split: str, section: str, key: str) -> list[float]:
    """One value per run of matching[section][key] on `split` (skipping runs without it)."""
    out = []
    for r in runs:
        value = _matching(r, split, section).get(key)
        if isinstance(value, (int, float)):
            out.append(float(value))
    return out


def _prior_errors(runs: list[dict], split: str) -> list[float]:
    """Seeds x samples values of the prior's centre error at frame T."""
    out = []
    for r in runs:
        entry = _matching(r, split, "sampled").get("centre_error_px") or {}
        out.extend(float(v) for v in entry.get("per_sample") or [] if v is not None)
    return out


def _tracked_cell(runs: list[dict], split: str) -> str:
    """'prior / copy-last (fraction tracked)' on the balls the model tracks, means over seeds."""
    values = [_matching(r, split, "sampled").get("tracked") or {} for r in runs]
    values = [v for v in values if v.get("prior_error_px") is not None]
    if not values:
        return MISSING
    mean = lambda key: float(np.mean([v[key] for v in values]))  # noqa: E731
    return f"{mean('prior_error_px'):.2f} / {mean('copy_last_error_px'):.2f} ({mean('tracked_fraction'):.2f} tracked)"


def _first_last_coverage_cell(runs: list[dict], split: str) -> str:
    """'first / last' inferred frame's coverage, means over seeds: discovery alone places the first
    frame's objects, so a gap between the two says where the coverage is lost (docs/metrics.md)."""
    frames = [_matching(r, split, "inferred").get("by_frame") or [] for r in runs]
    pairs = [(f[0]["coverage"], f[-1]["coverage"]) for f in frames if f and None not in (f[0]["coverage"], f[-1]["coverage"])]
    if not pairs:
        return MISSING
    first, last = np.mean(pairs, axis=0)
    return f"{first:.2f} / {last:.2f}"


def _cell(values: list[float], digits: int) -> str:
    if not values:
        return MISSING
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return f"{arr.mean():.{digits}f} ± {std:.{digits}f}"


def dynamics_table(runs: list[dict], models: list[str], grouped: dict[str, list[dict]],
                   labels: dict[str, str], splits: list[str]) -> pd.DataFrame:
    """Object-ball matching per model and split (mean ± std over seeds; the prior's centre error
    over seeds x samples), with copy-last and const-velocity centre errors as reference rows."""
    splits = [s for s in splits if any((r["splits"].get(s) or {}).get("matching") for r in runs)]
    if not splits:
        return pd.DataFrame()
    rows = []
    for model in models:
        mruns = grouped[model]
        row: dict[str, str] = {"model": labels[model]}
        for split in splits:
            mark = horizon_mark(mruns, split)
            row[f"coverage {split}"] = _cell(_seed_values(mruns, split, "inferred", "coverage"), 3)
            row[f"coverage first / last inferred frame {split}"] = _first_last_coverage_cell(mruns, split)
            row[f"duplicates {split}"] = _cell(_seed_values(mruns, split, "inferred", "duplicates"), 3)
            row[f"strays {split}"] = _cell(_seed_values(mruns, split, "inferred", "strays"), 3)
            row[f"centre err. px {split}"] = _cell(_seed_values(mruns, split, "inferred", "centre_error_px"), 2)
            located = _located_cell(mruns, split)
            row[f"{LOCATED_COLUMN} {split}"] = located + (mark if located != MISSING else "")
            prior = _cell(_prior_errors(mruns, split), 2)
            row[f"prior centre err. px (frame T) {split}"] = prior + (mark if prior != MISSING else "")
            tracked = _tracked_cell(mruns, split)
            row[f"tracked balls: prior / copy-last err. px {split}"] = tracked + (mark if tracked != MISSING else "")
            row[f"{CONTACT_COLUMN} {split}"] = _contact_cell(mruns, split)
        rows.append(row)
    for name in ("copy_last", "const_velocity"):
        row = {"model": reference_label(name)}
        for split in splits:
            for key in ("coverage", "coverage first / last inferred frame", "duplicates", "strays", "centre err. px",
                        LOCATED_COLUMN):
                row[f"{key} {split}"] = MISSING
            value = reference_value(runs, split, name, "centre_error_px")
            row[f"prior centre err. px (frame T) {split}"] = MISSING if value is None else f"{value:.2f}"
            row[f"tracked balls: prior / copy-last err. px {split}"] = MISSING
            row[f"{CONTACT_COLUMN} {split}"] = _reference_contact_cell(runs, split, name)
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


CONTACT_COLUMN = "prior centre err. px, colliding / free balls (frame T)"
LOCATED_COLUMN = "tracked balls: prior err. px by drawn / box centre (frame T)"


def _located_cell(runs: list[dict], split: str) -> str:
    """'drawn / box': the prior samples' error on tracked balls at frame T (`sample_error_px.all` of
    `prior_decomposition_drawn` and `prior_decomposition`), means over seeds; the drawn centre leads because
    it locates where an object draws its ball, the box centre can sit px away from it (docs/metrics.md,
    "Drawn centres"). A side no run has is MISSING (results evaluated before the drawn centre existed)."""
    sides = []
    for block in ("prior_decomposition_drawn", "prior_decomposition"):
        values = [v for r in runs
                  if isinstance(v := (((r["splits"].get(split) or {}).get(block) or {}).get("sample_error_px")
                                      or {}).get("all"), (int, float))]
        sides.append(f"{np.mean(values):.2f}" if values else MISSING)
    return MISSING if sides == [MISSING, MISSING] else " / ".join(sides)


def _contact_cell(runs: list[dict], split: str) -> str:
    """'colliding / free (n colliding balls)': the prior's capped centre error on the balls in a ball-ball
    contact at frame T-1 or T and on the others, means over seeds x samples (docs/metrics.md)."""
    values = {}
    for group in ("colliding", "free"):
        per = [float(v) for r in runs
               for v in (_matching(r, split, "sampled").get(f"centre_error_px_{group}") or {}).get("per_sample") or []
               if v is not None]
        values[group] = float(np.mean(per)) if per else None
    if values["colliding"] is None and values["free"] is None:
        return MISSING
    counts = _seed_values(runs, split, "sampled", "colliding_balls")
    return f"{_num(values['colliding'])} / {_num(values['free'])} ({int(np.mean(counts)) if counts else '?'} colliding)"


def _reference_contact_cell(runs: list[dict], split: str, name: str) -> str:
    colliding = reference_value(runs, split, name, "centre_error_px_colliding")
    free = reference_value(runs, split, name, "centre_error_px_free")
    return MISSING if colliding is None and free is None else f"{_num(colliding)} / {_num(free)}"


def _num(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def draw_reference_lines(ax: Any, runs: list[dict], split: str, metric: str) -> None:
    """Horizontal lines at each reference predictor's value on one Figure 4 panel."""
    for name in REFERENCES:
        value = reference_value(runs, split, name, metric)
        if value is not None:
            ax.axhline(value, color="0.25", linestyle=REFERENCE_STYLE[name], linewidth=1, label=LABELS[name])
