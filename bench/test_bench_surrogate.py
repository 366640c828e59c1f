"""The FGP flow surrogate: ``fgp_ext.ops.flow_surrogate`` against the plain-PyTorch references of
:mod:`fgp_ext.reference`, measured side by side in one run.

NB201 (all 15,625 cells collated into one batch; k=7, std=0.1, alpha=0.5, seed 0, vocabulary of 7)
  fgp.flow_surrogate          schedules "auto", "graph" and "level"
  flow_surrogate_batched      the batched level-by-level pure-PyTorch version, all cells
  flow_surrogate_per_graph    the per-graph Python loop (authors' style); far too slow for all cells,
                              so it is timed on the first PER_GRAPH_SUBSET cells and every row of the
                              table is compared per graph (median / number of graphs in the call).

Large random DAGs (a few graphs per batch; 10^3 .. 10^5 nodes, depth 10 .. 1000): schedule "graph"
vs "level" vs "auto" vs the batched reference.

Collate: time to turn the 15,625 NB201 ``ArchGraph`` objects into an ``ArchBatch``.

Every timed output is checked against a reference (allclose) first, so nothing times garbage.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchutil import record, run_bench

import fgp_ext
from fgp_ext import ops, reference
from fgp_ext.surrogate import flow_params

K, STD, ALPHA, SEED, NUM_OPS = 7, 0.1, 0.5, 0, 7
PER_GRAPH_SUBSET = 200


def _params(device):
    return tuple(t.to(device) for t in flow_params(NUM_OPS, K, STD, SEED))


def _args(batch):
    return (batch.op, batch.in_csr.indptr, batch.in_csr.index, batch.node_ptr, batch.is_source)


def _group(what, device, threads):
    return f"{what} | " + ("cuda" if device == "cuda" else f"cpu {threads} thread(s)")


_CACHE: dict = {}


def _on(device, key, make):
    k = (key, device)
    if k not in _CACHE:
        _CACHE[k] = make()
    return _CACHE[k]


# ----------------------------------------------------------------------------------------------
# NB201: all cells
# ----------------------------------------------------------------------------------------------
NB201_CONTENDERS = {
    "fgp.flow_surrogate(schedule=auto)": "ours",
    "fgp.flow_surrogate(schedule=graph)": "ours-alt",
    "fgp.flow_surrogate(schedule=level)": "ours-alt",
    "reference.flow_surrogate_batched": "reference",
    f"reference.flow_surrogate_per_graph ({PER_GRAPH_SUBSET}-cell subset)": "reference",
}


@pytest.fixture(scope="module")
def nb201_expected(nb201_batch):
    """The batched reference on all cells (float64 params would differ from the float32 draws;
    the reference runs in float32 like the op)."""
    r, P, W = _params("cpu")
    return reference.flow_surrogate_batched(*_args(nb201_batch), r, P, W, ALPHA)


@pytest.mark.parametrize("contender", list(NB201_CONTENDERS))
def test_surrogate_nb201(benchmark, device_threads, nb201_batch, nb201_graphs, nb201_expected, contender):
    device, threads = device_threads
    role = NB201_CONTENDERS[contender]
    batch = _on(device, "nb201", lambda: nb201_batch.to(device))
    r, P, W = _params(device)
    B = batch.num_graphs
    benchmark.group = _group(f"flow_surrogate | NB201 all {B} cells (k={K})", device, threads)
    if contender.startswith("fgp."):
        schedule = contender.split("=")[1].rstrip(")")
        fn = lambda: ops.flow_surrogate(batch.op, batch.in_csr, batch.node_ptr, batch.is_source, r, P, W, ALPHA, schedule)  # noqa: E731
        per, expected = B, nb201_expected
    elif contender == "reference.flow_surrogate_batched":
        fn = lambda: reference.flow_surrogate_batched(*_args(batch), r, P, W, ALPHA)  # noqa: E731
        per, expected = B, nb201_expected
    else:
        sub = nb201_graphs[:PER_GRAPH_SUBSET]
        g_ops = [g.ops.tolist() for g in sub]
        g_edges = [list(zip(g.edges[0].tolist(), g.edges[1].tolist())) for g in sub]
        g_src = [list(g.sources) for g in sub]
        rc, Pc, Wc = _params("cpu")
        fn = lambda: reference.flow_surrogate_per_graph(g_ops, g_edges, g_src, rc, Pc, Wc, ALPHA)  # noqa: E731
        per, expected = PER_GRAPH_SUBSET, nb201_expected[:PER_GRAPH_SUBSET]
    out = fn()
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    benchmark.extra_info.update(graphs_in_call=per, nodes=batch.num_nodes, edges=batch.num_edges)
    run_bench(benchmark, fn, device=device)
    record(benchmark, role=role, contender=contender, per=per, unit="graph")


# ----------------------------------------------------------------------------------------------
# Large random DAGs
# ----------------------------------------------------------------------------------------------
DAGS = {  # name: (total nodes, depth, graphs, mean in-degree)
    "1e3 nodes, depth 10, 4 graphs": (1_000, 10, 4, 3),
    "1e4 nodes, depth 100, 4 graphs": (10_000, 100, 4, 3),
    "1e5 nodes, depth 1000, 4 graphs": (100_000, 1000, 4, 3),
    "1e5 nodes, depth 10, 4 graphs": (100_000, 10, 4, 3),
}


def random_dag_batch(total_nodes: int, depth: int, graphs: int, indeg: int, seed: int = 0):
    """A batch of ``graphs`` random DAGs of ``total_nodes // graphs`` nodes each. Every graph's
    nodes are spread over ``depth`` levels (each level non-empty); a node of level l > 0 gets one
    predecessor from level l-1 (so its longest path is exactly l) and ``indeg - 1`` more from any
    lower level. Level-0 nodes are the sources. Random op ids in [0, 7)."""
    rng = np.random.default_rng(seed)
    n = total_nodes // graphs
    ops_all, src_all, dst_all = [], [], []
    for g in range(graphs):
        lv = np.sort(np.concatenate([np.arange(depth), rng.integers(0, depth, n - depth)]))
        start = np.searchsorted(lv, np.arange(depth + 1))  # first node of every level (and the end)
        nodes = np.arange(n)[lv > 0]
        l = lv[nodes]
        first = start[l - 1] + (rng.random(nodes.size) * (start[l] - start[l - 1])).astype(np.int64)
        extra_dst = np.repeat(nodes, indeg - 1)
        extra_src = (rng.random(extra_dst.size) * start[lv[extra_dst]]).astype(np.int64)
        src = np.concatenate([first, extra_src])
        dst = np.concatenate([nodes, extra_dst])
        keep = np.unique(src * n + dst)  # drop duplicate edges
        src_all.append(keep // n + g * n)
        dst_all.append(keep % n + g * n)
        ops_all.append(rng.integers(0, NUM_OPS, n))
    edges = np.stack([np.concatenate(src_all), np.concatenate(dst_all)])
    node_ptr = np.arange(graphs + 1, dtype=np.int64) * n
    return fgp_ext.batch_from_arrays(torch.from_numpy(np.concatenate(ops_all)), torch.from_numpy(edges),
                                     torch.from_numpy(node_ptr))


DAG_CONTENDERS = {
    "fgp.flow_surrogate(schedule=auto)": "ours",
    "fgp.flow_surrogate(schedule=graph)": "ours-alt",
    "fgp.flow_surrogate(schedule=level)": "ours-alt",
    "reference.flow_surrogate_batched": "reference",
}


@pytest.mark.parametrize("contender", list(DAG_CONTENDERS))
@pytest.mark.parametrize("dag", list(DAGS))
def test_surrogate_dag(benchmark, device_threads, dag, contender):
    device, threads = device_threads
    role = DAG_CONTENDERS[contender]
    batch = _on("cpu", dag, lambda: random_dag_batch(*DAGS[dag]))
    assert int(batch.level.max()) + 1 == DAGS[dag][1]
    batch = _on(device, dag, lambda: batch.to(device))
    r, P, W = _params(device)
    expected = _on(device, ("expected", dag),
                   lambda: reference.flow_surrogate_batched(*_args(batch), r, P, W, ALPHA).cpu())
    benchmark.group = _group(f"flow_surrogate | random DAGs {dag} ({batch.num_edges} edges)", device, threads)
    if contender.startswith("fgp."):
        schedule = contender.split("=")[1].rstrip(")")
        fn = lambda: ops.flow_surrogate(batch.op, batch.in_csr, batch.node_ptr, batch.is_source, r, P, W, ALPHA, schedule)  # noqa: E731
        torch.testing.assert_close(fn().cpu(), expected, rtol=1e-5, atol=1e-6)
        run_bench(benchmark, fn, device=device)
    else:
        fn = lambda: reference.flow_surrogate_batched(*_args(batch), r, P, W, ALPHA)  # noqa: E731
        # seconds per call on the deepest DAG: the warm-up call plus at least one timed round
        run_bench(benchmark, fn, device=device, min_rounds=1, max_rounds=10)
    record(benchmark, role=role, contender=contender)


# ----------------------------------------------------------------------------------------------
# Collate
# ----------------------------------------------------------------------------------------------
def test_collate_nb201(benchmark, nb201_graphs, nb201_expected):
    """``fgp_ext.collate`` of all 15,625 ArchGraphs (CSR both ways, levels, sources) on 2 threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        benchmark.group = f"collate | NB201 all {len(nb201_graphs)} cells | cpu 2 thread(s)"
        batch = run_bench(benchmark, lambda: fgp_ext.collate(nb201_graphs), target=1.5)
        r, P, W = _params("cpu")
        torch.testing.assert_close(ops.flow_surrogate(batch.op, batch.in_csr, batch.node_ptr, batch.is_source, r, P, W, ALPHA), nb201_expected,
                                   rtol=1e-5, atol=1e-6)
        record(benchmark, role="ours", contender="fgp_ext.collate(list of ArchGraph)",
               per=len(nb201_graphs), unit="graph")
    finally:
        torch.set_num_threads(old)


def test_graphs_from_strings_nb201(benchmark, nb201_arch_strs):
    """For context: building the 15,625 ArchGraphs from the NB201 strings (before collate)."""
    from fgp_ext.data.spaces import nb201_from_string as fn
    benchmark.group = f"collate | NB201 all {len(nb201_arch_strs)} cells | cpu 2 thread(s)"
    graphs = run_bench(benchmark, lambda: [fn(s) for s in nb201_arch_strs], target=1.5)
    assert len(graphs) == len(nb201_arch_strs)
    record(benchmark, role="info", contender="strings -> ArchGraph (spaces.nb201_from_string)", per=len(graphs),
           unit="graph")
