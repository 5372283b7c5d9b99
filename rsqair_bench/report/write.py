"""`report RESULTS_DIR`: the paper's tables and figures from metrics.json files alone.

Reads only `metrics.json` (plus, when present beside them, `train_log.csv` for training
curves and `rollout.npz` for the Figure 3 style rollouts), so tables can be regenerated
without rerunning anything. What it pools is the jobs `run` writes, `<model>/seed<k>/metrics.json`
directly in RESULTS_DIR, of one suite (`metrics.collect_metrics`); other metrics.json files are
listed, never read, and a model's split whose seeds were evaluated differently is not pooled
(`report/pooling.py`). Every input is read and checked, and every table computed, before report/
is created. Writes RESULTS_DIR/report/:

- table.{md,csv,tex}: rows = models (paper names); columns = data LL and relational LL per
  split as mean ± std over all seeds x samples values (the per_sample lists concatenated
  across seeds), and the number of seeds finished. A split some seeds lack says so
  ("(3/5 seeds)"); a split no seed has is "—". Nothing is averaged away silently.
- per_seed.{md,csv}: each seed's means, and the spread of seed means per model.
- throughput.{md,csv}: train/eval sequences/s, peak memory, parameters, training precision, device.
- figures/: fig4_ll (bars with error bars), training_curves, fig3_rollouts; PNG and PDF.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsqair_bench.core.io import atomic_write_text, check_outputs, owned_directory
from rsqair_bench.errors import ConfigError, DataError
from rsqair_bench.metrics import MISSING, collect_metrics, label, ordered_models, ordered_splits, unpooled_metrics
from rsqair_bench.report.figures import draw_rollouts, figure_ll_bars, figure_rollouts, figure_training_curves
from rsqair_bench.report.pooling import mark_mixed, mixed_note, mixed_settings, unpooled_note, without_mixed
from rsqair_bench.report.states import is_states_report
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
@dataclass
class ReportContent:
    """Everything a report writes, computed before the first file is: the tables' text by file name, and
    the runs each figure draws (`pooled`: without the splits whose seeds were evaluated differently)."""

    texts: dict[str, str]
    runs: list[dict[str, Any]]
    pooled: list[dict[str, Any]]
    compare_paper: bool
    figures: Callable[[Path], list[Path]] | None = None  # the state-space track's figures (figures dir -> files)


def write_report(
    results_dir: str | Path, expected_seeds: int | None = None, compare_paper: bool = False, baseline: str | None = None,
    pixel_results: str | Path | None = None,
) -> list[Path]:
    """Write tables and figures into results_dir/report/; returns the files written.

    `baseline`: the model every other is tested against in significance.md (default: sqair).
    `pixel_results`: for the state-space track's gain figure, a pixel suite's results directory whose
    posterior error it marks (report/states_figure.py); the pixel report ignores it.
    Everything is read, checked and computed first (`build_report`); only then is report/ created, held
    (report/.lock) and written, after removing the temp files a killed report left (io.owned_directory).
    Why: a report refused for a bad metrics.json still created report/ and report/.lock, and one that
    failed on a block of the wrong shape died after table.md/.csv/.tex were rewritten (a half-new report).
    """
    content = build_report(Path(results_dir), expected_seeds, compare_paper, baseline, pixel_results)
    out = Path(results_dir) / "report"
    with owned_directory(out, subdirectories=("figures",)):
        return _write(content, out)


def check_expected_seeds(expected_seeds: int | None) -> None:
    """`--expected-seeds` is a number of seeds (>= 1) or absent (every seed found for any model).

    Why: `-1` printed `5/-1` and dropped the missing-seed notes, and `0` silently meant "the default"
    (where `--workers 0` and `--max-objects 0` are errors)."""
    if expected_seeds is not None and (isinstance(expected_seeds, bool) or expected_seeds < 1):
        raise ConfigError(f"--expected-seeds: found {expected_seeds}, expected a number of seeds >= 1 "
                          "(leave it out to expect every seed found for any model)")


def _check_baseline(baseline: str | None, models: set[str], results_dir: Path) -> None:
    """A baseline given by name must be a model of this directory (finished or failed).

    Why: `--baseline nosuchmodel` (a typo) exited 0 with a significance.md that tested nothing."""
    if baseline is not None and baseline not in models:
        raise ConfigError(f"baseline {baseline!r} (--baseline, or the suite's `baseline:`): no job of that model in "
                          f"{results_dir}; expected one of: {', '.join(sorted(models))}")


def build_report(results_dir: Path, expected_seeds: int | None = None, compare_paper: bool = False,
                 baseline: str | None = None, pixel_results: str | Path | None = None) -> ReportContent:
    """Read and check every input, and compute every table; writes nothing (`write_report` writes)."""
    from rsqair_bench.report.failures import collect_failures
    from rsqair_bench.report.significance_table import significance_files

    check_expected_seeds(expected_seeds)
    runs = collect_metrics(results_dir)  # the jobs <model>/seed<k>, one suite; each file's schema checked
    unpooled = unpooled_metrics(results_dir)
    if not runs:
        found = f"; found {len(unpooled)} below it that are not (e.g. {unpooled[0]}): give that suite's own " \
                "results directory" if unpooled else " (run the suite first)"
        raise DataError(f"{results_dir}: no metrics.json files found as <model>/seed<k>/metrics.json{found}")
    failures = collect_failures(results_dir)  # failed jobs keep their rows (0/N, k/N) and their reasons
    _check_baseline(baseline, {r["model"] for r in runs} | {f.model for f in failures}, results_dir)
    if is_states_report(runs):  # the state-space track (docs/states.md) has its own tables and figure
        return _states_content(runs, results_dir, expected_seeds, baseline, pixel_results)
    expected = expected_seeds or len({r["seed"] for r in runs} | {f.seed for f in failures})
    mixed = mixed_settings(runs)
    pooled = without_mixed(runs, mixed)
    texts = _main_table_texts(runs, pooled, mixed, failures, unpooled, results_dir, expected, compare_paper)
    texts.update(_other_texts(runs, pooled, set(mixed), baseline))
    texts.update(significance_files(pooled, baseline))
    return ReportContent(texts, runs, pooled, compare_paper)


def _states_content(runs: list[dict], results_dir: Path, expected_seeds: int | None, baseline: str | None,
                    pixel_results: str | Path | None) -> ReportContent:
    """The state-space report: report/states.py's tables and report/states_figure.py's gain figure, whose
    marks (`pixel_results`) are read and checked now, before anything is written."""
    from rsqair_bench.report.significance_table import resolve_baseline
    from rsqair_bench.report.states import splits_of, states_texts
    from rsqair_bench.report.states_figure import figure_gain, posterior_marks

    for split in splits_of(runs):
        posterior_marks(pixel_results, split)  # a directory without the posterior error is refused here
    base = resolve_baseline(baseline, ordered_models(runs))
    return ReportContent(states_texts(runs, results_dir, expected_seeds, baseline), runs, runs, False,
                         figures=lambda figs: figure_gain(runs, figs / "gain_vs_sigma", base, pixel_results))


CAPTION = "Log-likelihood of the sampled last frame (nats, mean ± std over seeds × samples)"


def _main_table_texts(runs: list[dict], pooled: list[dict], mixed: dict[tuple[str, str], str], failures: list,
                      unpooled: list[Path], results_dir: Path, expected: int, compare_paper: bool) -> dict[str, str]:
    """table.{md,csv,tex}: pooled cells, NOT_POOLED where seeds differ, failed models' rows, reference
    rows, and under table.md the notes (failures, unpooled splits and files, learning, horizon)."""
    from rsqair_bench.report.dynamics import horizon_footnote, with_reference_rows
    from rsqair_bench.report.failures import add_failed_models, failures_note, mark_kept
    from rsqair_bench.report.learning import learning_note

    labels = {r["model"]: label(r["model"], [r]) for r in runs}
    table = main_table(pooled, expected, compare_paper, splits=ordered_splits(runs))
    table = mark_mixed(table, mixed, labels, METRICS)
    table = mark_kept(add_failed_models(table, runs, failures, expected), runs, failures)
    table = with_reference_rows(table, pooled, METRICS)
    notes = (failures_note(failures, results_dir) + mixed_note(mixed, labels) + unpooled_note(unpooled, results_dir)
             + learning_note(runs) + horizon_footnote(table))
    return {"table.md": f"# {CAPTION}\n\n" + markdown_table(table) + "\n" + notes,
            "table.csv": table.to_csv(), "table.tex": to_latex(table, CAPTION)}


def _other_texts(runs: list[dict], pooled: list[dict], unpooled_splits: set[tuple[str, str]],
                 baseline: str | None) -> dict[str, str]:
    """dynamics (the one-step MDDs against `baseline`) and relation use (pooled), per seed (every seed's own
    numbers), throughput."""
    texts = {**dynamics_files(pooled, baseline), **relation_files(pooled)}
    seeds, spread = per_seed_tables(runs, unpooled_splits)
    texts["per_seed.md"] = ("# Per seed (mean over samples)\n\n" + markdown_table(seeds.reset_index(), index=False)
                            + "\n\n# Spread of seed means\n\n"
                            + (markdown_table(spread, index=False) if len(spread) else MISSING) + "\n")
    texts["per_seed.csv"] = seeds.to_csv()
    texts["spread.csv"] = spread.to_csv(index=False)
    through = throughput_table(runs)
    texts["throughput.md"] = "# Throughput\n\n" + markdown_table(through) + "\n"
    texts["throughput.csv"] = through.to_csv()
    return texts


def _write(content: ReportContent, out: Path) -> list[Path]:
    """Write `content` into `out` (held by the caller): the tables, then the figures."""
    from rsqair_bench.report.animation import write_rollout_gifs

    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, text in content.texts.items():
        atomic_write_text(out / name, text)
        written.append(out / name)
    if content.figures is not None:  # the state-space track: its own figure, none of the pixel ones
        return written + content.figures(figs)
    written += figure_ll_bars(content.pooled, figs / "fig4_ll", content.compare_paper)
    written += figure_training_curves(content.runs, figs / "training_curves")
    written += figure_rollouts(content.runs, figs / "fig3_rollouts")
    written += write_rollout_gifs(content.runs, figs)
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
