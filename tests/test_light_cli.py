"""The commands that only read a suite start without torch (issue: a light CLI).

Why: importing torch takes about a second here and more on a cold disk, for `--help` as much as
for a training run. `cli.main` imports only the chosen subcommand's module, `validate` reads the
relations of `baselines/` as text (`registry.statically_valid`) and `device.is_device_name` needs
no torch, so these commands answer before torch would have loaded. Each case runs in a fresh
interpreter, since the test session itself imported torch long ago.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rsqair_bench import registry

ROOT = Path(__file__).resolve().parents[1]

# Calls the CLI's main in-process, then reports its exit code and which heavy modules it imported.
PROBE = """
import json, sys
from rsqair_bench.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
print(json.dumps({"code": code, "imported": sorted(m for m in ("torch", "rsqair_bench.baselines.interaction", "pandas",
                  "rsqair_bench.training.loop", "rsqair_bench.evaluation.evaluate", "rsqair_bench.report.write",
                  "rsqair_bench.runner.bench")
                  if m in sys.modules)}), file=sys.stderr)
"""


def _probe(args: list[str], cwd: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    return json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [
    ["--help"],
    ["run", "--help"],
    ["validate", "SUITE"],
    # the dry run measures throughput (torch) only when asked (`--throughput measure`)
    ["run", "SUITE", "--dry-run", "--throughput", "2.0"],
    ["run", "SUITE", "--dry-run"],
])
def test_help_validate_and_dry_run_do_not_import_torch(tmp_path, args):
    suite = tmp_path / "quick.yaml"  # run from tmp_path: results/ and data/ land there
    shutil.copy(ROOT / "suites" / "quick.yaml", suite)
    (tmp_path / "suites").mkdir()
    shutil.copy(ROOT / "suites" / "learn.yaml", tmp_path / "suites" / "learn.yaml")  # its `base:`, from the cwd
    result = _probe([str(suite) if a == "SUITE" else a for a in args], tmp_path)
    assert result["code"] == 0, result
    assert result["imported"] == [], f"{' '.join(args)} imported {result['imported']}"
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()  # and wrote nothing


def test_the_probe_sees_torch_when_a_command_needs_it(tmp_path):
    """Control: `list` builds every model, so the same probe must report torch imported."""
    result = _probe(["-v", "WARNING", "list"], tmp_path)
    assert result["code"] == 0 and "torch" in result["imported"], result


def test_static_reading_of_baselines_matches_the_imported_registry():
    """What `validate` learns from the text of `baselines/` equals what importing them registers:
    the same relation names, each with the same constructor options."""
    static = registry._static_baselines()
    assert static is not None
    imported = {name: registry._constructor_options(registry.get_relation(name)) for name in registry.relation_names()}
    assert static == imported


def test_static_check_never_passes_what_the_import_rejects():
    """Unknown relations, unknown options and plugins all take the importing path (False here)."""
    assert registry._static_baselines() is not None
    registry._discovered, was = False, registry._discovered
    try:
        assert registry.statically_valid(["sqair", "sqair+in"], {"in": {"embed_dim": 3}}, [])
        assert not registry.statically_valid(["sqair+nosuch"], {}, [])
        assert not registry.statically_valid(["sqair+in"], {"bogus": 1}, [])
        assert not registry.statically_valid(["sqair+in"], {"rmc": {"bogus": 1}, "embed_dim": 2, "heads": 1}, [])
        assert not registry.statically_valid(["sqair"], {}, ["plugin.py"])
    finally:
        registry._discovered = was
