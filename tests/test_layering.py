"""The architecture, written down as tests: which code may import what.

cbert_core imports no Streamlit; views import no torch; pages import neither torch nor transformers;
each cbert_core package imports only the packages below it (its docstring says which); no import
cycles, no private names imported across modules, no module that only re-exports others, and no
import hidden inside a function except the optional heavy extras (each with a comment saying so).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE = {"cbert_core.errors", "cbert_core.progress", "cbert_core.records"}
# What each cbert_core package may import besides itself and the base modules (as its docstring says).
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "model": set(),
    "text": set(),
    "serving": {"model"},
    "run": {"model", "text", "serving"},
    "analyses": {"run", "model", "text", "serving"},
    "training": {"analyses", "run", "model", "text", "serving", "corpus.collection"},
    "corpus": {"analyses", "run", "model", "text", "serving", "views.export"},
    # Evaluation runs a collection through the batch engine (corpus) and reads the analyses' records.
    "evaluation": {"corpus", "analyses", "run", "model", "text", "serving.speed"},
    "views": set(),
}
# Imports allowed inside a function: optional or slow-to-import extras, imported only when asked for.
LAZY_EXTRAS = {"ray", "ray.data", "umap"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def imports(path: Path) -> list[tuple[str, ast.AST, bool]]:
    """(imported module, node, inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, ast.AST, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child, inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                found.append((child.module, child, inner))
                found.extend((f"{child.module}.{alias.name}", child, inner) for alias in child.names)
            visit(child, inner)

    visit(tree, False)
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def package_of(module: str) -> str:
    """'base' for the base modules, else the cbert_core package a module belongs to."""
    if module in BASE or module == "cbert_core":
        return "base"
    return module.split(".")[1]


def cbert_modules() -> dict[str, Path]:
    return {module_name(path): path for path in python_files("cbert_core")}


def test_cbert_core_never_imports_streamlit() -> None:
    offenders = [f"{path.name}: {name}" for path in python_files("cbert_core") for name, _node, _nested in imports(path)
                 if top(name) == "streamlit"]
    assert offenders == []


def test_views_import_no_torch() -> None:
    offenders = [f"{path.name}: {name}" for path in python_files("cbert_core/views")
                 for name, _node, _nested in imports(path) if top(name) in {"torch", "transformers", "bertviz"}]
    assert offenders == []


def test_pages_import_neither_torch_nor_transformers() -> None:
    offenders = [f"{path.name}: {name}" for path in python_files("pages") for name, _node, _nested in imports(path)
                 if top(name) in {"torch", "transformers"}]
    assert offenders == []


def test_each_package_imports_only_what_its_docstring_allows() -> None:
    known = cbert_modules()
    offenders = []
    for module, path in known.items():
        if module in {"cbert_core", "cbert_core.__main__"}:
            continue
        package = package_of(module)
        allowed = ALLOWED[package] | {package}
        for name, _node, _nested in imports(path):
            if name not in known or name in BASE or name == module:
                continue
            target = package_of(name)
            dotted = ".".join(name.split(".")[1:3])
            if target not in allowed and dotted not in allowed and target != "base":
                offenders.append(f"{module} imports {name}")
    assert offenders == []


def test_package_docstrings_say_what_they_may_import() -> None:
    for package in ALLOWED:
        if package == "base":
            continue
        doc = ast.get_docstring(ast.parse((ROOT / "cbert_core" / package / "__init__.py").read_text()))
        assert doc and "May import" in doc, f"cbert_core/{package}/__init__.py must say what it may import"


def test_no_import_cycles_in_cbert_core() -> None:
    known = cbert_modules()
    graph = {module: {name for name, _node, _nested in imports(path) if name in known and name != module}
             for module, path in known.items()}
    state: dict[str, int] = {}  # 1 visiting, 2 done
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                cycles.append(" -> ".join(stack[stack.index(other):] + [other]))
            elif other not in state:
                visit(other, stack + [other])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


@pytest.mark.parametrize("folder", ["cbert_core", "ui", "pages", "bench", "tests"])
def test_no_private_name_is_imported_across_modules(folder: str) -> None:
    offenders = []
    for path in python_files(folder):
        for _name, node, _nested in imports(path):
            if isinstance(node, ast.ImportFrom) and node.module and top(node.module) in {"cbert_core", "ui"}:
                offenders += [f"{path.name}: {node.module}.{alias.name}" for alias in node.names
                              if alias.name.startswith("_")]
    assert sorted(set(offenders)) == []


def test_no_module_only_re_exports_others() -> None:
    offenders = []
    for path in python_files("cbert_core") + python_files("ui"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        body = [node for node in tree.body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
        names = [node for node in body if isinstance(node, (ast.Import, ast.ImportFrom))]
        exported = [node for node in body if isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)]
        if names and len(names) + len(exported) == len(body) and path.name != "__main__.py":
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


@pytest.mark.parametrize("folder", ["cbert_core", "ui", "pages"])
def test_no_import_hides_inside_a_function_but_the_optional_extras(folder: str) -> None:
    offenders = []
    for path in python_files(folder):
        lines = path.read_text(encoding="utf-8").splitlines()
        for name, node, nested in imports(path):
            if not nested or isinstance(node, ast.ImportFrom) and name != node.module:
                continue
            said = " ".join(lines[max(0, node.lineno - 3):node.lineno])  # the line or the two above it
            if name not in LAZY_EXTRAS or "#" not in said:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name} inside a function")
    assert offenders == []
