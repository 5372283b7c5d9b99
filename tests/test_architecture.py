"""docs/architecture.md's rules, checked on the source: no import cycle, stages as peers, baselines
importing only from rsqair_bench, layers as folders with no import going up, at most 8 top-level
modules, no function over 80 lines. AST only: no module is imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "rsqair_bench"
# folder -> the package it installs as (pyproject's package-dir: baselines/ ships as rsqair_bench.baselines)
SOURCES = {"rsqair_bench": "rsqair_bench", "baselines": "rsqair_bench.baselines"}
BASELINES = "rsqair_bench.baselines"
MAX_FUNCTION_LINES = 80
MAX_LOOP_LINES = 400
MAX_TOP_LEVEL_MODULES = 8  # besides __init__/__main__: the shared contracts; everything else lives in a layer's folder


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> project modules it imports anywhere in its file (lazy imports inside functions too)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                    if node.level else node.module or ""
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_import_graph_has_no_cycle() -> None:
    assert cycles(import_graph()) == []


def test_training_and_evaluation_are_peers() -> None:
    graph = import_graph()
    for name, imports in graph.items():
        for one, other in (("training", "evaluation"), ("evaluation", "training")):
            if name.startswith(f"{PACKAGE}.{one}."):
                assert not {m for m in imports if m.startswith(f"{PACKAGE}.{other}")}, name


def test_baselines_import_only_from_rsqair_bench() -> None:
    graph = import_graph()
    for name, imports in graph.items():
        if name.startswith(f"{BASELINES}."):
            assert not {m for m in imports if m.startswith(BASELINES)}, name


def _documented_layers() -> dict[str, int]:
    """Entry of the layer table in docs/architecture.md's module map -> its row (0 = bottom).

    An entry is a folder (`core/`, `training/`, the repository's `baselines/`) or a top-level module
    of the package (`config.py`)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## Module map")[1].split("\n\n`cli.py`")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    layers = {}
    for i, row in enumerate(rows):
        for entry in re.findall(r"`(\w+/|\w+\.py)`", row.split("|")[2]):
            layers[entry] = i
    return layers


def _entry(module: str) -> str | None:
    """The layer-table entry a module belongs to: its folder, or itself when it is a top-level module."""
    if module == BASELINES or module.startswith(f"{BASELINES}."):
        return "baselines/"
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != PACKAGE or parts[1] == "__main__":
        return None  # the package itself and `python -m rsqair_bench`
    return f"{parts[1]}/" if (ROOT / PACKAGE / parts[1]).is_dir() else f"{parts[1]}.py"


def test_every_layer_is_a_folder_or_a_top_level_module() -> None:
    for entry in _documented_layers():
        if entry == "baselines/":
            assert (ROOT / "baselines" / "__init__.py").is_file()
        elif entry.endswith("/"):
            assert (ROOT / PACKAGE / entry / "__init__.py").is_file(), entry
        else:
            assert (ROOT / PACKAGE / entry).is_file(), entry


def test_top_level_holds_at_most_8_modules() -> None:
    top = sorted(p.name for p in (ROOT / PACKAGE).glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_every_package_says_what_it_owns() -> None:
    for init in [*(ROOT / PACKAGE).glob("*/__init__.py"), ROOT / "baselines" / "__init__.py"]:
        assert ast.get_docstring(ast.parse(init.read_text())), init


def test_module_map_lists_every_module_and_no_import_goes_up() -> None:
    layers = _documented_layers()

    def layer(module: str) -> int | None:
        entry = _entry(module)
        return None if entry is None else layers.get(entry)

    graph = import_graph()
    assert [m for m in graph if _entry(m) is not None and layer(m) is None] == []
    upward = [f"{m} -> {d}" for m, deps in graph.items() for d in deps
              if layer(m) is not None and layer(d) is not None and layer(d) > layer(m)]  # type: ignore[operator]
    assert upward == []


def test_the_training_loop_reads_in_one_sitting() -> None:
    """training/loop.py holds the protocol only: its side effects are observers beside it."""
    assert len((ROOT / PACKAGE / "training" / "loop.py").read_text().splitlines()) <= MAX_LOOP_LINES


def test_no_function_over_80_lines() -> None:
    long = []
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
