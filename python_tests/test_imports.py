"""The package's import structure: layers without cycles, lazy top-level names, the ops importable
without the pipeline, the data layer importable without torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fgp_ext"

#: Each module's layer (longest matching prefix wins). A module imports only modules of its own
#: layer or below; the order reads sparse/data < ops < graph < encoders < train < cli.
LAYERS = {
    "fgp_ext._": 0,            # private utilities (atomic writes, argument checks): stdlib/numpy only
    "fgp_ext.sparse": 0,
    "fgp_ext.metrics": 0,
    "fgp_ext.data": 0,         # numpy only (checked below without torch)
    "fgp_ext.reference": 1,
    "fgp_ext.ops": 1,
    "fgp_ext.graph": 2,
    "fgp_ext.levels": 2,
    "fgp_ext.surrogate": 2,
    "fgp_ext.encoders": 3,
    "fgp_ext.encoders.narformer": 3,
    "fgp_ext.encoders.narformer_tokens": 3,
    "fgp_ext.networks": 3,
    "fgp_ext.proxies": 4,
    "fgp_ext.latency": 4,
    "fgp_ext.latency_model": 4,
    "fgp_ext.latency_features": 4,
    "fgp_ext.train": 4,
    "fgp_ext.cli": 5,
    "fgp_ext.__main__": 5,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imported(path: Path, name: str, modules: dict) -> set[str]:
    """Every fgp_ext module ``path`` imports, at module level or inside functions (imports under
    ``if TYPE_CHECKING`` excepted): a function-local import is still a dependency."""
    tree = ast.parse(path.read_text())
    type_only = {id(n) for node in ast.walk(tree)
                 if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                 for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    return {m for m in found if m in modules and m != name}


def _layer(name: str) -> int | None:
    best = max((p for p in LAYERS if name == p or name.startswith(p if p.endswith("_") else p + ".")),
               key=len, default=None)
    return None if best is None else LAYERS[best]


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return {name: _imported(path, name, modules) for name, path in modules.items()}


def test_every_module_has_a_layer(graph):
    unplaced = sorted(m for m in graph if m != "fgp_ext" and _layer(m) is None)
    assert not unplaced, f"place these modules in LAYERS: {unplaced}"


def test_no_module_imports_a_higher_layer(graph):
    bad = [f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
           for m, deps in graph.items() if m != "fgp_ext"
           for d in deps if d != "fgp_ext" and _layer(d) is not None and _layer(d) > _layer(m)]
    assert not bad, "\n".join(bad)


def test_the_import_graph_has_no_cycle(graph):
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    edges = {m: {d for d in deps if not m.startswith(d + ".") and d != "fgp_ext"} for m, deps in graph.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycle = path[path.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_the_package_root_imports_nothing_eagerly(graph):
    assert graph["fgp_ext"] == set()


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_ops_loads_the_ops_only():
    out = _run("import sys, fgp_ext.ops\n"
               "print(sorted(m for m in sys.modules if m.startswith('fgp_ext')))\n"
               "assert 'fgp_ext.train' not in sys.modules")
    loaded = set(eval(out))
    assert loaded <= {"fgp_ext", "fgp_ext.sparse", "fgp_ext.reference"} | {m for m in loaded if
                                                                             m.startswith("fgp_ext.ops")}, loaded


def test_lazy_names_resolve():
    out = _run("import sys, fgp_ext\n"
               "assert 'fgp_ext.graph' not in sys.modules\n"
               "print(fgp_ext.collate.__module__, fgp_ext.ArchGraph.__module__, fgp_ext.load.__module__,"
               " fgp_ext.__version__, 'fgp_ext.graph' in sys.modules)\n"
               "try:\n    fgp_ext.no_such_name\nexcept AttributeError as e:\n    print('AttributeError', e)")
    assert out.split("\n")[0].split() == ["fgp_ext.graph", "fgp_ext.data.arch", "fgp_ext.data.formats",
                                          __import__("fgp_ext").__version__, "True"]
    assert "no_such_name" in out


def test_data_layer_works_without_torch(tmp_path):
    """fgp_ext.data promises numpy only: with torch made unimportable it loads the embedded NB201
    table and a JSONL file."""
    jsonl = tmp_path / "two.jsonl"
    jsonl.write_text('{"ops": ["input", "conv3x3", "output"], "edges": [[0, 1], [1, 2]], "acc": 0.5}\n'
                     '{"ops": ["input", "output"], "edges": [[0, 1]], "acc": 0.7}\n')
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from fgp_ext.data.formats import load\n"
        "ds = load('nb201')\n"
        f"other = load({str(jsonl)!r})\n"
        "print(len(ds), len(other), 'torch' in sys.modules)\n"
    )
    assert _run(code).split() == ["15625", "2", "False"]
