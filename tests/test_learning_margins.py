"""tools/learning_margins.py without training: families, the run plan, the JSON-lines file, the table.

Why: the tool is what says by how much each learning check's thresholds hold over seeds x kernel
families; its bookkeeping (which runs are planned, which worst run a table names, what a bad results
file says) must be right before anyone reads its margins. The runs themselves are the slow checks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.learning_checks import BOUNDS, CHECKS, DYNAMICS, Threshold

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import learning_margins as lm  # noqa: E402


def test_thresholds_measure_margins_on_the_passing_side() -> None:
    above, below = Threshold("gain", 150.0, above=True), Threshold("duplicates", 0.2, above=False, inclusive=True)
    assert above.margin(209.7) == pytest.approx(59.7) and above.holds(150.1) and not above.holds(150.0)
    assert below.margin(0.097) == pytest.approx(0.103) and below.holds(0.2) and not below.holds(0.21)
    assert str(above) == "gain > 150" and str(below) == "duplicates <= 0.2"
    assert DYNAMICS.failures({"gain_over_copy_last": 140.0, "tracked_fraction": 0.9, "coverage": 0.9,
                              "duplicates": 0.0}) == ["gain_over_copy_last > 150: 140"]
    assert set(CHECKS) >= {"bound", "dynamics"} and BOUNDS.test.startswith("tests/test_learning.py::")


def test_families_and_the_plan() -> None:
    assert lm.parse_family("avx2") == ("avx2", {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                                                "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert lm.parse_family("mine:ATEN_CPU_CAPABILITY=default") == ("mine", {"ATEN_CPU_CAPABILITY": "default"})
    for bad in ("avx3", "mine:OMP_NUM_THREADS=4", "mine:ATEN_CPU_CAPABILITY"):
        with pytest.raises(lm.ToolError, match="--families"):
            lm.parse_family(bad)
    args = SimpleNamespace(checks=["dynamics"], seeds=[0, 1], families=["default", "avx2"], threads=None, perturb=[0])
    plan = [(c, s, f[0], p, t) for c, s, f, p, t in lm.planned(args, CHECKS)]
    assert plan == [("dynamics", 0, "default", False, 1), ("dynamics", 0, "default", True, 1),
                    ("dynamics", 0, "avx2", False, 1), ("dynamics", 0, "avx2", True, 1),
                    ("dynamics", 1, "default", False, 1), ("dynamics", 1, "avx2", False, 1)]
    args.perturb, args.threads = None, 2
    assert {p[3] for p in lm.planned(args, CHECKS)} == {False} and {p[4] for p in lm.planned(args, CHECKS)} == {2}


def _row(seed: int, family: str, gain: float, coverage: float) -> dict:
    figures = {"bound_gain": gain, "coverage": coverage}
    return {"check": "bound", "seed": seed, "family": family, "perturbed": False, "threads": 1, "figures": figures,
            "margins": {t.figure: t.margin(figures[t.figure]) for t in BOUNDS.thresholds},
            "failures": BOUNDS.failures(figures), "seconds": 1.0, "cpu": "test cpu", "cpu_capability": "AVX2", "torch": "x"}


def test_the_table_names_each_figures_worst_run(tmp_path: Path) -> None:
    gain, cover = BOUNDS.thresholds[0].bound, BOUNDS.thresholds[1].bound  # rows at fixed margins from the thresholds
    path = tmp_path / "m.jsonl"
    rows = (_row(0, "default", gain + 600, cover + 0.5), _row(0, "avx2", gain + 400, cover + 0.75),
            _row(1, "default", gain + 700, cover + 0.25))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = lm.summary(lm.read_rows(path))["bound"]
    assert summary["all_pass"] and summary["worst"]["bound_gain"]["run"] == "seed 0, avx2"
    assert summary["worst"]["coverage"] == {"threshold": f"coverage > {cover:g}", "value": cover + 0.25,
                                            "margin": pytest.approx(0.25), "run": "seed 1, default"}
    text = lm.markdown({"bound": summary})
    assert f"| seed 0, avx2 | 1 | {gain + 400:.3f} (+400.000) | {cover + 0.75:.3f} (+0.750) | — | — | — | — | yes | 1.0 |" in text
    assert f"| threshold |  | bound_gain > {gain:g} | coverage > {cover:g} | not asserted | not asserted | not asserted | " \
           "not asserted |  |  |" in text
    assert "| worst run (margin) |  | seed 0, avx2 (+400.000) | seed 1, default (+0.250) |  |  |  |  |  |  |" in text
    failing = lm.summary([_row(2, "sse", gain - 50, cover + 0.1)])["bound"]
    assert not failing["all_pass"] and f"NO: bound_gain > {gain:g}: {gain - 50:.4g}" in lm.markdown({"bound": failing})


def test_a_bad_results_file_is_one_line_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(_row(0, "default", 2000.0, 0.9)) + "\n{not json\n")
    assert lm.main(["table", str(path)]) == 2
    assert capsys.readouterr().err == f"error: {path}: line 2: not JSON (Expecting property name enclosed in double quotes); " \
                                      "expected one run per line\n"
    path.write_text('{"check": "bound"}\n')
    assert lm.main(["table", str(path)]) == 2
    assert "line 1: expected a run with check, seed, family" in capsys.readouterr().err
    assert lm.main(["run", "--out", str(tmp_path / "x.jsonl"), "--checks", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: --checks: unknown check 'nope'; expected one of bound, dynamics")
