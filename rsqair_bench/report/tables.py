"""`report RESULTS_DIR`: the paper's tables and figures from metrics.json files alone.

Reads only `metrics.json` (plus, when present beside them, `train_log.csv` for training
curves and `rollout.npz` for the Figure 3 style rollouts), so tables can be regenerated
without rerunning anything. Writes RESULTS_DIR/report/:

- table.{md,csv,tex}: rows = models (paper names); columns = data LL and relational LL per
  split as mean ± std over all seeds x samples values (the per_sample lists concatenated
  across seeds), and the number of seeds finished. A split some seeds lack says so
  ("(3/5 seeds)"); a split no seed has is "—". Nothing is averaged away silently.
- per_seed.{md,csv}: each seed's means, and the spread of seed means per model.
- throughput.{md,csv}: train/eval sequences/s, peak memory, parameters, device.
- figures/: fig4_ll (bars with error bars), training_curves, fig3_rollouts; PNG and PDF.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rsqair_bench.errors import ConfigError, DataError
from rsqair_bench.core.io import atomic_path, atomic_write_text, check_outputs, owned_directory
from rsqair_bench.metrics import (
    MISSING,
    by_model,
    collect_metrics,
    label,
    ordered_models,
    ordered_splits,
)
from rsqair_bench.report.textfmt import fixed, markdown_table

log = logging.getLogger(__name__)

METRICS = {"data_ll": "data LL", "relational_ll": "relational LL"}

# The R-SQAIR paper's numbers (docs/reference.md, "The paper's results"), by our model name.
PAPER: dict[str, dict[tuple[str, str], float]] = {
    "sqair": {
        ("balls4/test", "data_ll"): 399.5,
        ("balls4/test", "relational_ll"): 0.21,
        ("balls678/test", "relational_ll"): -164.1,
    },
    "sqair+in": {
        ("balls4/test", "data_ll"): 429.2,
        ("balls4/test", "relational_ll"): 1.95,
        ("balls678/test", "relational_ll"): -96.7,
    },
    "sqair+rmc": {
        ("balls4/test", "data_ll"): 457.32,
        ("balls4/test", "relational_ll"): 3.62,
        ("balls678/test", "relational_ll"): -97.0,
    },
}


# ----------------------------------------------------------------------------- I/O
def _save_figure(fig: Any, stem: Path) -> list[Path]:
    written = []
    for ext in ("png", "pdf"):
        path = stem.with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=120, bbox_inches="tight")
        written.append(path)
    return written


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is handled below
        mean, std = float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    if not (np.isfinite(mean) and np.isfinite(std)) and arr.size and np.isfinite(arr).all():
        scale = float(np.abs(arr).max())  # finite scores near the float limit: their sum overflowed, not they
        mean, std = _mean_std(list(arr / scale))
        mean, std = mean * scale, std * scale
    return mean, std


def _fmt(mean: float, std: float | None = None) -> str:
    """`412.35 ± 1.20`; a magnitude of 1e9 or more in scientific notation (textfmt.fixed), not 309 digits."""
    if std is None:
        return fixed(mean)
    return f"{fixed(mean)} ± {fixed(std)}"


def _values(runs: list[dict], split: str, metric: str) -> tuple[list[float], int]:
    """All seeds x samples values of a metric on a split, and how many seeds contributed."""
    values: list[float] = []
    seeds = 0
    for r in runs:
        entry = r["splits"].get(split, {}).get(metric)
        if entry is None:
            continue
        per_sample = entry.get("per_sample") or [entry["mean"]]
        values.extend(float(v) for v in per_sample)
        seeds += 1
    return values, seeds


# ----------------------------------------------------------------------------- tables
def main_table(runs: list[dict], expected_seeds: int | None = None, compare_paper: bool = False) -> pd.DataFrame:
    """The paper's table: one row per model; strings, so missing seeds/splits are explicit."""
    from rsqair_bench.report.dynamics import horizon_mark

    grouped = by_model(runs)
    all_seeds = {r["seed"] for r in runs}
    expected = expected_seeds or len(all_seeds)
    splits = ordered_splits(runs)
    rows = []
    for model in ordered_models(runs):
        mruns = grouped[model]
        row: dict[str, str] = {"model": label(model, mruns), "seeds": f"{len(mruns)}/{expected}"}
        for split in splits:
            for metric, name in METRICS.items():
                values, seeds = _values(mruns, split, metric)
                cell = MISSING
                if values:
                    cell = _fmt(*_mean_std(values)) + horizon_mark(mruns, split)
                    if seeds < expected:
                        cell += f" ({seeds}/{expected} seeds)"
                row[f"{name} {split}"] = cell
                if compare_paper and any((split, metric) in p for p in PAPER.values()):
                    paper = PAPER.get(model, {}).get((split, metric))
                    row[f"paper {name} {split}"] = MISSING if paper is None else f"{paper:g}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def per_seed_tables(runs: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each seed's means per split, and per model the spread (std, min, max) of the seed means."""
    splits = ordered_splits(runs)
    grouped = by_model(runs)
    rows, spread = [], []
    for model in ordered_models(runs):
        for r in grouped[model]:
            row: dict[str, Any] = {"model": label(model, grouped[model]), "seed": r["seed"]}
            for split in splits:
                s = r["splits"].get(split)
                for metric, name in METRICS.items():
                    row[f"{name} {split}"] = _fmt(s[metric]["mean"]) if s and metric in s else MISSING
                row[f"IWAE bound {split}"] = _fmt(s["iwae_bound"]["mean"]) if s and "iwae_bound" in s else MISSING
                row[f"count acc. {split}"] = f"{s['count_accuracy']:.3f}" if s and "count_accuracy" in s else MISSING
            rows.append(row)
        for split in splits:
            for metric, name in METRICS.items():
                means = [r["splits"][split][metric]["mean"] for r in grouped[model] if metric in r["splits"].get(split, {})]
                if not means:
                    continue
                spread.append(
                    {
                        "model": label(model, grouped[model]),
                        "split": split,
                        "metric": name,
                        "seeds": len(means),
                        "mean of seed means": _fmt(float(np.mean(means))),
                        "std of seed means": _fmt(float(np.std(means, ddof=1)) if len(means) > 1 else 0.0),
                        "min": _fmt(min(means)),
                        "max": _fmt(max(means)),
                    }
                )
    return pd.DataFrame(rows).set_index(["model", "seed"]), pd.DataFrame(spread)


