"""What the report adds for a researcher: significance.md, failed jobs in table.md, rollout GIFs, `report A B --compare`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from rsqair_bench.cli import main
from rsqair_bench.report.animation import HOLD_LAST, MAX_BYTES
from rsqair_bench.report.write import write_report
from tests.test_report import _write
from tests.test_suite_config import _error, _load

BOTH = {"balls4/test": 400.0, "balls678/test": 300.0}


def _fail(root: Path, model: str, seed: int, line: str) -> None:
    d = root / model / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "error.txt").write_text(f"Traceback (most recent call last):\n  File \"x.py\", line 1\n{line}\n")


def test_failed_jobs_keep_their_rows_and_reasons(tmp_path: Path) -> None:
    for seed in range(3):
        _write(tmp_path, "sqair", seed, BOTH)
    for seed in range(2):
        _write(tmp_path, "sqair+in", seed, BOTH)
    _fail(tmp_path, "sqair+in", 2, "RuntimeError: out of memory")
    for seed in range(3):
        _fail(tmp_path, "sqair+rmc", seed, f"TrainingDiverged: loss became non-finite (seed {seed})")
    write_report(tmp_path)  # expected seeds from metrics *and* failures: 3
    table = (tmp_path / "report" / "table.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "| 3/3 " in rows["SQAIR"] and "| 2/3 " in rows["R-SQAIR(IN)"]
    assert "| 0/3 " in rows["R-SQAIR(RMC)"] and rows["R-SQAIR(RMC)"].count("—") == 4
    assert "**Failed jobs (4)**" in table
    assert "- sqair+in/seed2: RuntimeError: out of memory (`sqair+in/seed2/error.txt`)" in table
    assert "- sqair+rmc/seed1: TrainingDiverged: loss became non-finite (seed 1)" in table
    assert "R-SQAIR(RMC)" in (tmp_path / "report" / "table.csv").read_text()


def test_no_failures_no_note(tmp_path: Path) -> None:
    _write(tmp_path, "sqair", 0, BOTH)
    write_report(tmp_path)
    assert "Failed jobs" not in (tmp_path / "report" / "table.md").read_text()


def test_significance_in_every_report_with_a_settable_baseline(tmp_path: Path) -> None:
    for seed in range(3):
        _write(tmp_path, "sqair", seed, BOTH)
        _write(tmp_path, "sqair+in", seed, {"balls4/test": 430.0, "balls678/test": 320.0})
    _write(tmp_path, "sqair+rmc", 0, BOTH)
    write_report(tmp_path)
    text = (tmp_path / "report" / "significance.md").read_text()
    assert text.startswith("# Significance against SQAIR") and "Holm" in text
    in_row = next(line for line in text.splitlines() if line.startswith("| R-SQAIR(IN)  | balls4/test   | data LL"))
    assert "+30.00" in in_row and "*" in in_row  # seed means 400.5..402.5 vs 430.5..432.5: Welch p < 0.001
    assert "n/a (1 seeds)" in text  # sqair+rmc has one seed
    csv = (tmp_path / "report" / "significance.csv").read_text()
    assert csv.splitlines()[0] == "model,split,metric,seeds,difference,95% CI,p (Welch),p (Holm),significant,MDD (80% power)"

    assert main(["report", str(tmp_path), "--baseline", "sqair+in"]) == 0
    text = (tmp_path / "report" / "significance.md").read_text()
    assert text.startswith("# Significance against R-SQAIR(IN)") and "| SQAIR " in text and "-30.00" in text


def test_suite_baseline_must_be_one_of_its_models(tmp_path: Path) -> None:
    assert _load(tmp_path, baseline="sqair").baseline == "sqair"
    assert "baseline: expected one of the suite's models (sqair), found 'sqair+in'" in _error(tmp_path, baseline="sqair+in")


def test_one_gif_per_model_and_split(tmp_path: Path) -> None:
    t, k = 6, 3
    for model in ("sqair", "sqair+in"):
        d = _write(tmp_path, model, 0, BOTH)
        for split in ("balls4_test", "balls678_test"):
            rng = np.random.default_rng(0)
            np.savez(
                d / f"rollout_{split}.npz",
                truth=rng.uniform(size=(t, 50, 50)).astype(np.float32),  # noise: the worst case for GIF size
                frames=rng.uniform(size=(t, 50, 50)).astype(np.float32),
                boxes=np.tile(np.array([5.0, 5.0, 20.0, 20.0], np.float32), (t, k, 1)),
                pres=np.ones((t, k), np.float32),
                ids=np.tile(np.arange(k), (t, 1)),
                n_observed=np.array(t - 1),
            )
    write_report(tmp_path)
    gifs = sorted(p.name for p in (tmp_path / "report" / "figures").glob("*.gif"))
    assert gifs == sorted(f"rollout_{m}_{s}.gif" for m in ("sqair", "sqair+in") for s in ("balls4_test", "balls678_test"))
    path = tmp_path / "report" / "figures" / "rollout_sqair+in_balls678_test.gif"
    assert 1000 < path.stat().st_size < MAX_BYTES
    with Image.open(path) as gif:
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
        assert gif.format == "GIF" and gif.n_frames == t  # Pillow merges the held copies of the last frame
    assert durations[-1] == (1 + HOLD_LAST) * durations[0]  # ... into one longer frame: the sampled frame stays up
    assert not list((tmp_path / "report").rglob(".*.tmp*"))


def _two_dirs(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "cpu", tmp_path / "gpu"
    for seed in range(3):
        _write(a, "sqair", seed, BOTH)
        _write(a, "sqair+in", seed, {"balls4/test": 430.0})
        _write(b, "sqair", seed, {"balls4/test": 410.0, "balls678/test": 300.0})
    _write(b, "sqair+rmc", 0, {"balls4/test": 450.0})
    for metrics in b.rglob("metrics.json"):  # B ran on another device, twice as fast in training
        text = metrics.read_text().replace('"device": "cpu"', '"device": "cuda (H100)"')
        metrics.write_text(text.replace('"sequences_per_s": 2', '"sequences_per_s": 4'))
    return a, b


def test_compare_two_results_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _two_dirs(tmp_path)
    out = tmp_path / "cmp"
    assert main(["report", str(a), str(b), "--compare", "--out", str(out)]) == 0
    text = (out / "compare.md").read_text()
    assert text == capsys.readouterr().out.split("comparison in")[0].rstrip("\n") + "\n"
    assert f"A = `{a}` (device: cpu)" in text and f"B = `{b}` (device: cuda (H100))" in text
    assert "only in A (not compared): sqair+in" in text and "only in B (not compared): sqair+rmc" in text
    row = next(line for line in text.splitlines() if line.startswith("| SQAIR   | balls4/test   | data LL"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    # seed means (samples base + seed + 0, 0.5, 1): A 400.5, 401.5, 402.5 and B 410.5, 411.5, 412.5: +10, p < 0.001
    assert cells[3:6] == ["401.50 ± 1.00 (3)", "411.50 ± 1.00 (3)", "3 vs 3"]
    # MDD: sd 1 on both sides, n 3 -> df 4: (t_.975 + t_.8) * sqrt(2/3) = (2.776 + 0.941) * 0.816 = 3.04
    assert cells[6] == "+10.00" and cells[-2:] == ["*", "3.04"]
    balls678 = next(line for line in text.splitlines() if line.startswith("| SQAIR   | balls678/test | data LL"))
    assert "+0.00" in balls678 and "| 1.000 " in balls678
    speed = [c.strip() for c in text.split("## Throughput")[1].splitlines()[4].split("|")[1:-1]]
    assert speed == ["SQAIR", "21.0", "41.0", "1.95x", "41.0", "41.0", "1.00x", "fp32", "fp32", "cpu", "cuda (H100)"]  # 41 / 21
    assert (out / "compare.csv").read_text().count("\n") == 1 + 2 * 3  # header + 2 splits x 3 metrics of sqair
    assert (out / "compare_throughput.csv").is_file()


def test_compare_defaults_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _two_dirs(tmp_path)
    assert main(["report", str(a), str(b), "--compare"]) == 0
    assert (a / "report" / "compare" / "compare.md").is_file()
    assert main(["report", str(a), "--compare"]) == 1
    assert "give two results directories" in capsys.readouterr().err
    assert main(["report", str(a), str(b)]) == 1
    assert "needs --compare" in capsys.readouterr().err
