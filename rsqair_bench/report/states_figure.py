"""figures/gain_vs_sigma: what each relation gains over no relation against the input noise σ, with
the pixel models' posterior error marked on the σ axis (docs/states.md, "The gain figure").

gain = the baseline's centre error minus the model's (px; above 0: the relation helps), the mean
over seeds, with error bars of one standard error of that difference (seed-level, unpaired:
sqrt(s_a²/n_a + s_b²/n_b)). Panels: colliding balls and all balls (rows) x each split (columns).

The marks: a pixel model places a ball with some mean error e px (its posterior's centre error). An
isotropic 2-D Gaussian error of std σ per axis has a mean distance of σ sqrt(π/2) (the Rayleigh
mean), so e reads as σ = e / sqrt(π/2) on this axis. The figures come from `pixel_results` (a pixel
suite's results directory whose metrics.json splits carry `posterior_error_px`, and optionally
`posterior_error_px_interior`, at any depth), else from `DEFAULT_POSTERIOR_PX`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from rsqair_bench.errors import DataError
from rsqair_bench.metrics import by_model, collect_metrics, label, ordered_models
from rsqair_bench.report.figures import _plt, save_figure
from rsqair_bench.report.states import noise_keys, seed_values, splits_of

# SQAIR's posterior centre error at frame T-1 of balls4/test (results/study/checkpoints/sqair-seed0.pt), as
# measured for issue 29: over all tracked balls, and over balls away from the crop's edges (interior)
DEFAULT_POSTERIOR_PX = {"posterior_error_px": 1.14, "posterior_error_px_interior": 0.43}
MARK_LABELS = {"posterior_error_px": "pixel posterior error, all balls", "posterior_error_px_interior": "interior balls"}
RAYLEIGH_MEAN = math.sqrt(math.pi / 2)  # mean distance of a 2-D Gaussian error, in units of its per-axis std


def sigma_of_error(error_px: float) -> float:
    """The per-axis noise std whose mean 2-D error is `error_px`."""
    return error_px / RAYLEIGH_MEAN


def _find(node: Any, key: str) -> list[float]:
    """Every number stored under `key` (a number or a {"mean": number}) anywhere in a metrics entry."""
    found: list[float] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                v = v.get("mean") if isinstance(v, dict) else v
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    found.append(float(v))
            else:
                found += _find(v, key)
    elif isinstance(node, list):
        for v in node:
            found += _find(v, key)
    return found


def posterior_marks(pixel_results: str | Path | None, split: str) -> tuple[dict[str, float], str]:
    """The posterior errors (px) to mark on `split`'s panels, and where they come from."""
    if pixel_results is None:
        return dict(DEFAULT_POSTERIOR_PX), "SQAIR seed 0 of the 5-seed study, balls4/test (issue 29)"
    runs = collect_metrics(Path(pixel_results))
    marks = {}
    for key in MARK_LABELS:
        values = [v for r in runs for v in _find(r["splits"].get(split), key)]
        if values:
            marks[key] = float(np.mean(values))
    if "posterior_error_px" not in marks:
        raise DataError(f"{pixel_results}: no posterior_error_px in the {split} entries of its metrics.json; expected a "
                        "pixel suite's results directory evaluated with the posterior error (or leave pixel_results unset)")
    return marks, f"{pixel_results}, mean over its {len(runs)} jobs"


def _gain(base: dict[int, float], other: dict[int, float]) -> tuple[float, float]:
    """mean(base) - mean(other) and its standard error; nan without seeds."""
    a, b = np.asarray(list(base.values())), np.asarray(list(other.values()))
    if not len(a) or not len(b):
        return math.nan, math.nan
    var = (a.var(ddof=1) / len(a) if len(a) > 1 else 0.0) + (b.var(ddof=1) / len(b) if len(b) > 1 else 0.0)
    return float(a.mean() - b.mean()), math.sqrt(var)


def _panel(ax: Any, runs: list[dict[str, Any]], split: str, group: str, baseline: str) -> None:
    grouped, sigmas = by_model(runs), noise_keys(runs)
    x = [float(s) for s in sigmas]
    for model in ordered_models(runs):
        if model == baseline:
            continue
        points = [_gain(seed_values(grouped[baseline], split, s, "error_px", group),
                        seed_values(grouped[model], split, s, "error_px", group)) for s in sigmas]
        ax.errorbar(x, [p[0] for p in points], yerr=[p[1] for p in points], marker="o", ms=3, capsize=2,
                    label=label(model, grouped[model]))
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_title(f"{split}, {group} balls", fontsize=9)
    ax.set_xlabel("input noise σ (px per axis)")
    ax.set_ylabel(f"gain over {label(baseline, grouped[baseline])} (px)")


def figure_gain(runs: list[dict[str, Any]], stem: Path, baseline: str, pixel_results: str | Path | None) -> list[Path]:
    """The figure (PNG and PDF); nothing when the baseline has no finished seed."""
    if baseline not in by_model(runs):
        return []
    plt = _plt()
    splits = splits_of(runs)
    fig, axes = plt.subplots(2, len(splits), figsize=(5.5 * len(splits), 7.5), squeeze=False)
    sources = []
    for col, split in enumerate(splits):
        marks, source = posterior_marks(pixel_results, split)
        sources.append(source)
        for row, group in enumerate(("colliding", "all")):
            ax = axes[row][col]
            _panel(ax, runs, split, group, baseline)
            for i, (key, error) in enumerate(sorted(marks.items())):
                ax.axvline(sigma_of_error(error), color="grey", ls=("--", ":")[i % 2], lw=1,
                           label=f"{MARK_LABELS[key]} {error:.2f} px (σ {sigma_of_error(error):.2f})")
    axes[0][0].legend(fontsize=6, loc="best")
    fig.suptitle("State-space track: centre-error gain over no relation against input noise "
                 f"(marks: {sources[0]})", fontsize=9)
    fig.tight_layout()
    written = save_figure(fig, stem)
    plt.close(fig)
    return written
