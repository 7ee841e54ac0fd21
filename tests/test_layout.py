"""The package's imports run one way (../shared/STYLE.md): no cycle, no layer importing a higher one.

{cli, api} -> train -> viz -> tune -> score -> read -> {synth, data, models} -> foundations. Imports
inside functions count too (a lazy import of an optional or heavy dependency is fine; one
that hides a cycle is not).
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "digitdet"
# lower = nearer the foundations; a module may import its own layer (without a cycle) or lower ones
LAYERS = {"config": 0, "labels": 0, "boxes": 0, "io": 0, "distributed": 0,
          "data": 1, "synth": 1, "models": 1,
          "read": 2, "score": 3, "tune": 4, "viz": 5, "train": 6, "cli": 7, "api": 7, "serve": 7, "__init__": 8, "__main__": 8}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """``{module: digitdet modules it imports}`` for every module of the package."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("digitdet"):
                # `from digitdet import io` imports digitdet.io, not the package's __init__
                targets = [node.module] * (node.module != "digitdet") + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("digitdet")]
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def test_every_module_belongs_to_a_layer():
    assert all(layer(m) >= 0 for m in imports())


def test_no_module_imports_a_higher_layer():
    upward = sorted(f"{m} -> {t}" for m, ts in imports().items() for t in ts if layer(t) > layer(m))
    assert upward == []


def test_the_import_graph_has_no_cycle():
    graph, state, cycles = imports(), {}, []

    def visit(m, path):
        state[m] = "open"
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycles.append(" -> ".join([*path[path.index(t):], t]))
            elif t not in state:
                visit(t, [*path, t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []
