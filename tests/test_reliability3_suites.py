"""Reliability round 3 (issue 32), part 1: suite inheritance (`base:`) and YAML parsing.

One test per case of the round's section 1, named after its id (`test_B16_...`). Each asserts the
refusal, the message or the value that the fix introduced, so each fails on the tree before it.
Suites here live in tmp_path and the tests run from there: `base:`, like every path in a suite, is
relative to the working directory (docs/reliability.md, "Round 3, part 1").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rsqair_bench.config import SuiteConfig, load_config
from rsqair_bench.config_files import MAX_BASE_CHAIN, MAX_YAML_DEPTH
from tests.cli_checks import assert_one_line, quick_suite_doc, run_cli


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the working directory, holding `base.yaml`: the quick suite, complete and valid."""
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "base.yaml", quick_suite_doc(tmp_path))
    return tmp_path


def _write(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def _child(here: Path, text: str, name: str = "child.yaml") -> Path:
    """A suite file with `base: base.yaml` and `name: child`, then `text` (YAML lines)."""
    return _write(here / name, f"base: base.yaml\nname: child\n{text}")


def _validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    return run_cli(["validate", str(path)], capsys)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_B05_base_naming_a_directory_says_it_is_a_directory(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (here / "dirbase.yaml").mkdir()
    child = _write(here / "child.yaml", "base: dirbase.yaml\nname: child\n")
    code, err = _validate(child, capsys)
    assert_one_line(code, err, "child.yaml: base: dirbase.yaml is a directory, expected a suite YAML file")
    fifo = here / "fifo.yaml"
    import os

    os.mkfifo(fifo)
    _write(here / "child.yaml", "base: fifo.yaml\nname: child\n")  # a FIFO: refused at once, not read
    code, err = _validate(child, capsys)
    assert_one_line(code, err, "fifo.yaml: not a regular file")


def test_B15_an_error_inside_a_base_names_the_base_file(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = quick_suite_doc(here)
    bad["train"]["lerning_rate"] = 0.1
    _write(here / "badbase.yaml", bad)
    child = _write(here / "child.yaml", "base: badbase.yaml\nname: child\nseeds: [0]\n")
    code, err = _validate(child, capsys)
    assert_one_line(code, err, "badbase.yaml: train: unknown key 'lerning_rate'")
    assert not err.startswith(f"error: {child}"), err
    bad["train"].pop("lerning_rate")
    bad["seeds"] = ["zero"]  # a type error the child replaces is not an error (values replace: B23)
    _write(here / "badbase.yaml", bad)
    assert _validate(child, capsys)[0] == 0
    bad["train"]["batch_size"] = "16"  # one the child keeps names the base, with the key path
    _write(here / "badbase.yaml", bad)
    code, err = _validate(child, capsys)
    assert_one_line(code, err, "badbase.yaml: train.batch_size: expected int, found str '16'")


@pytest.mark.parametrize("section", ["train", "model_config"])
def test_B16_empty_child_section_is_refused_not_reset_to_the_defaults(here: Path, capsys: pytest.CaptureFixture[str],
                                                                      section: str) -> None:
    child = _child(here, f"{section}:\n  # max_iterations: 5\n")  # the only line commented out: null
    code, err = _validate(child, capsys)
    assert_one_line(code, err, f"child.yaml: {section}: empty, but", "base.yaml sets it", "delete the line")
    _child(here, f"{section}: {{}}\n")  # an empty mapping changes nothing: the base's section is kept
    merged = load_config(SuiteConfig, child)
    base = load_config(SuiteConfig, here / "base.yaml")
    assert getattr(merged, section) == getattr(base, section)
    assert merged.train.max_iterations == base.train.max_iterations != 200_000  # not the code's default


def test_B17_a_suite_with_no_eval_split_is_refused(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _validate(_child(here, "eval:\n"), capsys)
    assert_one_line(code, err, "child.yaml: eval: empty, but")
    alone = quick_suite_doc(here)
    del alone["eval"]  # no base: an omitted eval is no split at all
    code, err = _validate(_write(here / "alone.yaml", alone), capsys)
    assert_one_line(code, err, "alone.yaml: eval.splits: expected at least one evaluation split, found none")


def test_B18_null_cannot_remove_a_base_split_and_says_so(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    split = next(iter(quick_suite_doc(here)["eval"]["splits"]))
    code, err = _validate(_child(here, f"eval:\n  splits:\n    {split}: null\n"), capsys)
    assert_one_line(code, err, f"child.yaml: eval.splits.{split}: null cannot remove what", "base.yaml sets",
                    "cannot remove them")
    code, err = _validate(_child(here, "data:\n  balls678: null\n"), capsys)
    assert_one_line(code, err, "child.yaml: data.balls678: null cannot remove")


def test_B20_a_child_without_name_is_refused_and_sharing_is_explicit(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    child = _write(here / "noname.yaml", "base: base.yaml\neval: {samples: 2}\n")
    code, err = _validate(child, capsys)
    assert_one_line(code, err, "noname.yaml: name: missing", "names its own results directory")
    base_name = quick_suite_doc(here)["name"]
    _write(child, f"base: base.yaml\nname: {base_name}\neval: {{samples: 2}}\n")  # sharing, said in the file
    assert _validate(child, capsys)[0] == 0
    assert load_config(SuiteConfig, child).name == base_name


@pytest.mark.parametrize("length", [MAX_BASE_CHAIN + 1, 1100])
def test_B25_a_long_base_chain_is_one_line(here: Path, capsys: pytest.CaptureFixture[str], length: int) -> None:
    for i in range(1, length):
        _write(here / f"c{i}.yaml", f"base: {'base.yaml' if i == 1 else f'c{i - 1}.yaml'}\nname: c{i}\n")
    code, err = _validate(here / f"c{length - 1}.yaml", capsys)
    assert_one_line(code, err, f"a chain of more than {MAX_BASE_CHAIN} suites")
    assert _validate(here / f"c{MAX_BASE_CHAIN - 1}.yaml", capsys)[0] == 0  # 32 files: allowed


def test_B26_base_resolves_against_the_working_directory_like_every_other_path(
        here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (here / "s" / "sub").mkdir(parents=True)
    (here / "s" / "sub" / "p.py").write_text("")  # a plugin beside the base, named from the working directory
    _write(here / "s" / "sub" / "pbase.yaml", "base: base.yaml\nname: pbase\nplugins: [s/sub/p.py]\n")
    child = _write(here / "s" / "pchild.yaml", "base: s/sub/pbase.yaml\nname: pchild\n")
    assert _validate(child, capsys)[0] == 0  # base and plugin found the same way
    _write(child, "base: sub/pbase.yaml\nname: pchild\n")  # written relative to the file: refused, with the fix
    code, err = _validate(child, capsys)
    assert_one_line(code, err, "base: no such suite file sub/pbase.yaml", "relative to the directory you run from",
                    "write base: s/sub/pbase.yaml")
    _write(child, "base: s/sub/pbase.yaml\nname: pchild\n")
    monkeypatch.chdir(here / "s")  # from elsewhere the whole suite changes meaning: refused in one line
    code, err = _validate(Path("pchild.yaml"), capsys)
    assert_one_line(code, err, "pchild.yaml: base: no such suite file s/sub/pbase.yaml")


@pytest.mark.parametrize("text", ["data: " + "[" * 2000 + "]" * 2000 + "\n",
                                  "data: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
                                  "data: " + "[" * (MAX_YAML_DEPTH + 2) + "]" * (MAX_YAML_DEPTH + 2) + "\n"])
def test_X01_deeply_nested_yaml_is_one_line(here: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    path = _write(here / "deepnest.yaml", text)
    before = _snapshot(here)
    code, err = _validate(path, capsys)
    assert_one_line(code, err, "deepnest.yaml: nested", f"{MAX_YAML_DEPTH} levels")
    assert _snapshot(here) == before
