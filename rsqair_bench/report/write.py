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
from pathlib import Path
from typing import Any

from rsqair_bench.core.io import atomic_write_text, check_outputs, owned_directory
from rsqair_bench.errors import ConfigError, DataError
from rsqair_bench.metrics import MISSING, collect_metrics, ordered_models
from rsqair_bench.report.figures import draw_rollouts, figure_ll_bars, figure_rollouts, figure_training_curves
from rsqair_bench.report.tables import (
    METRICS,
    dynamics_files,
    main_table,
    per_seed_tables,
    relation_files,
    throughput_table,
    to_latex,
)
from rsqair_bench.report.textfmt import markdown_table

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the report
def write_report(
    results_dir: str | Path, expected_seeds: int | None = None, compare_paper: bool = False, baseline: str | None = None,
    pixel_results: str | Path | None = None,
) -> list[Path]:
    """Write tables and figures into results_dir/report/; returns the files written.

    `baseline`: the model every other is tested against in significance.md (default: sqair).
    `pixel_results`: for the state-space track's gain figure, a pixel suite's results directory whose
    posterior error it marks (report/states_figure.py); the pixel report ignores it.
    The report directory is held (report/.lock) while it is written, and the temp files a killed
    report left in it are removed first (io.owned_directory).
    """
    if not Path(results_dir).is_dir():
        return _write_report(results_dir, expected_seeds, compare_paper, baseline)  # says what is missing
    with owned_directory(Path(results_dir) / "report", subdirectories=("figures",)):
        return _write_report(results_dir, expected_seeds, compare_paper, baseline, pixel_results)


def _write_report(
    results_dir: str | Path, expected_seeds: int | None = None, compare_paper: bool = False, baseline: str | None = None,
    pixel_results: str | Path | None = None,
) -> list[Path]:
    """write_report's work, under its lock."""
    from rsqair_bench.report.animation import write_rollout_gifs
    from rsqair_bench.report.dynamics import horizon_footnote, with_reference_rows
    from rsqair_bench.report.failures import add_failed_models, collect_failures, failures_note
    from rsqair_bench.report.learning import learning_note
    from rsqair_bench.report.significance_table import write_significance

    results_dir = Path(results_dir)
    runs = collect_metrics(results_dir)
    if not runs:
        raise DataError(f"{results_dir}: no metrics.json files found (run the suite first)")
    from rsqair_bench.report.significance_table import resolve_baseline
    from rsqair_bench.report.states import is_states_report, write_states_report
    from rsqair_bench.report.states_figure import figure_gain

    if is_states_report(runs):  # the state-space track (docs/states.md) has its own tables and figure
        written = write_states_report(runs, results_dir, expected_seeds, baseline)
        base = resolve_baseline(baseline, ordered_models(runs))
        return written + figure_gain(runs, results_dir / "report" / "figures" / "gain_vs_sigma", base, pixel_results)
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
        + learning_note(runs) + horizon_footnote(table))
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
    parser.add_argument("--pixel-results", metavar="DIR", default=None,
                        help="state-space track: mark this pixel results directory's posterior error on the gain figure")
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
    written = write_report(args.results_dir, args.expected_seeds, args.compare_paper, args.baseline, args.pixel_results)
    out = Path(args.results_dir) / "report"
    print((out / "table.md").read_text())
    print(f"tables in {out}; figures in {out / 'figures'} ({sum(p.suffix == '.png' for p in written)} figures)")
    gifs = sum(p.suffix == ".gif" for p in written)
    print(f"significance against the baseline in {out / 'significance.md'}; {gifs} rollout GIFs")
    return 0