def throughput_table(runs: list[dict]) -> pd.DataFrame:
    grouped = by_model(runs)
    rows = []
    for model in ordered_models(runs):
        mruns = grouped[model]
        train_sps = [r["train"]["sequences_per_s"] for r in mruns if (r.get("train") or {}).get("sequences_per_s") is not None]
        train_mem = [r["train"]["peak_memory_mb"] for r in mruns if (r.get("train") or {}).get("peak_memory_mb") is not None]
        eval_sps = [
            s["eval_sequences_per_s"] for r in mruns for s in r["splits"].values() if s.get("eval_sequences_per_s") is not None
        ]
        eval_mem = [s["peak_memory_mb"] for r in mruns for s in r["splits"].values() if s.get("peak_memory_mb") is not None]
        params = mruns[0].get("parameters") or {}
        rows.append(
            {
                "model": label(model, mruns),
                "runs": len(mruns),
                "train seq/s": _fmt(*_mean_std(train_sps)) if train_sps else MISSING,
                "eval seq/s": _fmt(*_mean_std(eval_sps)) if eval_sps else MISSING,
                "train peak MB": f"{max(train_mem):.0f}" if train_mem else MISSING,
                "eval peak MB": f"{max(eval_mem):.0f}" if eval_mem else MISSING,
                "params total": f"{params['total']:,}" if "total" in params else MISSING,
                "params relation": f"{params['relation']:,}" if "relation" in params else MISSING,
                "device": ", ".join(sorted({str(r.get("device", "?")) for r in mruns})),
                "torch": ", ".join(sorted({str(r.get("torch_version", "?")) for r in mruns})),
            }
        )
    return pd.DataFrame(rows).set_index("model")


