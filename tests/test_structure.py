"""Guards of the code's shape (issue 9), by static analysis of src/returnstack with ast:
no import cycle between modules, and no HTTP framework in services and repositories."""

import ast
from collections.abc import Iterator
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "returnstack"
HTTP_FRAMEWORKS = ("fastapi", "starlette")

# Cycles known when this guard was written, each to be deleted once it is broken (the
# profiles/render/policy one was, by customers/fields.py and returns/service.put_policy).
KNOWN_CYCLES: set[frozenset[str]] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted((SOURCE / PACKAGE).rglob("*.py"))}


def _imported_names(path: Path) -> Iterator[str]:
    """Every absolute module name imported anywhere in the file (module level, inside
    functions, under `if`): `from a.b import c` yields `a.b.c`, the parent resolving it."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}: relative import; write it absolute")


def _our_module(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _import_graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        targets = {_our_module(name) for name in _imported_names(path)}
        graph[module] = {target for target in targets if target not in (None, module)}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_no_import_cycle_between_modules() -> None:
    """Imports inside functions count as much as those at the top of a module: a deferred
    import that closes a loop is still two modules that cannot be understood, tested or
    moved apart; it only hides the loop from the interpreter until the function runs."""
    cycles = _cycles(_import_graph())
    unexpected = [sorted(cycle) for cycle in cycles if cycle not in KNOWN_CYCLES]
    assert not unexpected, f"import cycles: {unexpected}"


def test_the_known_cycles_still_exist() -> None:
    """Once a known cycle is broken, delete its entry so it cannot come back unnoticed."""
    cycles = set(_cycles(_import_graph()))
    assert cycles >= KNOWN_CYCLES, f"broken already, remove: {KNOWN_CYCLES - cycles}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [frozenset({"a", "b", "c"})]


def test_services_and_repositories_do_not_import_the_http_framework() -> None:
    """Services raise domain errors and repositories run SQL; HTTP stays in endpoints."""
    offenders = [
        f"{module} imports {name}"
        for module, path in MODULES.items()
        if path.name in ("service.py", "repository.py")
        for name in _imported_names(path)
        if name.split(".")[0] in HTTP_FRAMEWORKS
    ]
    assert not offenders
    assert {"returnstack.returns.service", "returnstack.returns.repository"} <= set(MODULES)
