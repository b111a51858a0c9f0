"""The package's shape: no import loops, no import that runs up the layers, no long file without a reason.

Every ``import`` / ``from ... import`` statement anywhere in a module counts (top level, inside a
function, under ``TYPE_CHECKING``): a lazy import still ties two files together. ``from pkg import
name`` depends on the module ``pkg.name`` when that is a module, else on ``pkg`` (its ``__init__``).
Loading a module also runs its parent packages' ``__init__``; that implicit edge is not counted, so a
package ``__init__`` may be a facade that re-exports from deeper layers without tying its children.

The layer order lives here, in :data:`LAYERS` (``docs/architecture.md`` draws it): a module may
import from its own layer and the layers listed before it, never from a later one.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "circuits"

#: Layers, lowest first; each maps to module-name prefixes (the longest prefix that matches wins).
#: ``sites`` sits below ``models``: a ``Diffusion`` is assembled from instrumented modules and holds
#: their ``SiteIndex``, while naming and instrumenting modules needs no model object. ``pocket``
#: is two things: its world (renderer, tokenizer, oracle, training script) is a data set and a
#: measuring instrument, and its named concepts (``circuits.pocket.concept("red")``) are plain
#: ``Concept`` data (base layer); none of it imports the toolkit above ``base``, so the models
#: layer may hand the pocket model its concepts (``model.concepts``) and any layer may read the
#: world. Its erasure reports sample and evaluate methods' erasures, so they sit above ``methods``.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("circuits.errors", "circuits.io", "circuits.tokens", "circuits.context", "circuits.version",
              "circuits.concept", "circuits.checks")),
    ("pocket world", ("circuits.pocket",)),
    ("sites", ("circuits.sites",)),
    ("models", ("circuits.models",)),
    ("interventions", ("circuits.interventions",)),
    ("sampling", ("circuits.sampling",)),
    ("methods", ("circuits.methods",)),
    ("pocket reports", ("circuits.pocket.report",)),
    ("analysis", ("circuits.analysis",)),
    # evaluation (DESIGN.md: prompt sets, resumable generation, measures) sits beside experiments
    ("experiments", ("circuits.experiments", "circuits.evaluation")),
    ("cli", ("circuits.cli", "circuits.__main__", "circuits")),
)

#: A module longer than this must say why at its top: its docstring holds a line starting "Length:".
MAX_LINES = 500


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package (``pkg/__init__.py`` is ``pkg``)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, files: dict[str, Path]) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every in-package import statement anywhere in module ``name``."""
    path = files[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                # ``import a.b.c`` loads a.b.c (its parents are implicit): the deepest module named
                parts = alias.name.split(".")
                targets = [".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in files]
                found += [(targets[0], node.lineno)] if targets else []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                target = f"{source}.{alias.name}" if f"{source}.{alias.name}" in files else source
                if target in files:
                    found.append((target, node.lineno))
    return [(t, line) for t, line in found if t != name]


@cache
def graph(package: Path = PACKAGE) -> dict[str, dict[str, int]]:
    """Module -> {imported module: first line that imports it}."""
    files = module_files(package)
    out: dict[str, dict[str, int]] = {}
    for name in files:
        edges: dict[str, int] = {}
        for target, line in imports(name, files):
            edges.setdefault(target, line)
        out[name] = edges
    return out


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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

    for v in edges:
        if v not in index:
            visit(v)
    return found


def layer_of(name: str) -> int:
    """Position in :data:`LAYERS` of the layer whose longest prefix matches ``name`` (-1: none).

    The facade ``circuits`` (the package's ``__init__``) matches only itself, so a new top-level
    module has no layer until someone places it.
    """
    best, best_len = -1, -1
    for position, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = name.startswith(prefix + ".") and prefix != "circuits"
            if (name == prefix or inside) and len(prefix) > best_len:
                best, best_len = position, len(prefix)
    return best


def describe(component: list[str], edges: dict[str, dict[str, int]]) -> str:
    inside = set(component)
    links = [f"{m}:{line} -> {t}" for m in component for t, line in sorted(edges[m].items()) if t in inside]
    return "loop among " + ", ".join(component) + "\n    " + "\n    ".join(links)


def upward(edges: dict[str, dict[str, int]]) -> list[str]:
    out = []
    for name, targets in edges.items():
        for target, line in sorted(targets.items()):
            if layer_of(target) > layer_of(name):
                out.append(f"{name}:{line} ({LAYERS[layer_of(name)][0]}) imports {target} "
                           f"({LAYERS[layer_of(target)][0]}, a later layer)")
    return out


# -- the package --------------------------------------------------------------------------------------
def test_every_module_has_a_layer() -> None:
    missing = [name for name in module_files() if layer_of(name) < 0]
    assert not missing, f"modules outside every layer of LAYERS (add their prefix): {missing}"


def test_no_import_loops() -> None:
    edges = graph()
    found = cycles(edges)
    assert not found, "import loops (untie them: dependencies point one way):\n" + "\n".join(
        describe(c, edges) for c in found)


def test_no_upward_imports() -> None:
    found = upward(graph())
    assert not found, "imports that run up the layers (see LAYERS):\n" + "\n".join(found)


def test_long_modules_say_why() -> None:
    long = []
    for path in module_files().values():
        text = path.read_text()
        lines = len(text.splitlines())
        doc = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_LINES and not any(line.startswith("Length:") for line in doc.splitlines()):
            long.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    assert not long, (f"modules over {MAX_LINES} lines without a 'Length: ...' line in their docstring saying why "
                      f"(or split them): {long}")


# -- the checks themselves bite --------------------------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = tmp_path / "circuits" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "circuits"


def test_a_lazy_import_loop_is_found(tmp_path: Path) -> None:
    package = _tree(tmp_path, {
        "__init__.py": "",
        "sampling/__init__.py": "",
        "sampling/a.py": "from circuits.sampling.b import thing\n",
        "sampling/b.py": "def f():\n    from . import a\n",
        "sampling/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import circuits.sampling.a\n",
    })
    edges = graph.__wrapped__(package)
    assert cycles(edges) == [["circuits.sampling.a", "circuits.sampling.b"]]
    assert edges["circuits.sampling.c"] == {"circuits.sampling.a": 3}


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    package = _tree(tmp_path, {
        "__init__.py": "",
        "models/__init__.py": "",
        "models/m.py": "def f():\n    from circuits.methods.x import y\n",
        "methods/__init__.py": "",
        "methods/x.py": "from circuits.models import m\ny = 1\n",
        "pocket/__init__.py": "",
        "pocket/world.py": "from circuits.pocket import report\n",
        "pocket/report.py": "from circuits.pocket.world import thing\n",
    })
    found = upward(graph.__wrapped__(package))
    assert any(f.startswith("circuits.models.m:2 (models) imports circuits.methods.x (methods") for f in found), found
    assert any(f.startswith("circuits.pocket.world:1 (pocket world) imports circuits.pocket.report") for f in found)
    assert len(found) == 2, found


@pytest.mark.parametrize("name, layer", [("circuits.pocket.world", "pocket world"), ("circuits.pocket", "pocket world"),
                                         ("circuits.pocket.report", "pocket reports"), ("circuits", "cli"),
                                         ("circuits.experiments.recipes.eot_zeroing", "experiments"),
                                         ("circuits.evaluation.manifest", "experiments")])
def test_layer_of_uses_the_longest_prefix(name: str, layer: str) -> None:
    assert LAYERS[layer_of(name)][0] == layer


def test_a_new_top_level_module_has_no_layer() -> None:
    assert layer_of("circuits.newthing") == -1