_LATEX_CHARS = {"\\": r"\textbackslash{}", **{ch: "\\" + ch for ch in "&%$#_{}"}, "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
                "`": r"\textasciigrave{}", "\n": " ", "\r": " "}


def _latex_escape(text: str) -> str:
    """Text as LaTeX prints it, in one pass (so `\\` does not become `\\textbackslash\\{\\}`): names come
    from metrics.json, and no command, math, quote or line break may come of them."""
    out = "".join(_LATEX_CHARS.get(ch, ch) for ch in str(text))
    return out.replace("±", r"$\pm$").replace("†", r"$^\dagger$").replace(MISSING, "--")


def to_latex(table: pd.DataFrame, caption: str) -> str:
    """The table as a LaTeX table float: the tabular laid out by tabulate, every cell escaped here.

    Why tabulate's `latex_raw`: its `latex`/`latex_booktabs` formats escape cells themselves, with
    fewer rules than `_latex_escape` (no `|`, backtick or line break) and without `$\\pm$` for ±,
    so escaping before them would escape twice. Numbers are passed as the text the other tables
    print (`disable_numparse`), so tabulate never reformats one."""
    from tabulate import tabulate

    header = [_latex_escape(h) for h in [table.index.name or "", *table.columns]]
    rows = [[_latex_escape(v) for v in [idx, *row.tolist()]] for idx, row in table.iterrows()]
    tabular = tabulate(rows, headers=header, tablefmt="latex_raw", disable_numparse=True,
                       colalign=("left", *["right"] * len(table.columns)))
    lines = [r"\begin{table}[t]", r"\centering", r"\small", tabular,
             rf"\caption{{{_latex_escape(caption)}}}", r"\end{table}", ""]
    return "\n".join(lines)


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

    plt = _plt()
    splits = [s for s in ordered_splits(runs) if any(s in r["splits"] for r in runs)]
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
                values, _ = _values(grouped[m], split, metric)
                mean, std = _mean_std(values) if values else (math.nan, 0.0)
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
    written = _save_figure(fig, stem)
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
                try:
                    logs[model].append(pd.read_csv(path))
                except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as err:
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
    written = _save_figure(fig, stem)
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
            with np.load(path) as z:
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
    written = _save_figure(fig, stem)
    plt.close(fig)
    return written


def dynamics_files(runs: list[dict]) -> dict[str, str]:
    """dynamics.{md,csv,tex}: object-ball matching per model (docs/metrics.md); none if no run has it."""
    from rsqair_bench.report.dynamics import dynamics_table, horizon_footnote

    grouped = by_model(runs)
    models = ordered_models(runs)
    table = dynamics_table(runs, models, grouped, {m: label(m, grouped[m]) for m in models}, ordered_splits(runs))
    if not len(table):
        return {}
    caption = ("Object-ball matching: inferred frames (coverage, duplicates, centre error) and the "
               "prior's centre error at the sampled frame T (px)")
    return {"dynamics.md": f"# {caption}\n\n" + markdown_table(table) + "\n" + horizon_footnote(table),
            "dynamics.csv": table.to_csv(), "dynamics.tex": to_latex(table, caption)}


