"""Documentation that stands alone and cannot drift from the files it quotes.

Why: docstrings and docs cited design and reference notes that the repository does not ship (files
outside the repository), and README quoted a significance table whose numbers
no longer matched the committed report. Here every `.md` file a doc, docstring or comment names
must exist in the repository (or be a report file the code writes), and every README excerpt
marked `<!-- excerpt: PATH -->` ... `<!-- /excerpt -->` must still be the text of PATH.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED_DIRS = ("rsqair_bench", "baselines", "tests", "tools", "docs", "suites")
SCANNED_FILES = ("README.md", "results/README.md")
SUFFIXES = (".md", ".py", ".yaml", ".yml")
# Report files the code writes (results/<suite>/report/..., compare/, tests' temporary directories):
# outputs, named by the code that writes them and by the docs that describe them, not files to ship.
OUTPUT_NAMES = {"table.md", "dynamics.md", "significance.md", "compare.md", "per_seed.md", "throughput.md",
                "relation_use.md", "neighbours.md"}
MD_NAME = re.compile(r"(?<![\w.{/<>*-])((?:[\w.<>*-]+/)*[\w<>*-][\w.<>*-]*\.md)\b")
URL = re.compile(r"[a-z]+://\S+")
EXCERPT = re.compile(r"<!-- excerpt: (\S+) -->\n(.*?)<!-- /excerpt -->", re.S)
NUMBER = re.compile(r"[+-]?\d+\.\d+")


def repository_files() -> list[Path]:
    """Tracked files and new ones git does not ignore (a doc added in this change counts)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return sorted({ROOT / line for line in out.splitlines() if (ROOT / line).is_file()})


def scanned_files(files: list[Path]) -> list[Path]:
    """The files whose text is checked; this file is left out, as it names missing files on purpose."""
    chosen = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if path == Path(__file__).resolve():
            continue
        if rel in SCANNED_FILES or (rel.split("/")[0] in SCANNED_DIRS and path.suffix in SUFFIXES):
            chosen.append(path)
    return chosen


def md_names(text: str) -> list[str]:
    """The `.md` file names a text mentions (web addresses left out: they are not repository files)."""
    return MD_NAME.findall(URL.sub(" ", text))


def resolves(name: str, source: Path, files: list[Path]) -> bool:
    """Whether `name`, mentioned in `source`, is a file of the repository or a report output.

    A path is tried from the repository root, from docs/ and from the mentioning file's folder; a bare
    name may also be any repository file of that name (e.g. tests' `golden/report_table.md`)."""
    if Path(name).name in OUTPUT_NAMES:
        return True
    shipped = set(files)
    for base in (ROOT, ROOT / "docs", source.parent):
        candidate = (base / name).resolve()
        if candidate in shipped:
            return True
    return "/" not in name and any(f.name == name for f in files)


def missing_md_references(files: list[Path]) -> list[str]:
    missing = []
    for path in scanned_files(files):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            missing += [f"{path.relative_to(ROOT)}:{lineno}: {name}" for name in md_names(line)
                        if not resolves(name, path, files)]
    return missing


def test_every_md_file_named_in_docs_docstrings_and_comments_is_in_the_repository() -> None:
    assert missing_md_references(repository_files()) == []


def test_the_reference_check_catches_a_file_the_repository_does_not_ship(tmp_path: Path) -> None:
    files = repository_files()
    source = ROOT / "rsqair_bench" / "x.py"
    # the shapes such a citation takes: a bare name, a nested path, a path out of the repository
    for name in ("NOTES.md", "PLAN.md", "outside/notes/PLAN.md", "../outside/NOTES.md", "docs/nosuch.md"):
        assert md_names(f"# see {name}, section 3") == [name]
        assert not resolves(name, source, files), name
    for name in ("docs/metrics.md", "metrics.md", "README.md", "results/README.md", "report/table.md", "<out>/compare.md"):
        assert resolves(name, source, files), name
    assert md_names("https://github.com/akosiorek/sqair/blob/master/README.md and table.{md,csv}") == []


def committed_text(name: str) -> str | None:
    """The text of `name` as committed (git's HEAD), else as it is on disk; None when it is neither.

    Why the committed text: a README quotes the committed report, and the README's own first command
    (`run suites/quick.yaml`) rewrites that report in the working tree; on another CPU its numbers may
    differ in the last digits, which must not fail the tests that the README's second command runs."""
    shown = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=ROOT, capture_output=True, text=True)
    if shown.returncode == 0:
        return shown.stdout
    path = ROOT / name
    return path.read_text(encoding="utf-8") if path.is_file() else None


def excerpt_problems(text: str, where: str) -> list[str]:
    """Each marked excerpt in `text` whose lines are not a contiguous run of its (committed) file's lines."""
    problems = []
    for name, body in EXCERPT.findall(text):
        source = committed_text(name)
        if source is None:
            problems.append(f"{where}: excerpt of {name}: no such file")
            continue
        quoted = [line for line in body.splitlines() if line.strip()]
        lines = source.splitlines()
        if not quoted or not any(lines[i:i + len(quoted)] == quoted for i in range(len(lines))):
            first = lines.index(quoted[0]) if quoted and quoted[0] in lines else 0
            now = "\n".join(lines[first:first + len(quoted)])
            problems.append(f"{where}: excerpt of {name} is stale; the file now reads there:\n{now}")
    return problems


def unmarked_numeric_rows(text: str) -> list[str]:
    """Table rows with decimals outside the marked excerpts: quoted numbers must be checked ones."""
    outside = EXCERPT.sub("", text)
    return [line for line in outside.splitlines() if line.startswith("|") and NUMBER.search(line)]


@pytest.mark.parametrize("name", ["README.md", "results/README.md", "results/paper-size-cpu/README.md"])
def test_readme_excerpts_are_the_text_of_the_files_they_quote(name: str) -> None:
    text = (ROOT / name).read_text(encoding="utf-8")
    assert excerpt_problems(text, name) == []
    if name == "README.md":
        assert EXCERPT.search(text), "README's significance excerpt lost its markers"
        assert unmarked_numeric_rows(text) == []


def test_the_excerpt_check_catches_a_stale_excerpt() -> None:
    real = "\n".join((committed_text("results/quick/report/significance.md") or "").splitlines()[4:7])
    fresh = f"<!-- excerpt: results/quick/report/significance.md -->\n\n{real}\n\n<!-- /excerpt -->\n"
    assert excerpt_problems(fresh, "t") == []
    stale = fresh.replace(real.splitlines()[-1], real.splitlines()[-1].replace("|", "| 9.99", 1))
    assert len(excerpt_problems(stale, "t")) == 1
    assert unmarked_numeric_rows("| a | -6.37 |\n") == ["| a | -6.37 |"] and unmarked_numeric_rows(fresh) == []
