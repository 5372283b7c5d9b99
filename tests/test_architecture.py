"""docs/architecture.md's rules, checked on the source: no import cycle, stages as peers, baselines
importing only from rsqair_bench, no function over 80 lines. AST only: no module is imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rsqair_bench", "baselines")
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
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


def test_train_and_evaluate_are_peers() -> None:
    graph = import_graph()
    assert "rsqair_bench.train" not in graph["rsqair_bench.evaluate"]
    assert "rsqair_bench.evaluate" not in graph["rsqair_bench.train"]


def test_baselines_import_only_from_rsqair_bench() -> None:
    graph = import_graph()
    for name, imports in graph.items():
        if name.startswith("baselines."):
            assert not {m for m in imports if m.startswith("baselines")}, name


def _documented_layers() -> dict[str, int]:
    """module -> row of the layer table in docs/architecture.md's module map (0 = bottom)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## Module map")[1].split("\n\n`cli.py`")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    layers = {}
    for i, row in enumerate(rows):
        for file in re.findall(r"`([\w/*.]+)\.py`", row.split("|")[2]):
            name = file.replace("/", ".")
            layers[name if name.startswith("baselines") else f"rsqair_bench.{name}"] = i
    return layers


def test_module_map_lists_every_module_and_no_import_goes_up() -> None:
    layers = _documented_layers()

    def layer(module: str) -> int | None:
        return layers.get("baselines.*") if module.startswith("baselines.") else layers.get(module)

    graph = import_graph()
    packages = {"rsqair_bench", "rsqair_bench.__main__", "rsqair_bench.data", "rsqair_bench.models", "baselines"}
    assert [m for m in graph if m not in packages and layer(m) is None] == []
    upward = [f"{m} -> {d}" for m, deps in graph.items() for d in deps
              if layer(m) is not None and layer(d) is not None and layer(d) > layer(m)]  # type: ignore[operator]
    assert upward == []


def test_no_function_over_80_lines() -> None:
    long = []
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