def relation_files(runs: list[dict]) -> dict[str, str]:
    """relation_use.{md,csv,tex} (knock-out drops) and neighbours.{md,csv} (per seed); none without them."""
    from rsqair_bench.report.relations import KNOCKOUT_CAPTION, NEIGHBOURS_CAPTION, knockout_table, neighbours_table

    grouped = by_model(runs)
    models = ordered_models(runs)
    labels = {m: label(m, grouped[m]) for m in models}
    files: dict[str, str] = {}
    knockout = knockout_table(models, grouped, labels, ordered_splits(runs))
    if len(knockout):
        files.update({"relation_use.md": f"# {KNOCKOUT_CAPTION}\n\n" + markdown_table(knockout) + "\n",
                      "relation_use.csv": knockout.to_csv(), "relation_use.tex": to_latex(knockout, KNOCKOUT_CAPTION)})
    neighbours = neighbours_table(models, grouped, labels, ordered_splits(runs))
    if len(neighbours):
        files.update({"neighbours.md": f"# {NEIGHBOURS_CAPTION}\n\n"
                      + markdown_table(neighbours.reset_index(), index=False) + "\n",
                      "neighbours.csv": neighbours.to_csv()})
    return files


# ----------------------------------------------------------------------------- the report
def write_report(
    results_dir: str | Path, expected_seeds: int | None = None, compare_paper: bool = False, baseline: str | None = None
) -> list[Path]:
    """Write tables and figures into results_dir/report/; returns the files written.

    `baseline`: the model every other is tested against in significance.md (default: sqair).
    The report directory is held (report/.lock) while it is written, and the temp files a killed
    report left in it are removed first (io.owned_directory).
    """
    if not Path(results_dir).is_dir():
        return _write_report(results_dir, expected_seeds, compare_paper, baseline)  # says what is missing
    with owned_directory(Path(results_dir) / "report", subdirectories=("figures",)):
        return _write_report(results_dir, expected_seeds, compare_paper, baseline)


def _write_report(
    results_dir: str | Path, expected_seeds: int | None = None, compare_paper: bool = False, baseline: str | None = None
) -> list[Path]:
    """write_report's work, under its lock."""
    from rsqair_bench.report.animation import write_rollout_gifs
    from rsqair_bench.report.failures import add_failed_models, collect_failures, failures_note
    from rsqair_bench.report.dynamics import horizon_footnote, with_reference_rows
    from rsqair_bench.report.significance_table import write_significance

    results_dir = Path(results_dir)
    runs = collect_metrics(results_dir)
    if not runs:
        raise DataError(f"{results_dir}: no metrics.json files found (run the suite first)")
    failures = collect_failures(results_dir)  # failed jobs keep their rows (0/N, k/N) and their reasons
    expected_seeds = expected_seeds or len({r["seed"] for r in runs} | {f.seed for f in failures})
    out = results_dir / "report"
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def put(name: str, text: str) -> None:
        atomic_write_text(out / name, text)
        written.append(out / name)

    table = add_failed_models(main_table(runs, expected_seeds, compare_paper), runs, failures, expected_seeds)
    table = with_reference_rows(table, runs, METRICS)
    caption = "Log-likelihood of the sampled last frame (nats, mean ± std over seeds × samples)"
    put("table.md", f"# {caption}\n\n" + markdown_table(table) + "\n" + failures_note(failures, results_dir)
        + horizon_footnote(table))
    put("table.csv", table.to_csv())
    put("table.tex", to_latex(table, caption))
    for name, text in {**dynamics_files(runs), **relation_files(runs)}.items():
        put(name, text)
    seeds, spread = per_seed_tables(runs)
    put(
        "per_seed.md",
        "# Per seed (mean over samples)\n\n"
        + markdown_table(seeds.reset_index(), index=False)
        + "\n\n# Spread of seed means\n\n"
        + (markdown_table(spread, index=False) if len(spread) else MISSING)
        + "\n",
    )
    put("per_seed.csv", seeds.to_csv())
    put("spread.csv", spread.to_csv(index=False))
    through = throughput_table(runs)
    put("throughput.md", "# Throughput\n\n" + markdown_table(through) + "\n")
    put("throughput.csv", through.to_csv())

    written += figure_ll_bars(runs, figs / "fig4_ll", compare_paper)
    written += figure_training_curves(runs, figs / "training_curves")
    written += figure_rollouts(runs, figs / "fig3_rollouts")
    written += write_significance(runs, out, baseline)
    written += write_rollout_gifs(runs, figs)
    return written


