"""The layout rules of docs/architecture.md, checked on the source: who may import whom, no
import cycles, configs that import no JAX, and short functions."""

import ast
import os

import pytest

from conftest import ROOT

PACKAGES = ("common_jax", "pssnet_jax", "dcff_jax", "pssnet_dcff")
# package -> the project packages it may import (besides itself)
ALLOWED = {
    "common_jax": set(),
    "pssnet_jax": {"common_jax"},
    "dcff_jax": {"common_jax"},
    "pssnet_dcff": {"common_jax", "pssnet_jax", "dcff_jax"},
}
MAX_FUNCTION_LINES = 60


def module_files():
    """{dotted module name: path} of every module of the project packages."""
    found = {}
    for package in PACKAGES:
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    found[dotted.removesuffix(".__init__")] = path
    return found


MODULES = module_files()


def imports_of(path: str, module: str) -> set:
    """Project modules imported anywhere in a file (function-level imports included)."""
    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # a.b.c -> the deepest project module
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


GRAPH = {module: imports_of(path, module) for module, path in MODULES.items()}


def test_packages_import_only_what_the_layering_allows():
    bad = []
    for module, imported in GRAPH.items():
        own = module.split(".")[0]
        for other in imported:
            target = other.split(".")[0]
            if target != own and target not in ALLOWED[own]:
                bad.append(f"{module} imports {other}")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles():
    state, cycles = {}, []

    def visit(module, stack):
        state[module] = "active"
        for other in sorted(GRAPH[module]):
            if state.get(other) == "active":
                cycles.append(" -> ".join(stack[stack.index(other):] + [other]))
            elif other not in state:
                visit(other, stack + [other])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_rule_checker_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    """The checker itself: an import inside a function and a relative one are found."""
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from pssnet_jax import draw\n\nfrom . import loop\n")
    assert imports_of(str(path), "common_jax.probe") == {"pssnet_jax.draw", "common_jax.loop"}


def test_configs_import_only_ml_collections_and_configs():
    bad = []
    for folder, _, names in os.walk(os.path.join(ROOT, "configs")):
        for name in names:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                               else [node.module or ""])
                    bad += [f"{os.path.relpath(path, ROOT)}: {m}" for m in modules
                            if m.split(".")[0] not in ("ml_collections", "configs")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", PACKAGES)
def test_functions_are_at_most_60_lines_unless_they_say_why(package):
    long = []
    for module, path in MODULES.items():
        if module.split(".")[0] != package:
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                reason = "must be one piece" in (ast.get_docstring(node) or "")
                if lines > MAX_FUNCTION_LINES and not reason:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert not long, "\n".join(long)
