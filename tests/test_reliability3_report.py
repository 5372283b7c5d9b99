"""Reliability round 3 (issue 32), part 2: what `report` pools, and what it reads before writing.

One test per case of the round's fault pass (P04-P15), named after its id. The fixtures are the committed
study's metrics.json files (results/study/report/logs/), placed as `<model>/seed<k>/metrics.json` the way
`run` writes them, with one field edited, as the fault pass built them. Each test asserts the refusal,
the note or the cell its fix introduced, and fails on the tree before the fix.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rsqair_bench.errors import DataError
from rsqair_bench.metrics import collect_metrics
from rsqair_bench.report.compare import not_comparable, write_comparison
from rsqair_bench.report.pooling import NOT_POOLED
from rsqair_bench.report.write import build_report, write_report
from tests.cli_checks import assert_one_line, run_cli

LOGS = Path(__file__).resolve().parents[1] / "results" / "study" / "report" / "logs"
MODELS = ("sqair", "sqair+in")


# ----------------------------------------------------------------------------- fixtures
def _place(root: Path, model: str, seed: int, where: str | None = None, **top: Any) -> Path:
    """The committed metrics.json of (model, seed) as ROOT/<where or model/seed<k>>/metrics.json, with
    top-level keys replaced by `top`."""
    doc = json.loads((LOGS / f"{model}_seed{seed}_metrics.json").read_text())
    doc.update(top)
    path = root / (where or f"{model}/seed{seed}") / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _study(root: Path, seeds: range = range(5)) -> Path:
    for model in MODELS:
        for seed in seeds:
            _place(root, model, seed)
    return root


def _edit(path: Path, edit: Any) -> Path:
    """Apply `edit(doc)` to the metrics.json at `path`."""
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and mtime: "nothing changed" is this, before and after."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _pooled_mean(model: str, seeds: range = range(5), split: str = "balls4/test") -> float:
    """The data LL the table must show: every seed's per-sample values of the committed files, pooled."""
    values = [v for s in seeds for v in json.loads((LOGS / f"{model}_seed{s}_metrics.json").read_text())
              ["splits"][split]["data_ll"]["per_sample"]]
    return float(np.mean(values))


def _row(table: str, name: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(f"| {name} "))


# ----------------------------------------------------------------------------- P04
def test_P04_refused_report_creates_nothing(tmp_path: Path, capsys) -> None:
    _study(tmp_path, range(2))
    bad = _edit(tmp_path / "sqair+in" / "seed1" / "metrics.json", lambda d: d.update(schema_version=2))
    before = _snapshot(tmp_path)
    code, err = run_cli(["report", str(tmp_path)], capsys)
    assert_one_line(code, err, str(bad), "schema_version 2 unknown")
    assert _snapshot(tmp_path) == before and not (tmp_path / "report").exists()


# ----------------------------------------------------------------------------- P05, P06
def test_P05_other_suite_not_pooled(tmp_path: Path) -> None:
    _study(tmp_path)
    _place(tmp_path, "sqair", 0, where="other/sqair/seed0", suite="learn")  # another suite's job, in a subfolder
    _edit(tmp_path / "other/sqair/seed0/metrics.json",
          lambda d: d["splits"]["balls4/test"]["data_ll"].update(mean=-999.0, per_sample=[-999.0] * 5))
    write_report(tmp_path)
    table = (tmp_path / "report" / "table.md").read_text()
    assert f"| 5/5     | {_pooled_mean('sqair'):.2f} ± " in _row(table, "SQAIR"), table
    assert "**Not in the numbers (1)**" in table and "`other/sqair/seed0/metrics.json`" in table


def test_P05_second_suite_among_the_jobs_is_refused(tmp_path: Path, capsys) -> None:
    _study(tmp_path, range(2))
    _place(tmp_path, "sqair", 1, suite="learn")  # a job of another suite where this one's would be
    code, err = run_cli(["report", str(tmp_path)], capsys)
    assert_one_line(code, err, f"{tmp_path}: jobs of 2 suites", "'study': 3 job(s)", "'learn': 1 job(s), e.g. sqair/seed1")
    assert not (tmp_path / "report").exists()