class _CompareAction(argparse.Action):
    """`--compare` before, between or after the two directories, always A then B.

    Why: `report A --compare B` used to fail ("unrecognized arguments: B"): argparse had already given
    the positionals their values when it met the flag. So the flag takes an optional value, and where
    it stands decides what that value is: after A it is B; first (`--compare A B`) it is A, and the
    directory that follows (parsed as RESULTS_DIR) is B (`command` puts them in order)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        namespace.compare = True
        if values is None:
            return
        if namespace.results_dir is None:
            namespace.compare_first = values
        elif namespace.other is None:
            namespace.other = values
        else:
            parser.error(f"--compare {values}: A ({namespace.results_dir}) and B ({namespace.other}) are already given")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", nargs="?", help="a suite's results directory, e.g. results/quick")
    parser.add_argument("other", nargs="?", help="with --compare: the second results directory (B)")
    parser.add_argument("--compare", nargs="?", default=False, action=_CompareAction, metavar="B",
                        help="compare RESULTS_DIR (A) with OTHER (B) side by side: `report A B --compare`, "
                             "`report A --compare B` or `report --compare A B`")
    parser.set_defaults(compare_first=None)
    parser.add_argument("--force", action="store_true", help="with --rollout: overwrite existing PATH.png/.pdf")
    parser.add_argument("--baseline", default=None, help="model the others are tested against in significance.md (default sqair)")
    parser.add_argument("--rollout", metavar="NPZ", help="instead: draw one rollout file (from `eval --rollout`)")
    parser.add_argument(
        "--out", metavar="PATH", help="with --rollout: output path without extension; with --compare: output directory"
    )
    parser.add_argument("--compare-paper", action="store_true", help="add the R-SQAIR paper's numbers beside ours")
    parser.add_argument(
        "--expected-seeds", type=int, default=None, help="seeds each model should have (default: every seed found for any model)"
    )


def command(args: argparse.Namespace) -> int:
    if args.rollout:
        path = Path(args.rollout)
        if not path.is_file():
            raise ConfigError(f"{path}: no such rollout file")
        stem = Path(args.out or path.with_suffix(""))
        check_outputs({"--rollout": path}, {f"--out ({ext})": stem.with_suffix(f".{ext}") for ext in ("png", "pdf")},
                      force=args.force)
        written = draw_rollouts([(path.stem, path)], stem)
        if not written:
            raise ConfigError(f"{path}: not a rollout file (expected frames, boxes, pres, n_observed arrays)")
        print("wrote " + ", ".join(str(p) for p in written))
        return 0
    if args.compare_first is not None:  # `report --compare A B`: A came with the flag, B as RESULTS_DIR
        if args.other is not None:
            raise ConfigError(f"report --compare: three directories given ({args.compare_first}, "
                              f"{args.results_dir}, {args.other}), expected two (A and B)")
        args.results_dir, args.other = args.compare_first, args.results_dir
    if args.compare:
        from rsqair_bench.report.compare import command as compare_command

        return compare_command(args)
    if not args.results_dir:
        raise ConfigError("report: give a RESULTS_DIR (or --rollout NPZ)")
    if args.other:
        raise ConfigError(f"report: a second directory ({args.other}) needs --compare")
    written = write_report(args.results_dir, args.expected_seeds, args.compare_paper, args.baseline)
    out = Path(args.results_dir) / "report"
    print((out / "table.md").read_text())
    print(f"tables in {out}; figures in {out / 'figures'} ({sum(p.suffix == '.png' for p in written)} figures)")
    gifs = sum(p.suffix == ".gif" for p in written)
    print(f"significance against the baseline in {out / 'significance.md'}; {gifs} rollout GIFs")
    return 0
