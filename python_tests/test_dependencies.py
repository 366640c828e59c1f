"""Runtime dependencies are declared: no module of the package imports something a plain install
(``pip install fgp_ext``, no extras) does not bring, except optional packages imported inside a
function that turns their absence into a clear message."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fgp_ext"

#: Import name of each distribution in ``[project] dependencies`` (a new dependency must be added
#: here, so that the test knows what it installs).
DIST_MODULES = {"torch": "torch", "numpy": "numpy", "tqdm": "tqdm"}

#: Optional packages (extras) and why they may be imported: each only inside a function, in a
#: ``try`` whose ``except ImportError`` names the package (a warning or an ImportError telling how to
#: install it), so that a plain install runs everything else.
OPTIONAL = {
    "matplotlib": "the plots of `fgp run` (extra `plot`); without it the run warns and skips them",
    "torch_geometric": "ArchBatch.to_pyg / PyG interop (extra `test`); without it a clear ImportError",
}


def _runtime_modules() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    out = set()
    for spec in meta["project"]["dependencies"]:
        dist = re.match(r"[A-Za-z0-9_.-]+", spec).group(0).lower().replace("-", "_")
        assert dist in DIST_MODULES, f"declared dependency {dist!r}: add its import name to DIST_MODULES"
        out.add(DIST_MODULES[dist])
    return out


def _imports(tree: ast.AST):
    """``(top-level module name, node, enclosing nodes)`` of every absolute import of ``tree``,
    at module level or inside functions, except those under ``if TYPE_CHECKING``."""
    def walk(node, parents):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                for a in child.names:
                    yield a.name.partition(".")[0], child, parents
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child.module.partition(".")[0], child, parents
            yield from walk(child, parents + [child])
    yield from walk(tree, [])


def _modules():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20, "the package's modules were not found"
    return files


def _guarded(node, parents, name: str) -> bool:
    """Inside a function, in the body of a ``try`` that catches ImportError (or
    ModuleNotFoundError) with a handler that names ``name``."""
    if not any(isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)) for p in parents):
        return False
    for i, p in enumerate(parents):
        if not isinstance(p, ast.Try):
            continue
        inside_body = (parents[i + 1] if i + 1 < len(parents) else node) in p.body
        for h in p.handlers:
            caught = ast.unparse(h.type) if h.type is not None else ""
            if inside_body and ("ImportError" in caught or "ModuleNotFoundError" in caught) \
                    and name in ast.unparse(h):
                return True
    return False


def test_every_import_is_declared_or_guarded():
    allowed = set(sys.stdlib_module_names) | {"fgp_ext", "__future__"} | _runtime_modules()
    undeclared, unguarded = [], []
    for path in _modules():
        for name, node, parents in _imports(ast.parse(path.read_text())):
            where = f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
            if name in allowed:
                continue
            if name in OPTIONAL:
                if not _guarded(node, parents, name):
                    unguarded.append(where)
                continue
            undeclared.append(where)
    assert not undeclared, ("imports of packages a plain install does not bring (declare them in "
                            f"pyproject.toml or make them optional): {undeclared}")
    assert not unguarded, ("optional packages imported outside a function, or without an "
                           f"'except ImportError' that names them: {unguarded}")


def test_the_checker_sees_local_and_unguarded_imports():
    """The walk finds imports inside functions and methods, and the guard check refuses a bare
    function-level import of an optional package (so the test above can fail)."""
    tree = ast.parse("import os\n"
                     "class A:\n    def f(self):\n        import scipy.stats\n"
                     "def g():\n    import matplotlib\n"
                     "def h():\n    try:\n        import matplotlib\n    except ImportError:\n"
                     "        raise ImportError('pip install matplotlib')\n"
                     "from typing import TYPE_CHECKING\n"
                     "if TYPE_CHECKING:\n    import pandas\n")
    found = [(name, node.lineno, _guarded(node, parents, name)) for name, node, parents in _imports(tree)]
    assert found == [("os", 1, False), ("scipy", 4, False), ("matplotlib", 6, False), ("matplotlib", 9, True),
                     ("typing", 12, False)]


def test_scipy_is_not_a_runtime_dependency():
    """scipy comes with the `test` extra only; the rank vote ranks with fgp_ext.metrics.rankdata."""
    assert "scipy" not in _runtime_modules()
    offenders = [f"{p.relative_to(ROOT)}:{node.lineno}" for p in _modules()
                 for name, node, _ in _imports(ast.parse(p.read_text())) if name == "scipy"]
    assert not offenders, offenders


@pytest.mark.parametrize("name", sorted(OPTIONAL))
def test_optional_packages_are_extras(name):
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = [re.match(r"[A-Za-z0-9_.-]+", s).group(0).lower().replace("-", "_")
              for specs in meta["project"]["optional-dependencies"].values() for s in specs]
    assert name in extras and name not in _runtime_modules()
