"""Every import of the project, function-level ones included, read from the source (no module
is run): no circle between modules, and no arrow against the flow (STYLE.md): inference and
evaluation (plain packages), then annotations, then reports; analysis a Django-free core that
may use evaluation; webapp wires settings and urls; benchmarks may use everything and nothing
uses them. `tests/analysis/test_no_django.py` checks the same for analysis at run time."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("inference", "evaluation", "analysis", "annotations", "reports", "webapp", "benchmarks")
# Which project packages each package may import (itself included).
ALLOWED = {
    "inference": {"inference"},
    "evaluation": {"evaluation"},
    "analysis": {"analysis", "evaluation"},
    "annotations": {"annotations", "inference", "evaluation", "analysis"},
    "reports": {"reports", "annotations", "inference", "evaluation", "analysis", "webapp"},
    # Settings read the engine's device names; urls include the apps by name, not by import.
    "webapp": {"webapp", "inference", "evaluation"},
    "benchmarks": set(PACKAGES),
}
DJANGO_FREE = ("inference", "evaluation", "analysis")


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every project module (migrations left out: Django's own)."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported dotted name, line) of every import statement in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                found.append((submodule if submodule in MODULES else module, node.lineno))
    return found


def _project_module(dotted: str) -> str | None:
    """The project module an import loads (``pkg.mod.name`` -> ``pkg.mod``), or None."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _edges() -> dict[str, dict[str, int]]:
    edges: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        for imported, line in _imports(name, path):
            target = _project_module(imported)
            if target and target != name:
                edges.setdefault(name, {}).setdefault(target, line)
    return edges


def test_the_scan_sees_function_level_imports():
    edges = _edges()
    # annotations.tasks imports the model cache inside its task bodies (no torch on the web).
    assert "annotations.model_cache" in edges["annotations.tasks"]
    assert len(MODULES) > 100 and sum(map(len, edges.values())) > 300


def test_no_import_goes_against_the_flow():
    against = [
        f"{source} ({MODULES[source].relative_to(ROOT)}:{line}) imports {target}"
        for source, targets in _edges().items()
        for target, line in targets.items()
        if target.split(".")[0] not in ALLOWED[source.split(".")[0]]
    ]
    assert against == []


def test_the_engine_evaluation_and_statistics_never_import_django():
    found = [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {imported}"
        for name, path in MODULES.items()
        if name.split(".")[0] in DJANGO_FREE
        for imported, line in _imports(name, path)
        if imported.split(".")[0] == "django"
    ]
    assert found == []


def test_no_module_imports_itself_through_others():
    edges = _edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in edges.get(module, {}):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = [stack.pop()]
            while component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                circles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert circles == []
