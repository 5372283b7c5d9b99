"""Helpers the reliability tests share: run the CLI in-process, check its one-line errors, and a quick suite
moved under a test's tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rsqair_bench import cli
from rsqair_bench.config import load_suite_mapping

ROOT = Path(__file__).resolve().parents[1]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run the CLI in-process; returns (exit code, stderr). A traceback would propagate and fail the test."""
    code = cli.main(argv)
    return code, capsys.readouterr().err.strip()


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
