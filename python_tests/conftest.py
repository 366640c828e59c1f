"""Shared strategies and helpers: random CSR structures and random DAG batches."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import fgp_ext  # noqa: F401  (registers torch.ops.fgp)

# scripts/check_wheel.sh runs this suite against an installed wheel: make sure that is what runs.
if os.environ.get("FGP_TEST_INSTALLED") == "1":
    _source_package = Path(__file__).resolve().parents[1] / "fgp_ext"
    if Path(fgp_ext.__file__).resolve().parent == _source_package:
        raise RuntimeError(f"FGP_TEST_INSTALLED=1 but fgp_ext was imported from the source tree ({_source_package})")

# Hypothesis' too-slow health check times example generation: on a busy 2-core machine it fails
# tests whose properties hold. Speed is the benchmarks' business, not the tests'.
# Deterministic by default: every run draws the same examples (derandomize, no example database).
# FGP_HYPOTHESIS=explore draws fresh examples each run (and replays stored failures) to hunt bugs.
settings.register_profile("fgp", suppress_health_check=[HealthCheck.too_slow], deadline=None,
                          derandomize=True, database=None)
settings.register_profile("explore", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("explore" if os.environ.get("FGP_HYPOTHESIS") == "explore" else "fgp")


@pytest.fixture(autouse=True)
def seeded_torch():
    """Every test starts from torch seed 0, whatever ran before it, and leaves the global RNG as it
    found it: unseeded ``torch.randn`` in a test is then reproducible on its own."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """Every test leaves torch's intra-op thread count as it found it: the CLI sets it (``--threads``,
    default 1), which would otherwise slow every later test in the process."""
    old = torch.get_num_threads()
    yield
    if torch.get_num_threads() != old:
        torch.set_num_threads(old)


def random_csr(rng: np.random.Generator, rows: int, cols: int, max_deg: int = 4):
    """A random CSR (indptr, index) with possibly empty rows and repeated columns."""
    deg = rng.integers(0, max_deg + 1, size=rows)
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(deg, out=indptr[1:])
    index = rng.integers(0, max(cols, 1), size=int(indptr[-1])) if cols > 0 else np.zeros(0, np.int64)
    return torch.from_numpy(indptr), torch.from_numpy(index.astype(np.int64))


@st.composite
def csr_problems(draw, max_rows=12, max_cols=10, max_feat=5):
    rows = draw(st.integers(0, max_rows))
    cols = draw(st.integers(1, max_cols))
    feat = draw(st.integers(1, max_feat))
    seed = draw(st.integers(0, 2**31 - 1))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    rng = np.random.default_rng(seed)
    indptr, index = random_csr(rng, rows, cols)
    x = torch.from_numpy(rng.standard_normal((cols, feat))).to(dtype)
    w = torch.from_numpy(rng.standard_normal(index.numel())).to(dtype)
    return x, index, indptr, w


def random_dag(rng: np.random.Generator, n: int, p: float = 0.3):
    """Edges (src, dst) of a random DAG on n nodes: edges only go from a lower to a higher position
    of a random permutation, so node ids are not in topological order."""
    perm = rng.permutation(n)
    edges = [(int(perm[i]), int(perm[j])) for i in range(n) for j in range(i + 1, n) if rng.random() < p]
    return edges


@st.composite
def dag_batches(draw, max_graphs=6, max_nodes=9, num_ops=5):
    """A list of (ops, edges, sources) graphs: single nodes, isolated nodes, several sources/sinks."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    b = draw(st.integers(1, max_graphs))
    graphs = []
    for _ in range(b):
        n = int(rng.integers(1, max_nodes + 1))
        edges = random_dag(rng, n, p=float(rng.uniform(0.1, 0.6)))
        ops = rng.integers(0, num_ops, size=n).tolist()
        has_pred = {d for _, d in edges}
        sources = [v for v in range(n) if v not in has_pred]
        graphs.append((ops, edges, sources))
    return graphs


def batch_tensors(graphs):
    """Batch-level tensors (op, indptr, index, node_ptr, is_source) for a list of (ops, edges, sources)."""
    from fgp_ext import ArchGraph, collate

    arch = [ArchGraph(ops, np.array(edges, dtype=np.int64).T.reshape(2, -1), sources=tuple(src))
            for ops, edges, src in graphs]
    b = collate(arch)
    return b


@pytest.fixture(params=[1, 2], ids=["threads1", "threads2"])
def num_threads(request):
    old = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny training batches: one intra-op thread is fastest and immune to oversubscribed CI cores."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def assert_csr_equal(a, b, what: str = "csr") -> None:
    """Two :class:`~fgp_ext.sparse.CSR` hold the same tensors (perm and transpose included)."""
    assert torch.equal(a.indptr, b.indptr), f"{what}.indptr"
    assert torch.equal(a.index, b.index), f"{what}.index"
    assert (a.perm is None) == (b.perm is None), f"{what}.perm"
    if a.perm is not None:
        assert torch.equal(a.perm, b.perm), f"{what}.perm"
    assert (a.transpose is None) == (b.transpose is None), f"{what}.transpose"
    if a.transpose is not None:
        assert_csr_equal(a.transpose, b.transpose, what + ".transpose")