def test_P06_backup_copy_is_listed_not_pooled(tmp_path: Path) -> None:
    _study(tmp_path)
    _edit(_place(tmp_path, "sqair", 0, where="sqair/seed0.bak"),
          lambda d: d["splits"]["balls4/test"]["data_ll"].update(mean=-5000.0, per_sample=[-5000.0] * 5))
    assert len(collect_metrics(tmp_path)) == 10  # five seeds of each model, not six of SQAIR
    write_report(tmp_path)
    table = (tmp_path / "report" / "table.md").read_text()
    assert f"| 5/5     | {_pooled_mean('sqair'):.2f} ± " in _row(table, "SQAIR"), table
    assert "`sqair/seed0.bak/metrics.json`" in table


def test_P06_compare_lists_a_backup_copy_and_does_not_pool_it(tmp_path: Path) -> None:
    _study(tmp_path / "A", range(2))
    _study(tmp_path / "B", range(2))
    _place(tmp_path / "B", "sqair", 0, where="sqair/seed0.bak")
    write_comparison(tmp_path / "A", tmp_path / "B")
    text = (tmp_path / "A" / "report" / "compare" / "compare.md").read_text()
    assert "**B: not in the numbers (1)**" in text and "`sqair/seed0.bak/metrics.json`" in text
    rows = (tmp_path / "A" / "report" / "compare" / "compare.csv").read_text().splitlines()
    assert any(r.startswith("SQAIR,balls4/test,data LL,") and ",2 vs 2," in r for r in rows), rows


def test_P06_file_in_another_jobs_directory_is_refused(tmp_path: Path, capsys) -> None:
    _study(tmp_path, range(2))
    copied = _place(tmp_path, "sqair", 0, where="sqair/seed7")  # seed 0's file copied to seed7/
    code, err = run_cli(["report", str(tmp_path)], capsys)
    assert_one_line(code, err, str(copied), "of sqair/seed0 lies in the job directory sqair/seed7")


# ----------------------------------------------------------------------------- P07
def _evaluated_differently(doc: dict) -> None:
    """sqair+in seed 1 evaluated with 6 frames, 1 sample and evaluation version 1 (the fault pass's R/evalmix)."""
    entry = doc["splits"]["balls4/test"]
    entry.update(frames=6, samples=1)
    entry["settings"].update(samples=1, version=1)
    entry["settings"]["split"]["frames"] = 6
    for metric in ("data_ll", "relational_ll"):
        entry[metric]["per_sample"] = entry[metric]["per_sample"][:1]


def test_P07_seeds_evaluated_differently_are_not_pooled(tmp_path: Path) -> None:
    _study(tmp_path)
    _edit(tmp_path / "sqair+in" / "seed1" / "metrics.json", _evaluated_differently)
    write_report(tmp_path)
    report = tmp_path / "report"
    table = (report / "table.md").read_text()
    row = _row(table, "R-SQAIR(IN)")
    assert row.count(NOT_POOLED) == 2 and f"{_pooled_mean('sqair+in', range(5), 'balls678/test'):.2f}" in row, row
    assert "R-SQAIR(IN) balls4/test: frames 6 (seed 1) vs 10 (seeds 0, 2, 3, 4); samples 1 (seed 1) vs 5" in table
    assert "evaluation version 1 (seed 1) vs 2 (seeds 0, 2, 3, 4)" in table
    significance = (report / "significance.md").read_text()
    assert "| R-SQAIR(IN) | balls4/test" not in significance and "| R-SQAIR(IN) | balls678/test" in significance
    seeds, spread = (report / "per_seed.md").read_text().split("# Spread of seed means")
    assert seeds.count("| R-SQAIR(IN) |") == 5  # each seed keeps its own numbers
    assert "| R-SQAIR(IN) | balls4/test" not in spread and "| R-SQAIR(IN) | balls678/test" in spread


def test_P07_compare_marks_a_side_whose_own_seeds_differ(tmp_path: Path) -> None:
    _study(tmp_path / "A", range(3))
    _edit(tmp_path / "A" / "sqair" / "seed1" / "metrics.json", _evaluated_differently)
    runs = collect_metrics(tmp_path / "A")
    sqair = [r for r in runs if r["model"] == "sqair"]
    assert not_comparable(sqair, sqair, "balls4/test") == "frames 10, 6 vs 10, 6; samples 1, 5 vs 1, 5"


# ----------------------------------------------------------------------------- P09, P10
@pytest.mark.parametrize("value", ["0", "-1"], ids=["P09-zero", "P10-negative"])
def test_P09_P10_expected_seeds_below_one_is_refused(tmp_path: Path, capsys, value: str) -> None:
    _study(tmp_path, range(2))
    before = _snapshot(tmp_path)
    code, err = run_cli(["report", str(tmp_path), "--expected-seeds", value], capsys)
    assert_one_line(code, err, f"--expected-seeds: found {value}, expected a number of seeds >= 1")
    assert _snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- P12
