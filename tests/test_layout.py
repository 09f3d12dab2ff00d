"""The house's layering, read from the source: no import cycles, and models/ imports no stage.

Every `import` and `from ... import` statement of the project's modules (tests aside) counts, also those inside
functions: a function-local import is an arrow all the same, it is only taken later. Modules are named by their
dotted path from the repository root; an import of a package's name that is one of its modules (`from models
import janus`) points at that module.

Run: python -m pytest -q tests/test_layout.py
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"generate", "understand", "reward", "sft", "grpo", "train", "evaluate"}
LOWER = ("models", "support")  # packages beneath every stage: they import none, and nothing above them
DATA = "prompts"  # the prompt generator: word lists and templates, importing nothing of ours (janus-tiny's BPE reads it)


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file outside tests/."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", ".git") or any(p.startswith(".") for p in rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that `path` imports, wherever the statement sits."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            names = [n for n in names[:-1] if n in modules] or [node.module]  # a submodule, else the package
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import a.b.c` of a non-module name: its nearest module
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_project_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_models_and_support_import_no_stage_and_nothing_above_them():
    graph = import_graph()
    wrong = {}
    for name, targets in graph.items():
        if name.split(".")[0] in LOWER:
            above = {t for t in targets if t.split(".")[0] not in LOWER and t != DATA}
            if name.split(".")[0] == "support":  # support sits beneath models too
                above |= {t for t in targets if t.split(".")[0] == "models"}
            if above:
                wrong[name] = sorted(above)
    assert wrong == {}
    assert graph[DATA] == set()
    assert not {t for name, targets in graph.items() if name.split(".")[0] in LOWER for t in targets} & STAGES


def test_the_checks_see_a_cycle_and_an_upward_arrow():
    """The reader of imports is not blind: a planted cycle and a function-local upward import are found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    modules = project_modules()
    source = ROOT / "models" / "__init__.py"
    tree = "def f():\n    from sft import token_nll\n    import grpo\n"
    probe = ROOT / "tests" / "_layout_probe.py"
    try:
        probe.write_text(tree)
        assert imports_of(probe, modules) == {"sft", "grpo"}
    finally:
        probe.unlink()
    assert source.exists()
