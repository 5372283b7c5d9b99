"""`report A B --compare`'s verdict, judged on the committed quick report (results/quick/report/per_seed.csv).

Why: a rerun of the quick suite on another CPU follows other float trajectories; issue 30's rerun on an
AVX-512 + AMX machine moved seed means by up to 46 nats of data LL (R-SQAIR(RMC) seed 0: +32.27 here,
-13.69 there; SQAIR seed 0: -51.45 / -40.59) while every job still learned. Such a rerun must read
"same within spread"; a rerun in which a model did not learn (its sampled frame at the empty frame's
score, its IWAE bound far lower) must not.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from rsqair_bench.cli import main
from rsqair_bench.report.spread import SpreadRow, judge, pooled_std, verdict_lines

QUICK = Path(__file__).resolve().parents[1] / "results" / "quick" / "report"
MODELS = {"SQAIR": "sqair", "R-SQAIR(IN)": "sqair+in", "R-SQAIR(RMC)": "sqair+rmc"}
METRICS = {"data LL": "data_ll", "relational LL": "relational_ll", "IWAE bound": "iwae_bound"}
SPLITS = ("balls4/test", "balls678/test")


def quick_seeds() -> list[dict]:
    """The committed quick report's per-seed rows: model, seed and {(metric key, split): value}."""
    with (QUICK / "per_seed.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return [{"model": MODELS[r["model"]], "paper_name": r["model"], "seed": int(r["seed"]),
             "values": {(key, split): float(r[f"{name} {split}"]) for name, key in METRICS.items() for split in SPLITS}}
            for r in rows]


def write_results(root: Path, seeds: list[dict]) -> Path:
    """One metrics.json per seed row, with the quick suite's evaluation settings (what compare reads); each of
    the 5 samples holds the seed's mean (compare averages samples within a seed first)."""
    for s in seeds:
        splits = {split: {"data": f"{split.split('/')[0]}.h5", "split": "test", "frames": 10, "samples": 5, "sequences": 100,
                          **{key: {"mean": s["values"][(key, split)], "per_sample": [s["values"][(key, split)]] * 5}
                             for key in METRICS.values()}}
                  for split in SPLITS}
        job = root / s["model"] / f"seed{s['seed']}"
        job.mkdir(parents=True)
        (job / "metrics.json").write_text(json.dumps({"model": s["model"], "paper_name": s["paper_name"], "seed": s["seed"],
                                                      "suite": "quick", "device": "cpu", "splits": splits}))
    return root


def shifted(seeds: list[dict], shift) -> list[dict]:  # noqa: ANN001 - shift(seed row, key, split, value) -> value
    return [{**s, "values": {(k, sp): shift(s, k, sp, v) for (k, sp), v in s["values"].items()}} for s in seeds]


def compare_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str], b_seeds: list[dict]) -> tuple[str, str]:
    a = write_results(tmp_path / "A", quick_seeds())
    b = write_results(tmp_path / "B", b_seeds)
    assert main(["report", str(a), str(b), "--compare", "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert out.rstrip("\n").splitlines()[-1] in text  # the last line printed is compare.md's verdict line
    return out.rstrip("\n").splitlines()[-1], text


def test_a_rerun_elsewhere_of_the_quick_suite_is_the_same_within_spread(tmp_path: Path, capsys) -> None:
    """Every seed mean moved by up to 46 nats of data LL, 6 of relational LL and 200 of IWAE bound (signs
    alternating by seed and model, so the model means move too), and the two seeds issue 30 reported."""
    issue = {("sqair", 0): -40.59, ("sqair+rmc", 0): -13.69}
    sizes = {"data_ll": 46.0, "relational_ll": 6.0, "iwae_bound": 200.0}
    order = list(MODELS.values())

    def elsewhere(s: dict, key: str, split: str, value: float) -> float:
        if key == "data_ll" and split == "balls4/test" and (s["model"], s["seed"]) in issue:
            return issue[(s["model"], s["seed"])]
        return value + sizes[key] * (-1) ** (s["seed"] + order.index(s["model"]))

    line, text = compare_verdict(tmp_path, capsys, shifted(quick_seeds(), elsewhere))
    assert line == "Verdict: same within spread (all 18 rows; family-wise alpha 0.05)"
    assert "- R-SQAIR(RMC) balls4/test: same within spread; largest: " in text


def test_a_model_that_did_not_learn_differs_beyond_the_spread(tmp_path: Path, capsys) -> None:
    """R-SQAIR(IN) at the quick data's empty-frame score (-170.08 / -825.86, results/quick/report/table.md)
    and a bound 2,000 nats lower: its bound rows are outside, the other models' rows are not.

    Its data LL alone (B - A = -177 on balls4) stays inside the allowance (+-254): with 2 seeds per model
    the data LL's seed spread (pooled s = 53 nats) is too wide to tell a model at the empty frame from seed
    noise, which is what the verdict line's allowance says; the IWAE bound tells them apart."""
    empty = {"balls4/test": -170.08, "balls678/test": -825.86}

    def stuck(s: dict, key: str, split: str, value: float) -> float:
        if s["model"] != "sqair+in":
            return value
        return empty[split] if key == "data_ll" else value - 2000.0 if key == "iwae_bound" else value

    line, text = compare_verdict(tmp_path, capsys, shifted(quick_seeds(), stuck))
    assert line == "Verdict: differs beyond the seed spread (2 of 18 rows outside; family-wise alpha 0.05)"
    assert "- R-SQAIR(IN) balls4/test: differs beyond the seed spread; iwae bound B − A -2000.00 (allowed ±785.40)" in text
    assert "- R-SQAIR(IN) balls678/test: differs beyond the seed spread; iwae bound B − A -2000.00" in text
    assert "- SQAIR balls4/test: same within spread" in text


def test_pooled_spread_and_allowance_by_hand() -> None:
    """Two groups (3, 5) and (10, 14): squares 2 + 8 over 2 degrees of freedom, s = sqrt(5); one row
    judged, so t = t_{0.975, 2} = 4.303 and the allowance 4.303 x sqrt(5) x sqrt(1/2 + 1/2) = 9.62."""
    s, dof = pooled_std([(3.0, 5.0), (10.0, 14.0)])
    assert dof == 2 and s == pytest.approx(np.sqrt(5.0))
    row = SpreadRow("M", "x/test", "data LL", (3.0, 5.0), (10.0, 14.0))
    (judged,) = judge([row])
    assert judged.allowed == pytest.approx(4.303 * np.sqrt(5.0), abs=1e-3) and judged.within  # |+8| <= 9.62
    assert verdict_lines([SpreadRow("M", "x/test", "data LL", (3.0,), (4.0,))])[-1] == \
        "Verdict: cannot judge (one seed per model: no spread)"
    assert verdict_lines([])[-1] == "Verdict: nothing to compare (no model and split in both, evaluated alike)"
