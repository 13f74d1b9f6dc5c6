"""advmed's import layering, read from the source with :mod:`ast` (this module imports neither advmed nor torch).

The layers, from the ground up (DESIGN.md, Layout):

- ``advmed.utils`` is the ground: it imports nothing of advmed outside itself.
- plain torch (``nets``, ``losses``, ``metrics``, ``data``, ``attacks``, ``objectives``,
  ``corruptions``) knows no LightningModule and no report: nothing from ``advmed.models``,
  ``advmed.callbacks``, ``advmed.studies`` or the entry points.
- ``models``, ``callbacks`` and the entry points above them may import anything below.

Every import counts for the layering, wherever it is written (inside functions, under
``TYPE_CHECKING``): a lazy import still makes the lower layer depend on the upper one.

No two modules may import each other, directly or round a loop, by any import: one moved into a
function or under ``TYPE_CHECKING`` to dodge the cycle still says that each module needs the
other (what both need belongs in a third module). Importing ``a.b.c`` runs the ``__init__`` of
package ``a.b`` first, so it counts as importing ``a.b`` too: a loop through a package's
``__init__`` is a cycle as well.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

PACKAGE = "advmed"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

ENTRY_POINTS = tuple(f"{PACKAGE}.{name}" for name in ("train", "evaluate", "study", "augment", "generate", "collect"))
LIGHTNING_LAYERS = (f"{PACKAGE}.models", f"{PACKAGE}.callbacks", *ENTRY_POINTS)
# Studies and their reports sit above the plain-torch layers too: a metric hands its numbers to a report,
# it does not import one.
UPPER_LAYERS = (*LIGHTNING_LAYERS, f"{PACKAGE}.studies")
# Packages of plain torch code. objectives/ and corruptions/ are in DESIGN.md's layout; listed
# before they exist so that they start under the rule.
PLAIN_TORCH = tuple(f"{PACKAGE}.{name}" for name in
                    ("nets", "losses", "metrics", "data", "attacks", "objectives", "corruptions"))


@dataclass(frozen=True)
class Import:
    """One import of a package module by another, where it is written."""

    importer: str  # dotted name of the importing module
    imported: str  # dotted name of the imported module (a submodule when `from pkg import submodule`)
    path: Path
    line: int
    in_function: bool = False  # runs when the function is called, not when the importer is imported
    type_checking: bool = False  # under `if TYPE_CHECKING:`: never runs
    via: str | None = None  # a package whose __init__ runs because this statement imports `via` inside it

    def where(self, root: Path) -> str:
        """``file:line``, relative to ``root``, and how the statement imports ``imported``."""
        notes = [f"{self.path.relative_to(root)}:{self.line}"]
        if self.via:
            notes.append(f"which imports {self.via}")
        if self.in_function:
            notes.append("in a function")
        if self.type_checking:
            notes.append("under TYPE_CHECKING")
        return ", ".join(notes)


@dataclass(frozen=True)
class Rule:
    """Modules under ``layer`` must not import a module that ``forbidden`` accepts."""

    layer: str
    forbidden: Callable[[str], bool]
    why: str


def within(name: str, prefix: str) -> bool:
    """``name`` is the module or package ``prefix`` or lies inside it."""
    return name == prefix or name.startswith(prefix + ".")


def module_names(package_dir: Path, package: str) -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its ``__init__.py``)."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join((package, *parts))] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


_Statement = tuple[ast.Import | ast.ImportFrom, bool, bool]


def _import_statements(tree: ast.AST) -> Iterator[_Statement]:
    """Every import statement, with whether it is inside a function and whether it is under
    ``if TYPE_CHECKING:`` (class bodies, ``if`` and ``try`` blocks run at import time)."""
    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> Iterator[_Statement]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, in_function, type_checking
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            in_function = True  # decorators and defaults run at import time, but hold no import statements
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from visit(child, in_function, True)
            for child in node.orelse:
                yield from visit(child, in_function, type_checking)
            return
        for child in ast.iter_child_nodes(node):
            yield from visit(child, in_function, type_checking)

    yield from visit(tree, False, False)


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module of ``from <module> import ...`` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def package_imports(package_dir: Path, package: str) -> list[Import]:
    """Every import of a module of ``package`` by a module of ``package``."""
    modules = module_names(package_dir, package)
    found = []
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function, type_checking in _import_statements(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                module = _resolve(node, importer, path.name == "__init__.py")
                # `from pkg import sub` imports the submodule pkg.sub when there is one.
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                           for alias in node.names]
            for target in dict.fromkeys(targets):
                if within(target, package):
                    found.append(Import(importer, target, path, node.lineno, in_function, type_checking))
    return found


def layering_rules(package: str = PACKAGE) -> list[Rule]:
    """The rules of the module docstring, for ``package``."""
    ground = f"{package}.utils"
    lightning = tuple(name.replace(PACKAGE, package, 1) for name in UPPER_LAYERS)
    rules = [Rule(ground, lambda name: not within(name, ground),
                  f"{ground} is the ground layer: it imports nothing of {package} outside {ground}")]
    for layer in PLAIN_TORCH:
        layer = layer.replace(PACKAGE, package, 1)
        rules.append(Rule(layer, lambda name: any(within(name, upper) for upper in lightning),
                          f"{layer} is plain torch: it imports no LightningModule, callback, study or entry point "
                          f"({', '.join(lightning)}); let the caller load the module and hand over what is needed"))
    return rules


def layering_violations(imports: Iterable[Import], rules: Iterable[Rule], root: Path) -> list[str]:
    """One line per import that breaks a rule: file, line, the imported module and the rule."""
    rules = list(rules)
    return [f"{imp.imported} imported by {imp.where(root)}: {rule.why}"
            for imp in imports for rule in rules
            if within(imp.importer, rule.layer) and rule.forbidden(imp.imported)]


def _with_packages(imports: Iterable[Import]) -> Iterator[Import]:
    """Every import, each followed by the packages whose ``__init__`` it runs on the way
    (``import a.b.c`` runs ``a.b``; not the importer's own packages, which have run already)."""
    for imp in imports:
        yield imp
        parts = imp.imported.split(".")
        for end in range(2, len(parts)):  # the root package is every module's own: never a step of a loop
            package = ".".join(parts[:end])
            if not within(imp.importer, package):
                yield replace(imp, imported=package, via=imp.imported)


def import_cycles(imports: Iterable[Import]) -> list[list[Import]]:
    """The import cycles (every import counts, see the module docstring): one cycle (its imports, in
    order) per strongly connected group of modules (Tarjan), so a tangle is reported once, not once
    per loop through it."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in _with_packages(imports):
        if imp.importer != imp.imported:
            edges.setdefault(imp.importer, {}).setdefault(imp.imported, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # recursion depth <= number of modules (a few hundred)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return [_cycle_through(group, edges) for group in sorted(groups)]


def _cycle_through(group: list[str], edges: dict[str, dict[str, Import]]) -> list[Import]:
    """A shortest cycle from the group's first module back to it, inside the group (breadth first)."""
    start, members = group[0], set(group)
    came_from: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt, imp in sorted(edges.get(node, {}).items()):
                if nxt not in members or nxt in came_from:
                    continue
                came_from[nxt] = imp
                if nxt == start:
                    cycle = [imp]
                    while cycle[0].importer != start:
                        cycle.insert(0, came_from[cycle[0].importer])
                    return cycle
                following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {group}")  # a strongly connected group always has one


def describe_cycle(cycle: list[Import], root: Path) -> str:
    """``a -> b (a.py:3) -> a (b.py:5)``."""
    return " -> ".join([cycle[0].importer, *(f"{imp.imported} ({imp.where(root)})" for imp in cycle)])


# ---------------------------------------------------------------------------------------- advmed itself


@pytest.fixture(scope="module")
def advmed_imports() -> list[Import]:
    return package_imports(PACKAGE_DIR, PACKAGE)


def test_every_layer_imports_only_the_layers_below_it(advmed_imports):
    assert len(advmed_imports) > 100  # the parser found the package's imports
    violations = layering_violations(advmed_imports, layering_rules(), PACKAGE_DIR.parent)
    assert not violations, "imports that climb a layer:\n" + "\n".join(violations)


def test_no_import_cycle_between_advmed_modules(advmed_imports):
    cycles = [describe_cycle(cycle, PACKAGE_DIR.parent) for cycle in import_cycles(advmed_imports)]
    assert not cycles, ("import cycles (break each by moving what both sides need into a module of its own, "
                        "not by moving an import into a function):\n" + "\n".join(cycles))


# ---------------------------------------------------------------------------------------- the checker


def _package(root: Path, files: dict[str, str]) -> Path:
    """A synthetic package ``pkg`` under ``root`` (relative path -> source); returns its folder."""
    for name, source in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return root / "pkg"


def test_the_checker_finds_imports_in_functions_type_checking_blocks_and_relative_forms(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "utils/__init__.py": "",
        "utils/io.py": ("from typing import TYPE_CHECKING\n"
                        "if TYPE_CHECKING:\n    from pkg.models.net import Module\n"
                        "def load():\n    from ..data import readers\n    import pkg.train\n"),
        "models/__init__.py": "",
        "models/net.py": "from . import base\nfrom .base import thing\n",
        "models/base.py": "import os\nthing = 1\n",
        "data/__init__.py": "",
        "data/readers.py": "class Reader:\n    from pkg.callbacks import grid\n",
        "callbacks/__init__.py": "",
        "callbacks/grid.py": "",
        "train.py": "",
    })
    imports = package_imports(pkg, "pkg")
    found = {(imp.importer, imp.imported, imp.line, imp.in_function, imp.type_checking) for imp in imports}
    assert found == {
        ("pkg.utils.io", "pkg.models.net", 3, False, True),
        ("pkg.utils.io", "pkg.data.readers", 5, True, False),  # relative, in a function
        ("pkg.utils.io", "pkg.train", 6, True, False),
        ("pkg.models.net", "pkg.models.base", 1, False, False),  # `from . import base`: the submodule
        ("pkg.models.net", "pkg.models.base", 2, False, False),
        ("pkg.data.readers", "pkg.callbacks.grid", 2, False, False),  # in a class body
    }
    violations = layering_violations(imports, layering_rules("pkg"), tmp_path)
    assert [v.split(": ")[0] for v in violations] == [
        "pkg.callbacks.grid imported by pkg/data/readers.py:2",
        "pkg.models.net imported by pkg/utils/io.py:3, under TYPE_CHECKING",
        "pkg.data.readers imported by pkg/utils/io.py:5, in a function",
        "pkg.train imported by pkg/utils/io.py:6, in a function",
    ]
    assert "pkg.data is plain torch: it imports no LightningModule" in violations[0]
    assert "pkg.utils is the ground layer: it imports nothing of pkg outside pkg.utils" in violations[1]


