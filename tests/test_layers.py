"""The code goes one way down: engine modules import only their own layer or lower ones, never in a
circle (between packages or inside one), and the dashboard's page scripts only draw (docs/DESIGN.md, "Layers").

Every import counts: the lazy ones inside functions and the type-only ones under `if TYPE_CHECKING:` too (a
type-only import of a higher module is still a dependency on it, and hid a circle between the distillation
loop and its backbones). Every engine module is named in docs/DESIGN.md.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top; a module belongs to the first layer that names it or a package above it.
LAYERS = (
    ("foundations", ("engine.errors", "engine.cache", "engine.device", "engine.allocator", "engine.images",
                     "engine.nets", "engine.progress", "engine.corruptions", "engine.augment", "engine.presets",
                     "engine.version")),
    ("data", ("engine.data",)),
    ("representation", ("engine.embed", "engine.density", "engine.projection")),
    ("distill", ("engine.distill",)),
    ("result schema", ("engine.results",)),
    ("evaluation and figures", ("engine.evaluate", "engine.eval_train", "engine.attribute_probe", "engine.figures")),
    ("trajectories", ("engine.trajectory",)),
    ("planner", ("engine.pipeline",)),
    ("run store", ("engine.store",)),
    ("stages and the audit", ("engine.stages", "engine.set_files", "engine.audit")),
    ("stored runs", ("engine.stored", "engine.estimate")),
    ("sweeps, reports and exports", ("engine.sweep", "engine.report", "engine.export", "engine.example",
                                     "engine.classroom", "engine.reproduce")),
    ("command line", ("engine.commands", "engine.cli", "engine.__main__", "engine")),
)


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


MODULES = {module_name(p): p for p in sorted((ROOT / "engine").rglob("*.py"))}


def layer_of(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "engine"):
            return i
    if module == "engine":
        return len(LAYERS) - 1
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to docs/DESIGN.md)")


def _nodes(tree: ast.AST):
    """Every node of a module, those under `if TYPE_CHECKING:` included."""
    return ast.walk(tree)


def imports_of(module: str, path: Path) -> set[str]:
    """The engine modules `module` imports (each resolved to a module file, not a name inside one)."""
    found: set[str] = set()

    def add(target: str) -> None:
        while target not in MODULES and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in MODULES and target != module:
            found.add(target)

    for node in _nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "engine":
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            if prefix.split(".")[0] != "engine":
                continue
            for alias in node.names:  # `from . import cache` imports engine.cache, not the package
                add(f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in MODULES else prefix)
    return found


GRAPH = {m: imports_of(m, p) for m, p in MODULES.items()}


def test_every_engine_module_has_a_layer() -> None:
    for m in MODULES:
        layer_of(m)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_from_a_lower_layer_to_a_higher_one(module: str) -> None:
    mine = layer_of(module)
    upward = sorted(f"{dep} ({LAYERS[layer_of(dep)][0]})" for dep in GRAPH[module] if layer_of(dep) > mine)
    assert not upward, f"{module} ({LAYERS[mine][0]}) imports upward: {', '.join(upward)}"


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of an import graph with more than one module (a package's
    __init__ re-exporting its own modules is not a circle: they never import it back)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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


def test_no_import_circle() -> None:
    assert not circles(GRAPH), f"import circles: {circles(GRAPH)}"


def test_the_circle_check_sees_type_only_imports_inside_a_package(tmp_path: Path) -> None:
    """A module that imports its importer's privates only for type checking closes a circle (the one the
    distillation loop had with IDC and MTT): the walker counts it, and the circle check finds it."""
    path = tmp_path / "idc.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .loop import _Run\n", encoding="utf-8")
    found = imports_of("engine.distill.toolkit", path)
    assert found == {"engine.distill.loop"}
    graph = {"engine.distill.toolkit": found, "engine.distill.loop": {"engine.distill.toolkit"}}
    assert circles(graph) == [["engine.distill.loop", "engine.distill.toolkit"]]
    assert circles({"engine.distill": {"engine.distill.loop"}, "engine.distill.loop": set()}) == []


def test_every_engine_module_is_named_in_the_design_doc() -> None:
    """docs/DESIGN.md's layout names every module file of the engine (a new one must be documented)."""
    design = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    missing = sorted(m for m, p in MODULES.items() if p.name != "__init__.py" and p.stem not in design)
    assert not missing, f"not named in docs/DESIGN.md: {missing}"


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The walker sees lazy imports inside functions (the kind that used to climb back up)."""
    fake = ROOT / "engine" / "distill" / "loop.py"
    src = "def f():\n    from ..trajectory import Tracker\n    from .. import stored\n"
    path = tmp_path / "loop.py"
    path.write_text(src, encoding="utf-8")
    found = imports_of("engine.distill.loop", path)
    assert found == {"engine.trajectory", "engine.stored"} and fake.is_file()
    assert all(layer_of(d) > layer_of("engine.distill.loop") for d in found)


def test_engine_never_imports_streamlit() -> None:
    for m, p in MODULES.items():
        for node in _nodes(ast.parse(p.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "streamlit" for n in names), m


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "pages").glob("*.py")))
def test_pages_only_draw(page: str) -> None:
    """A page script neither opens the run store nor reads a run's folder by path: ui/ does that."""
    tree = ast.parse((ROOT / "pages" / page).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("engine.store"), f"{page} imports {node.module}"
            assert not ((node.module or "") == "engine" and any(a.name == "store" for a in node.names)), page
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("engine.store") for a in node.names), page
        if isinstance(node, ast.Attribute):
            assert node.attr not in ("glob", "rglob", "iterdir", "RunStore"), f"{page} uses .{node.attr}"
        if isinstance(node, ast.Name):
            assert node.id != "RunStore", f"{page} uses RunStore"
