"""The layers run one way: ``bonekit/`` (core) <- stages (``selfsup/``, ``cosup/``, ``finetune/``) <- the one
orchestrator ``finetune/study.py``. Every import of every file is parsed (function-level imports included), so a
lazy import cannot hide a wrong-way edge."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = "bonekit"
STAGES = ("selfsup", "cosup", "finetune")
ORCHESTRATOR = "finetune.study"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_files() -> dict[str, Path]:
    return {module_name(p): p for pkg in (CORE, *STAGES) for p in sorted((ROOT / pkg).rglob("*.py"))}


def is_entry_script(path: Path) -> bool:
    """A module with a top-level ``main`` function or an ``if __name__ == "__main__"`` block."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            return True
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return True
    return path.name == "__main__.py"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Project modules imported anywhere in ``path`` (``from a import b`` counts ``a.b`` when that is a module)."""
    out: set[str] = set()
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for n in names:
            # the longest project module that the name starts with
            parts = n.split(".")
            for k in range(len(parts), 0, -1):
                cand = ".".join(parts[:k])
                if cand in modules:
                    if cand != me:
                        out.add(cand)
                    break
    return out


FILES = project_files()
GRAPH = {m: imports_of(p, set(FILES)) for m, p in FILES.items()}
ENTRIES = {m for m, p in FILES.items() if is_entry_script(p)}


def test_graph_is_real():
    # the parser must see the edges that certainly exist, or every rule below passes vacuously
    assert "bonekit.cache" in GRAPH["bonekit.segdata"]
    assert "finetune.train" in ENTRIES and "selfsup.pretrain" in ENTRIES and "bonekit.rle" not in ENTRIES


def test_core_imports_no_stage():
    bad = [(m, d) for m, deps in GRAPH.items() if m.split(".")[0] == CORE for d in deps if d.split(".")[0] in STAGES]
    assert not bad, f"bonekit/ (the core) imports stage modules: {bad}"


def test_no_entry_script_imported():
    """Entry scripts are leaves: shared code lives in library modules (the orchestrator alone runs mains)."""
    bad = [(m, d) for m, deps in GRAPH.items() if m != ORCHESTRATOR for d in deps
           if d in ENTRIES and d.split(".")[0] in STAGES]
    assert not bad, f"modules importing an entry script: {bad}"


def test_nothing_imports_the_orchestrator():
    bad = [m for m, deps in GRAPH.items() if ORCHESTRATOR in deps]
    assert not bad, f"{ORCHESTRATOR} is the one orchestrator and a leaf; imported by {bad}"


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("rule", [test_core_imports_no_stage, test_no_entry_script_imported,
                                  test_nothing_imports_the_orchestrator, test_no_import_cycles])
def test_rules_can_fail(rule, monkeypatch):
    """Each rule fails on a graph that breaks it."""
    broken = {k: set(v) for k, v in GRAPH.items()}
    broken["bonekit.rle"].add("finetune.train")  # core -> stage, and core -> entry script
    broken["cosup.partition"].add(ORCHESTRATOR)
    broken["bonekit.metrics"].add("bonekit.losses")
    broken["bonekit.losses"].add("bonekit.metrics")
    monkeypatch.setitem(globals(), "GRAPH", broken)
    with pytest.raises(AssertionError):
        rule()
