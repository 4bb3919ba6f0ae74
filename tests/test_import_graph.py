"""The import graph of src/mixlab: no import-time circles, no two modules importing each other, and
validating a fine-tuning config imports neither torch nor a recipe."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Pairs that still import each other (inside functions), each to be untangled by its owner; a pair
# not listed here fails the test.
KNOWN_PAIRS: set[frozenset[str]] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    return skip


def _targets(node: ast.Import | ast.ImportFrom, package: str, mods: dict[str, Path]) -> set[str]:
    """The mixlab modules an import statement loads (the longest module prefix of each name)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            up = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(up + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
    found = set()
    for name in names:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def import_graph(top_level_only: bool) -> dict[str, set[str]]:
    """Module -> the mixlab modules it imports (``top_level_only``: at import time, not inside functions)."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        skip = _type_checking_nodes(tree)
        nodes = [n for n in (tree.body if top_level_only else ast.walk(tree))
                 if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skip]
        graph[name] = {t for n in nodes for t in _targets(n, package, mods)} - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports_at_every_level():
    graph = import_graph(top_level_only=False)
    assert "mixlab.train.finetune.config" in graph["mixlab.train.finetune"]
    assert "mixlab.train.finetune.sft" in graph["mixlab.train.finetune.methods"]  # inside a function
    assert "mixlab.train.finetune.config" not in graph["mixlab.train.finetune.run"]  # under TYPE_CHECKING only
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_at_import_time():
    assert cycles(import_graph(top_level_only=True)) == []


def test_no_two_modules_import_each_other():
    graph = import_graph(top_level_only=False)
    pairs = {frozenset({a, b}) for a, targets in graph.items() for b in targets if a in graph.get(b, ())}
    assert sorted(sorted(p) for p in pairs - KNOWN_PAIRS) == []


def test_the_fine_tuning_package_has_no_import_circle():
    graph = import_graph(top_level_only=False)
    inside = {m: {t for t in ts if t.startswith("mixlab.train.")} for m, ts in graph.items()
              if m.startswith("mixlab.train.")}
    assert cycles(inside) == []


def test_validating_a_fine_tuning_config_imports_no_torch_and_no_recipe():
    code = ("import sys; from mixlab.train.finetune.config import FinetuneConfig; "
            "FinetuneConfig.model_validate({'method': 'grpo', 'model': {'base': 'x'}, "
            "'data': {'datasets': ['toyworld_arithmetic']}}); "
            "from mixlab.train.finetune import METHODS, finetune; "
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules]; "
            "recipes = [m for m in sys.modules if m.startswith('mixlab.train.') and m.split('.')[-1] in "
            "('sft', 'grpo', 'spin', 'trl_bridge', 'run', 'base', 'loop')]; "
            "print(heavy, recipes)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []"