def _set(path: tuple[Any, ...], value: Any) -> Any:
    def edit(doc: dict) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


P12_CASES = {
    "relout-list": (("splits", "balls4/test", "relation_output"), [1, 2], "relation_output: expected a mapping"),
    "relout-badkey": (("splits", "balls4/test", "relation_output", "by_neighbours"), {"three": {"mean_norm": 1.0}},
                      "by_neighbours.three: expected a key that counts"),
    "matching-num": (("splits", "balls4/test", "matching"), {"sampled": 5}, "matching.sampled: expected a mapping"),
}


@pytest.mark.parametrize("case", list(P12_CASES))
def test_P12_block_of_the_wrong_shape_is_refused_before_writing(tmp_path: Path, capsys, case: str) -> None:
    path, value, needle = P12_CASES[case]
    _study(tmp_path, range(2))
    old = tmp_path / "report" / "table.md"
    old.parent.mkdir()
    old.write_text("the previous report\n")
    bad = _edit(tmp_path / "sqair+in" / "seed1" / "metrics.json", _set(path, value))
    before = _snapshot(tmp_path)
    code, err = run_cli(["report", str(tmp_path)], capsys)
    assert_one_line(code, err, str(bad), needle)
    assert _snapshot(tmp_path) == before  # table.md untouched, nothing else written


def test_P12_no_value_of_a_wrong_type_ends_the_report_in_a_traceback(tmp_path: Path) -> None:
    """Every key of a real split entry (first list items included), replaced by a list, a mapping or null:
    the report is built (nothing written) or refused with a DataError, never a traceback."""
    _place(tmp_path, "sqair+in", 1)
    target = _place(tmp_path, "sqair+in", 0)
    doc = json.loads(target.read_text())
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node[:1]) if isinstance(node, list) else ()
        for key, value in items:
            paths.append(path + (key,))
            walk(value, path + (key,))

    walk(doc["splits"]["balls4/test"], ("splits", "balls4/test"))
    assert len(paths) > 100
    for path in paths:
        for value in ([1, 2], {"3": {"mean_norm": 1.0}}, None):
            edited = copy.deepcopy(doc)
            _set(path, value)(edited)
            target.write_text(json.dumps(edited))
            try:
                build_report(tmp_path)
            except DataError:
                pass


# ----------------------------------------------------------------------------- P13
@pytest.mark.parametrize("path, value", [
    (("splits", "balls4/test", "knockout", "data_ll", "per_sample", 0), float("nan")),
    (("splits", "balls4/test", "relation_output", "by_neighbours", "2", "mean_norm"), float("inf")),
], ids=["knockout-nan", "relout-inf"])
def test_P13_non_finite_values_in_knockout_and_relation_output_are_refused(tmp_path: Path, capsys, path: tuple,
                                                                          value: float) -> None:
    _study(tmp_path, range(2))
    bad = _edit(tmp_path / "sqair+in" / "seed0" / "metrics.json", _set(path, value))  # written as NaN / Infinity
    code, err = run_cli(["report", str(tmp_path)], capsys)
    dotted = ".".join(str(k) for k in path[:-1]) + (f"[{path[-1]}]" if isinstance(path[-1], int) else f".{path[-1]}")
    assert_one_line(code, err, str(bad), dotted, "expected a finite number or null")
    assert not (tmp_path / "report").exists()


# ----------------------------------------------------------------------------- P15
def test_P15_unknown_baseline_is_refused_naming_the_models(tmp_path: Path, capsys) -> None:
    _study(tmp_path, range(2))
    code, err = run_cli(["report", str(tmp_path), "--baseline", "nosuchmodel"], capsys)
    assert_one_line(code, err, "baseline 'nosuchmodel'", "expected one of: sqair, sqair+in")
    assert not (tmp_path / "report").exists()
    shutil.rmtree(tmp_path / "sqair")  # a baseline whose every job failed is still a model of the directory
    (tmp_path / "sqair" / "seed0").mkdir(parents=True)
    (tmp_path / "sqair" / "seed0" / "error.txt").write_text("RuntimeError: boom\n")
    written = write_report(tmp_path, baseline="sqair")
    assert "no finished seed" in (tmp_path / "report" / "significance.md").read_text() and written
