"""No import cycle among our modules: every import statement counts, at module level or inside a function, so a
lower layer (models, the Celery app, the event bus) never imports a higher one (services, metrics, tasks).
Tests and migrations are left out. Reads the source with `ast`; nothing is imported."""

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("campaigns", "workorders", "processing", "emailsys")
SKIPPED_DIRECTORIES = {"tests", "migrations"}


def project_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name → source file, for every module of `packages` outside tests and migrations."""
    modules = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if SKIPPED_DIRECTORIES.isdisjoint(parts):
                modules[".".join(parts).removesuffix(".__init__")] = path
    return modules


def imported_names(source: str, *, module: str, is_package: bool = False) -> set[str]:
    """Every dotted name an import statement anywhere in `source` may load: `import a.b` gives a.b; `from a import
    b` gives a and a.b (b may be a submodule); relative imports are resolved against `module`."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            origin = ".".join([*base, *([node.module] if node.module else [])])
            names.add(origin)
            names.update(f"{origin}.{alias.name}" for alias in node.names)
    return names


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module → the other project modules it imports."""
    graph = {}
    for module, path in modules.items():
        names = imported_names(path.read_text(), module=module, is_package=path.name == "__init__.py")
        graph[module] = {name for name in names if name in modules and name != module}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while not component or component[-1] != node:
                        component.append(stack.pop())
                        on_stack.discard(component[-1])
                    if len(component) > 1:
                        found.append(sorted(component))
            elif target not in index:
                index[target] = low[target] = len(index)
                stack.append(target)
                on_stack.add(target)
                work.append((target, iter(sorted(graph.get(target, ())))))
            elif target in on_stack:
                low[node] = min(low[node], index[target])
    return found


def test_our_modules_import_each_other_without_a_cycle() -> None:
    graph = import_graph(project_modules(ROOT, PACKAGES))

    assert "workorders.models" in graph["workorders.services.steps"]  # the graph is real, not empty
    assert not any(SKIPPED_DIRECTORIES & set(module.split(".")) for module in graph)
    assert cycles(graph) == [], "import cycles: break each one (a lower layer must not import a higher one)"


def test_an_import_inside_a_function_or_a_relative_one_counts() -> None:
    source = "from . import sibling\ndef f():\n    from app.services import steps\n    import app.tasks\n"

    names = imported_names(source, module="app.models")

    assert {"app.sibling", "app.services.steps", "app.tasks"} <= names


def test_a_cycle_is_found_through_any_number_of_modules_and_a_chain_is_not() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e", "d"}}

    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
