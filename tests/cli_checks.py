"""Helpers the reliability tests share: run the CLI in-process, check its one-line errors, and a quick suite
moved under a test's tmp_path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rsqair_bench import cli
from rsqair_bench.config_files import load_suite_mapping

ROOT = Path(__file__).resolve().parents[1]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run the CLI in-process; returns (exit code, stderr). A traceback would propagate and fail the test."""
    code = cli.main(argv)
    return code, capsys.readouterr().err.strip()


def dry_run_without_torch(suite: str) -> str:
    """`run SUITE --dry-run` in a fresh interpreter (so that no earlier test has imported torch); its stdout
    ends with 'no torch' when the dry run never imported it. Fails the test on a non-zero exit."""
    code = ("import sys; from rsqair_bench.cli import main; "
            f"rc = main(['run', {suite!r}, '--dry-run']); "
            "print('torch loaded' if 'torch' in sys.modules else 'no torch'); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_one_line(code: int, err: str, *needles: str) -> None:
    """A refusal: non-zero exit, one line on stderr, naming each of `needles`."""
    assert code != 0, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def quick_suite_doc(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """suites/quick.yaml as one mapping (its `base:` chain resolved), with its data and results under
    tmp_path and `changes` (dotted keys, e.g. `train.batch_size`) applied."""
    doc = load_suite_mapping(ROOT / "suites" / "quick.yaml", root=ROOT)
    doc["results"] = str(tmp_path / "results")
    for name, ds in doc["data"].items():
        ds["path"] = str(tmp_path / f"{name}.h5")
    for dotted, value in changes.items():
        node = doc
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return doc
