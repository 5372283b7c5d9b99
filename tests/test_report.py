"""Report from a fixture of metrics.json files: golden table, explicit missing seeds/splits, files written.

Regenerate the golden file after an intended format change with
`RSQAIR_UPDATE_GOLDEN=1 python -m pytest tests/test_report.py` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from rsqair_bench.cli import main
from rsqair_bench.errors import DataError
from rsqair_bench.metrics import collect_metrics
from rsqair_bench.report.tables import main_table
from rsqair_bench.report.write import write_report

GOLDEN = Path(__file__).parent / "golden" / "report_table.md"
PAPER_NAMES = {"sqair": "SQAIR", "sqair+in": "R-SQAIR(IN)", "sqair+rmc": "R-SQAIR(RMC)", "sqair+gru": "SQAIR+GRU"}


def _split(base: float, seed: int, samples: int = 3) -> dict:
    data = [base + seed + 0.5 * s for s in range(samples)]
    rel = [base / 100.0 - seed - 0.25 * s for s in range(samples)]
    return {
        "data": "x.h5",
        "split": "test",
        "max_objects": 4,
        "frames": 10,
        "sequences": 20,
        "samples": samples,
        "data_ll": {"mean": float(np.mean(data)), "std": float(np.std(data)), "per_sample": data},
        "relational_ll": {"mean": float(np.mean(rel)), "std": float(np.std(rel)), "per_sample": rel},
        "sequences_with_collision": 7,
        "iwae_bound": {"mean": -base, "std": 1.0},
        "count_accuracy": 0.75,
        "eval_sequences_per_s": 40.0 + seed,
        "peak_memory_mb": 12.0,
    }


def _write(root: Path, model: str, seed: int, splits: dict[str, float]) -> Path:
    d = root / model / f"seed{seed}"
    d.mkdir(parents=True)
    metrics = {
        "model": model,
        "paper_name": PAPER_NAMES[model],
        "seed": seed,
        "suite": "fixture",
        "config_hash": "h",
        "checkpoint_iteration": 100,
        "parameters": {"total": 1000 + len(model), "relation": 10 * len(model)},
        "device": "cpu",
        "torch_version": "2.13.0",
        "train": {
            "iterations": 100,
            "seconds": 10.0,
            "sequences_per_s": 20.0 + seed,
            "peak_memory_mb": 50.0,
            "best_validation_bound": -300.0,
        },
        "splits": {name: _split(base, seed) for name, base in splits.items()},
    }
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """sqair: 3 seeds; sqair+in: seed 2 missing; sqair+rmc: seed 2 lacks balls678/test; sqair+gru: no balls678/test."""
    both = {"balls4/test": 400.0, "balls678/test": 300.0}
    for seed in range(3):
        _write(tmp_path, "sqair", seed, both)
        if seed < 2:
            _write(tmp_path, "sqair+in", seed, {"balls4/test": 430.0, "balls678/test": 320.0})
        _write(
            tmp_path, "sqair+rmc", seed, {"balls4/test": 450.0} if seed == 2 else {"balls4/test": 450.0, "balls678/test": 330.0}
        )
        d = _write(tmp_path, "sqair+gru", seed, {"balls4/test": 410.0})
    (d / "train_log.csv").write_text("iteration,loss,validation_bound\n10,5.0,\n20,4.0,-300.0\n")
    frames = np.zeros((4, 50, 50), dtype=np.float32)
    boxes = np.tile(np.array([5.0, 5.0, 15.0, 15.0], dtype=np.float32), (4, 2, 1))  # [T,K,4]
    np.savez(d / "rollout.npz", frames=frames, boxes=boxes, pres=np.ones((4, 2), dtype=np.float32), n_observed=3)
    return tmp_path


def test_golden_table(results: Path) -> None:
    write_report(results, expected_seeds=3)
    table = (results / "report" / "table.md").read_text()
    if os.environ.get("RSQAIR_UPDATE_GOLDEN"):
        GOLDEN.write_text(table)
    assert table == GOLDEN.read_text()


def test_missing_seeds_and_splits_are_explicit(results: Path) -> None:
    table = main_table(collect_metrics(results), expected_seeds=3)
    assert table.loc["R-SQAIR(IN)", "seeds"] == "2/3"
    assert table.loc["R-SQAIR(IN)", "data LL balls4/test"].endswith("(2/3 seeds)")
    assert table.loc["R-SQAIR(RMC)", "data LL balls4/test"] == "451.50 ± 0.97"  # all 3 seeds x 3 samples
    assert table.loc["R-SQAIR(RMC)", "data LL balls678/test"].endswith("(2/3 seeds)")
    assert table.loc["SQAIR+GRU", "relational LL balls678/test"] == "—"
    assert "seeds)" not in table.loc["SQAIR", "data LL balls678/test"]
    assert list(table.index) == ["SQAIR", "R-SQAIR(IN)", "R-SQAIR(RMC)", "SQAIR+GRU"]
    # expecting 5 seeds flags even the complete-looking rows
    assert main_table(collect_metrics(results), expected_seeds=5).loc["SQAIR", "seeds"] == "3/5"


def test_mean_std_over_seeds_times_samples(results: Path) -> None:
    table = main_table(collect_metrics(results))
    values = [400.0 + seed + 0.5 * s for seed in range(3) for s in range(3)]
    assert table.loc["SQAIR", "data LL balls4/test"] == f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def test_files_figures_and_compare_paper(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(results), "--compare-paper", "--expected-seeds", "3"]) == 0
    report = results / "report"
    for name in [
        "table.md",
        "table.csv",
        "table.tex",
        "per_seed.md",
        "per_seed.csv",
        "spread.csv",
        "throughput.md",
        "throughput.csv",
    ]:
        assert (report / name).stat().st_size > 0, name
    for stem in ["fig4_ll", "training_curves", "fig3_rollouts"]:
        for ext in ("png", "pdf"):
            assert (report / "figures" / f"{stem}.{ext}").stat().st_size > 1000, stem
    table = (report / "table.md").read_text()
    assert "paper data LL balls4/test" in table and "399.5" in table and "457.32" in table and "-96.7" in table
    tex = (report / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and "±" not in tex
    through = (report / "throughput.md").read_text()
    assert "21.00 ± 1.00" in through and "1,009" in through  # train seq/s over seeds; params of sqair+in
    assert "tables in" in capsys.readouterr().out
    assert not list(report.rglob(".*.tmp"))


def test_no_metrics_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no metrics.json files found"):
        write_report(tmp_path)


def test_report_draws_a_single_rollout_file(tmp_path, capsys):
    import numpy as np

    from rsqair_bench.cli import main

    t, k = 4, 3
    path = tmp_path / "roll.npz"
    np.savez(
        path,
        truth=np.zeros((t, 50, 50)),
        frames=np.zeros((t, 50, 50)),
        boxes=np.ones((t, k, 4)),
        pres=np.ones((t, k)),
        ids=np.tile(np.arange(k), (t, 1)),
        n_observed=np.array(t - 1),
    )
    assert main(["report", "--rollout", str(path), "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig.png").stat().st_size > 0 and (tmp_path / "fig.pdf").exists()
    assert main(["report", "--rollout", str(tmp_path / "missing.npz")]) == 1
    assert "missing.npz: no such rollout file" in capsys.readouterr().err


def test_latex_escapes_every_name_once() -> None:
    """Model names come from metrics.json: `_ & % \\` and friends must print as text, escaped once
    (tabulate's own latex formats would escape a second time), and ± must become math."""
    import pandas as pd

    from rsqair_bench.report.tables import to_latex

    table = pd.DataFrame({"LL_data & 50%": ["1.00 ± 2.00"]}, index=pd.Index(["sqair+my_rel\\x"], name="model"))
    tex = to_latex(table, "R_SQAIR")
    assert r"sqair+my\_rel\textbackslash{}x" in tex and r"LL\_data \& 50\%" in tex and r"1.00 $\pm$ 2.00" in tex
    assert r"\textbackslash{}textbackslash" not in tex and r"\\_" not in tex and "±" not in tex
    assert tex.startswith("\\begin{table}[t]\n") and r"\begin{tabular}{lr}" in tex and r"\caption{R\_SQAIR}" in tex
