"""The report's figures (PNG and PDF, each written atomically): Figure 4 style bars of data and
relational LL with error bars and the reference predictors' lines, training curves from
train_log.csv, and Figure 3 style rollouts from the rollout_*.npz files."""

from __future__ import annotations

import io
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rsqair_bench.core.io import atomic_path, read_regular_file
from rsqair_bench.metrics import by_model, label, ordered_models, ordered_splits
from rsqair_bench.report.tables import METRICS, PAPER, mean_std, metric_values

log = logging.getLogger(__name__)


def save_figure(fig: Any, stem: Path) -> list[Path]:
    written = []
    for ext in ("png", "pdf"):
        path = stem.with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=120, bbox_inches="tight")
        written.append(path)
    return written


# ----------------------------------------------------------------------------- figures
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_ll_bars(runs: list[dict], stem: Path, compare_paper: bool = False) -> list[Path]:
    """Figure 4 style: per split, bars of data LL and relational LL with std error bars, and a
    line per reference predictor (empty, copy-last, const-velocity, perfect) when the runs have them."""
    from rsqair_bench.report.dynamics import draw_reference_lines, has_references

    splits = [s for s in ordered_splits(runs) if any(s in r["splits"] for r in runs)]
    if not splits:  # every split left out (its seeds evaluated differently: report/pooling.py)
        return []
    plt = _plt()
    models = ordered_models(runs)
    grouped = by_model(runs)
    labels = [label(m, grouped[m]) for m in models]
    fig, axes = plt.subplots(len(METRICS), len(splits), figsize=(3.2 * len(splits) + 1, 6), squeeze=False)
    colors = plt.get_cmap("tab10")(np.arange(len(models)) % 10)
    for col, split in enumerate(splits):
        for row, (metric, name) in enumerate(METRICS.items()):
            ax = axes[row][col]
            means, stds = [], []
            for m in models:
                values, _ = metric_values(grouped[m], split, metric)
                mean, std = mean_std(values) if values else (math.nan, 0.0)
                means.append(mean)
                stds.append(std)
            x = np.arange(len(models))
            ax.bar(x, means, yerr=stds, color=colors, capsize=3)
            for i, mean in enumerate(means):
                if math.isnan(mean):  # no run has this split: say so rather than show an empty slot
                    ax.text(i, 0.0, "n/a", ha="center", va="bottom", fontsize=8, color="0.4")
            if compare_paper:
                for i, m in enumerate(models):
                    paper = PAPER.get(m, {}).get((split, metric))
                    if paper is not None:
                        ax.plot(i, paper, "k*", markersize=9, label="paper" if i == 0 else None)
            ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
            ax.set_title(f"{name}, {split}", fontsize=9)
            ax.axhline(0.0, color="0.5", linewidth=0.5)
            draw_reference_lines(ax, runs, split, metric)
            if row == 0 and col == 0 and has_references(runs):
                ax.legend(fontsize=6, title="reference", title_fontsize=6)
    fig.tight_layout()
    written = save_figure(fig, stem)
    plt.close(fig)
    return written


