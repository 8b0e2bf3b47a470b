"""The package layout: one installed namespace, layers that import downwards only, no cycles.

Read from the source (ast), every import counted: at module level, inside functions
and under TYPE_CHECKING alike, since each is a dependency a reader must follow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_ROOTS = ("proto", "runtime", "server", "simulators", "clients")
# Each layer may import the ones before it, never one after it.
LAYERS = (
    ("contract", ("txverify.v1", "txverify.errors", "txverify.miniqr", "txverify.units",
                  "txverify.banks", "txverify.wire", "txverify.slipimage", "txverify.client")),
    ("runtime", ("txverify.runtime",)),
    ("simulators", ("txverify.simulators",)),
    ("hub", ("txverify.hub",)),
    ("cli", ("txverify.cli",)),
)  # fmt: skip
# The client library may use the runtime's TLS helpers (the same certificates as
# every process); nothing else of the contract imports the runtime.
GENERATORS = ("generate.py", "openapi.py")  # proto/'s scripts that write the generated code
CONTRACT_MAY_IMPORT = {"txverify.client": ("txverify.runtime.tls",)}


def _modules() -> dict[str, Path]:
    found = {}
    for root in SOURCE_ROOTS:
        for path in (ROOT / root).rglob("*.py"):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")) or path.name in GENERATORS:
                continue
            parts = list(path.relative_to(ROOT / root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # base.name is a submodule or a name in base: resolved to the module either way.
            yield from (f"{base}.{a.name}" for a in node.names)


@cache
def graph() -> dict[str, frozenset[str]]:
    """module -> the project's modules it imports (generated code left out)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges = {}
    for module, path in modules.items():
        targets = {resolve(n) for n in _imported(module, path) if n.startswith("txverify.")}
        edges[module] = frozenset(t for t in targets if t and t != module)
    return edges


def _cycles(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _layer(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _allowed(module: str, target: str) -> bool:
    return any(
        (module == owner or module.startswith(owner + ".")) and target in allowed
        for owner, allowed in CONTRACT_MAY_IMPORT.items()
    )


def test_the_import_graph_has_no_cycles() -> None:
    assert [] == _cycles(graph())


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}

    assert [["a", "b", "c"]] == _cycles(edges)


def test_every_module_imports_only_its_own_layer_or_those_below() -> None:
    upward = [
        f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for module, targets in sorted(graph().items())
        for target in sorted(targets)
        if _layer(target) > _layer(module) and not _allowed(module, target)
    ]

    assert [] == upward


def test_the_contract_imports_no_runtime_but_the_client_libraries_tls() -> None:
    found = [
        f"{module} imports {target}"
        for module, targets in sorted(graph().items())
        if _layer(module) == 0
        for target in sorted(targets)
        if _layer(target) > 0 and not _allowed(module, target)
    ]

    assert [] == found


def test_txverify_is_one_namespace_over_the_source_roots() -> None:
    # PEP 420: an __init__.py at the top of any root would hide the others.
    assert [] == [r for r in SOURCE_ROOTS if (ROOT / r / "txverify" / "__init__.py").exists()]
    assert [] == [
        p.name
        for r in SOURCE_ROOTS
        for p in (ROOT / r).iterdir()
        if p.name not in {"txverify", "__pycache__", *GENERATORS}
    ]