def test_the_checker_reports_each_cycle_with_files_and_lines(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "import os\nfrom pkg import b\n",
        "b.py": "from pkg.c import f\n",
        "c.py": "from pkg.a import g\n",
        # a loop closed by a lazy or a TYPE_CHECKING import is a cycle too
        "d.py": "def later():\n    from pkg import e\n",
        "e.py": "import pkg.d\n",
        "f.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.g\n",
        "g.py": "import pkg.f\n",
        # importing sub.inner runs sub/__init__.py, which imports h
        "h.py": "from pkg.sub.inner import x\n",
        "sub/__init__.py": "from pkg.h import y\n",
        "sub/inner.py": "from . import sibling\n",
        "sub/sibling.py": "",
    })
    cycles = import_cycles(package_imports(pkg, "pkg"))
    assert [describe_cycle(cycle, tmp_path) for cycle in cycles] == [
        "pkg.a -> pkg.b (pkg/a.py:2) -> pkg.c (pkg/b.py:1) -> pkg.a (pkg/c.py:1)",
        "pkg.d -> pkg.e (pkg/d.py:2, in a function) -> pkg.d (pkg/e.py:1)",
        "pkg.f -> pkg.g (pkg/f.py:3, under TYPE_CHECKING) -> pkg.f (pkg/g.py:1)",
        "pkg.h -> pkg.sub (pkg/h.py:1, which imports pkg.sub.inner) -> pkg.h (pkg/sub/__init__.py:1)",
    ]  # sub.inner -> sub.sibling is none: a package's own __init__ has run before its modules
    acyclic = _package(tmp_path / "acyclic", {"__init__.py": "", "a.py": "import pkg.b\n", "b.py": ""})
    assert import_cycles(package_imports(acyclic, "pkg")) == []