def figure_training_curves(runs: list[dict], stem: Path) -> list[Path]:
    """Loss/bound columns of train_log.csv per model (one line per seed); nothing if no logs."""
    logs: dict[str, list[pd.DataFrame]] = defaultdict(list)
    grouped = by_model(runs)
    for model in ordered_models(runs):
        for r in grouped[model]:
            path = Path(r["_dir"]) / "train_log.csv"
            if path.is_file():
                try:  # through the regular-file reader: the file checked and read in one open
                    logs[model].append(pd.read_csv(io.BytesIO(read_regular_file(path))))
                except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, UnicodeDecodeError) as err:
                    log.warning("%s: skipped (%s)", path, err)
    frames = [df for dfs in logs.values() for df in dfs]
    if not frames:
        return []
    xcol = "iteration" if "iteration" in frames[0].columns else frames[0].columns[0]
    ycols = [
        c
        for c in frames[0].columns
        if c != xcol and any(w in c.lower() for w in ("loss", "bound")) and pd.api.types.is_numeric_dtype(frames[0][c])
    ]
    if not ycols:
        return []
    plt = _plt()
    fig, axes = plt.subplots(1, len(ycols), figsize=(4.5 * len(ycols), 3.5), squeeze=False)
    colors = plt.get_cmap("tab10")
    for j, ycol in enumerate(ycols):
        ax = axes[0][j]
        for i, (model, dfs) in enumerate(logs.items()):
            for k, df in enumerate(dfs):
                if ycol in df and xcol in df:
                    d = df[[xcol, ycol]].dropna()
                    ax.plot(
                        d[xcol],
                        d[ycol],
                        color=colors(i % 10),
                        alpha=0.8,
                        linewidth=1,
                        label=label(model, grouped[model]) if k == 0 else None,
                    )
        ax.set_xlabel(xcol)
        ax.set_title(ycol, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    written = save_figure(fig, stem)
    plt.close(fig)
    return written


def figure_rollouts(runs: list[dict], stem: Path, max_rows: int = 8) -> list[Path]:
    """Figure 3 style, one rollout per job (the first `rollout*.npz` in its directory)."""
    grouped = by_model(runs)
    items = []
    for model in ordered_models(runs):
        for r in grouped[model]:
            for path in sorted(p for p in Path(r["_dir"]).glob("rollout*.npz") if p.is_file()):  # a FIFO would block
                items.append((f"{label(model, grouped[model])} s{r['seed']} {path.stem}", path))
                break  # one rollout file per job
    return draw_rollouts(items[:max_rows], stem)


def draw_rollouts(items: list[tuple[str, Path]], stem: Path) -> list[Path]:
    """Frames with a colored box per object (one color per object id); frames from n_observed on
    are sampled from the propagation prior (red frame). A `truth` array, when present, is drawn
    as a row above the model's frames."""
    rows = []
    for title, path in items:
        try:
            with np.load(io.BytesIO(read_regular_file(path))) as z:  # never a pickle: allow_pickle is off
                pres = z["pres"]
                ids = z["ids"] if "ids" in z else np.broadcast_to(np.arange(pres.shape[1]), pres.shape)
                if "truth" in z:
                    rows.append((f"{title} data", z["truth"], None, None, None, int(z["n_observed"])))
                rows.append((title, z["frames"], z["boxes"], pres, ids, int(z["n_observed"])))
        except (OSError, KeyError, ValueError) as err:
            log.warning("%s: skipped rollout (%s)", path, err)
    if not rows:
        return []
    plt = _plt()
    from matplotlib.patches import Rectangle

    steps = max(frames.shape[0] for _, frames, *_ in rows)
    fig, axes = plt.subplots(len(rows), steps, figsize=(1.2 * steps, 1.35 * len(rows) + 0.3), squeeze=False)
    colors = plt.get_cmap("tab10")
    for row, (title, frames, boxes, pres, ids, n_obs) in enumerate(rows):  # [T,H,W], [T,K,4], [T,K], [T,K]
        for t in range(steps):
            ax = axes[row][t]
            ax.set_xticks([])
            ax.set_yticks([])
            if t >= frames.shape[0]:
                ax.axis("off")
                continue
            ax.imshow(frames[t], cmap="gray", vmin=0.0, vmax=1.0)
            for k in range(0 if boxes is None else boxes.shape[1]):
                if pres[t, k] > 0.5:
                    x0, y0, x1, y1 = boxes[t, k]
                    color = colors(int(ids[t, k]) % 10)  # one color per object identity across frames
                    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1))
            if t >= n_obs and boxes is not None:
                for spine in ax.spines.values():
                    spine.set_edgecolor("red")
                    spine.set_linewidth(1.5)
            if row == 0:
                ax.set_title(f"t={t + 1}" + (" (sampled)" if t >= n_obs else ""), fontsize=6)
        axes[row][0].set_ylabel(title, fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout()
    written = save_figure(fig, stem)
    plt.close(fig)
    return written
