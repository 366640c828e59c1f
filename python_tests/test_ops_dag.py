"""topo_levels and flow_surrogate against plain-Python references."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from conftest import batch_tensors, dag_batches, random_dag
from fgp_ext.sparse import CSR
from fgp_ext import ArchGraph, batch_from_arrays, collate, ops
from fgp_ext import reference as ref
from fgp_ext.surrogate import flow_params

SETTINGS = settings(max_examples=60, deadline=None)


def levels_python(graphs):
    """Longest path from a source, per graph, by plain recursion."""
    out = []
    for ops_, edges, _ in graphs:
        preds = {v: [s for s, d in edges if d == v] for v in range(len(ops_))}
        memo = {}

        def lv(v):
            if v not in memo:
                memo[v] = max((lv(p) + 1 for p in preds[v]), default=0)
            return memo[v]

        out.extend(lv(v) for v in range(len(ops_)))
    return torch.tensor(out, dtype=torch.int64)


@SETTINGS
@given(dag_batches())
def test_topo_levels_matches_python(graphs):
    b = batch_tensors(graphs)
    want = levels_python(graphs)
    assert torch.equal(b.level, want)
    assert torch.equal(ops.topo_levels(b.in_csr, b.node_ptr), want)
    assert torch.equal(ref.topo_levels(b.in_csr.indptr, b.in_csr.index, b.node_ptr), want)
    # Every edge goes from a lower to a higher level.
    dst = ref.csr_row_ids(b.in_csr.indptr)
    assert bool((b.level[b.in_csr.index] < b.level[dst]).all())


def _surrogate_inputs(graphs, dtype, k=6, num_ops=5, std=0.5, seed=3):
    b = batch_tensors(graphs)
    r, P, W = flow_params(num_ops, k, std, seed, dtype)
    return b, r, P, W


@SETTINGS
@given(dag_batches())
def test_flow_surrogate_matches_per_graph_reference(graphs):
    for dtype in (torch.float32, torch.float64):
        b, r, P, W = _surrogate_inputs(graphs, dtype)
        want = ref.flow_surrogate_per_graph(*zip(*graphs), r, P, W, alpha=0.5)
        args = (b.op, b.in_csr.indptr, b.in_csr.index, b.node_ptr, b.is_source, r, P, W, 0.5)
        atol = 1e-5 if dtype == torch.float32 else 1e-12
        by_graph = _surrogate(*args, schedule="graph")
        by_level = _surrogate(*args, schedule="level")
        assert torch.equal(_surrogate(*args, schedule="graph", transpose=b.out_csr), by_graph)
        assert by_graph.dtype == dtype and by_graph.shape == (len(graphs), 6)
        torch.testing.assert_close(by_graph, want, rtol=atol, atol=atol)
        # The two schedules do the same arithmetic per node: bitwise identical.
        assert torch.equal(by_graph, by_level)
        torch.testing.assert_close(ref.flow_surrogate_batched(*args), want, rtol=atol, atol=atol)


def test_flow_surrogate_hand_worked_chain():
    # 0 -> 1 -> 2, alpha = 0.5, W = 0: f(o, m) = m / 2 whatever the ops.
    k = 3
    r = torch.tensor([1.0, 2.0, 4.0])
    P = torch.randn(2, k)
    W = torch.zeros(2 * k, k)
    b = collate([ArchGraph([0, 1, 1], [[0, 1], [1, 2]])])
    out = ops.flow_surrogate(b.op, b.in_csr, b.node_ptr, b.is_source, r, P, W, 0.5)
    # forward: h1 = r/2, h2 = r/4; backward: h1 = h2/2 = r/8, h0 = h1/2 = r/16.
    torch.testing.assert_close(out, (r / 16).unsqueeze(0))


def test_flow_surrogate_two_sources_sum_and_isolated_graph():
    k = 4
    r, P, W = flow_params(3, k, 0.3, seed=0)
    # Two inputs feeding one node (DARTS-like), plus a single-node graph.
    g1 = ArchGraph([0, 0, 2], [[0, 1], [2, 2]], sources=(0, 1))
    g2 = ArchGraph([1], [])
    b = collate([g1, g2])
    out = ops.flow_surrogate(b.op, b.in_csr, b.node_ptr, b.is_source, r, P, W, 0.5)
    want = ref.flow_surrogate_per_graph([[0, 0, 2], [1]], [[(0, 2), (1, 2)], []], [[0, 1], [0]], r, P, W)
    torch.testing.assert_close(out, want)
    # A graph that is a lone source keeps r.
    torch.testing.assert_close(out[1], r)


def test_flow_params_reproduce_global_numpy_draws():
    # the authors call np.random.seed(42) and draw from the global stream; RandomState(42) is that
    # stream without touching the global state of the other tests
    rs = np.random.RandomState(42)
    r = rs.uniform(0, 1, 7)
    rs.uniform(0, 1, 7)
    P = rs.normal(0, 0.1, (7, 7))
    W = rs.normal(0, 0.1, (14, 7))
    before = np.random.get_state()[1].copy()
    got = flow_params(7, 7, 0.1, seed=42)
    assert np.array_equal(np.random.get_state()[1], before)    # flow_params leaves the global stream alone
    for a, b_ in zip(got, (r, P, W)):
        assert a.dtype == torch.float32
        assert torch.equal(a, torch.from_numpy(b_.astype(np.float32)))


def test_flow_surrogate_large_dag_schedules_agree(num_threads):
    rng = np.random.default_rng(5)
    edges = random_dag(rng, 300, p=0.02)
    graph = ArchGraph(rng.integers(0, 4, 300), np.array(edges).T)
    b = collate([graph, graph, ArchGraph([0], [])])
    r, P, W = flow_params(4, 8, 0.1, seed=1, dtype=torch.float64)
    args = (b.op, b.in_csr.indptr, b.in_csr.index, b.node_ptr, b.is_source, r, P, W, 0.5)
    a = _surrogate(*args, schedule="graph")
    assert torch.equal(a, _surrogate(*args, schedule="level"))
    assert torch.equal(a[0], a[1])
    want = ref.flow_surrogate_per_graph([graph.ops.tolist()], [edges], [np.flatnonzero(b.is_source[:300]).tolist()],
                                        r, P, W)
    torch.testing.assert_close(a[:1], want)


def test_surrogate_deterministic_across_threads():
    rng = np.random.default_rng(9)
    graphs = [ArchGraph(rng.integers(0, 5, 12), np.array(random_dag(rng, 12, 0.3) or [(0, 1)]).T)
              for _ in range(500)]
    b = collate(graphs)
    r, P, W = flow_params(5, 7, 0.1, seed=0)
    args = (b.op, b.in_csr.indptr, b.in_csr.index, b.node_ptr, b.is_source, r, P, W, 0.5)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [_surrogate(*args, schedule=s) for s in ("graph", "level")]
        torch.set_num_threads(2)
        two = [_surrogate(*args, schedule=s) for s in ("graph", "level")]
    finally:
        torch.set_num_threads(old)
    for a in one + two:
        assert torch.equal(a, one[0])


def test_compile_and_fake_kernels():
    b = collate([ArchGraph([0, 1, 2], [[0, 1], [1, 2]]), ArchGraph([0, 2], [[0], [1]])])
    r, P, W = flow_params(3, 4, 0.1, seed=0)

    def fn(op, indptr, index, node_ptr, is_source, r, P, W):
        lv = ops.topo_levels(CSR(indptr, index), node_ptr)
        return ops.flow_surrogate(op, CSR(indptr, index), node_ptr, is_source, r, P, W, 0.5), lv

    args = (b.op, b.in_csr.indptr, b.in_csr.index, b.node_ptr, b.is_source, r, P, W)
    got = torch.compile(fn, fullgraph=True, backend="aot_eager")(*args)
    want = fn(*args)
    torch.testing.assert_close(got[0], want[0])
    assert torch.equal(got[1], want[1])
    torch.library.opcheck(torch.ops.fgp.topo_levels, (b.in_csr.indptr, b.in_csr.index, b.node_ptr))
    torch.library.opcheck(torch.ops.fgp.flow_surrogate, (*args, 0.5, "auto"))


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------
def _cycle_batch():
    # graph 0 fine; graph 1 has the cycle 3 -> 4 -> 5 -> 3 (global ids)
    op = torch.tensor([0, 1, 1, 0, 1, 1])
    edges = torch.tensor([[0, 1, 3, 4, 5], [1, 2, 4, 5, 3]])
    return op, edges, torch.tensor([0, 3, 6])


def test_cycle_names_the_graph():
    op, edges, node_ptr = _cycle_batch()
    with pytest.raises(RuntimeError, match=r"graph 1 .*cycle"):
        batch_from_arrays(op, edges, node_ptr)
    # flow_surrogate reports it too, on both schedules, without the batch helper.
    order = torch.sort(edges[1], stable=True).indices
    src, dst = edges[0, order], edges[1, order]
    indptr = torch.zeros(7, dtype=torch.int64)
    indptr[1:] = torch.cumsum(torch.bincount(dst, minlength=6), 0)
    r, P, W = flow_params(2, 3, 0.1)
    is_source = torch.tensor([1, 0, 0, 1, 0, 0], dtype=torch.bool)
    for schedule in ("graph", "level"):
        with pytest.raises(RuntimeError, match=r"graph 1 .*cycle"):
            ops.flow_surrogate(op, CSR(indptr, src), node_ptr, is_source, r, P, W, 0.5, schedule)
    with pytest.raises(RuntimeError, match=r"graph 1 .*cycle"):
        ref.topo_levels(indptr, src, node_ptr)


def test_self_loop_is_a_cycle():
    with pytest.raises(RuntimeError, match="cycle"):
        ops.topo_levels(CSR(torch.tensor([0, 1]), torch.tensor([0])))


def test_edge_across_graphs_is_an_error():
    # node 3 (graph 1) has predecessor 0 (graph 0)
    with pytest.raises(RuntimeError, match="outside the graph"):
        ops.topo_levels(CSR(torch.tensor([0, 0, 0, 0, 1]), torch.tensor([0])), torch.tensor([0, 3, 4]))


def _surrogate(op, indptr, index, *rest, **kw):
    """The wrapper called with the raw op's leading arguments (op, indptr, index, ...)."""
    return ops.flow_surrogate(op, CSR(indptr, index), *rest, **kw)


def _good_args():
    b = collate([ArchGraph([0, 1], [[0], [1]])])
    r, P, W = flow_params(2, 3, 0.1)
    return dict(op=b.op, indptr=b.in_csr.indptr, index=b.in_csr.index, node_ptr=b.node_ptr, is_source=b.is_source,
                r=r, P=P, W=W)


FLOW_BAD = [
    ("op out of range", dict(op=torch.tensor([0, 2])), "op id out of range"),
    ("negative op", dict(op=torch.tensor([-1, 0])), "op id out of range"),
    ("op dtype", dict(op=torch.tensor([0.0, 1.0])), "int64"),
    ("W shape", dict(W=torch.zeros(5, 3)), "W must have shape"),
    ("P width", dict(P=torch.zeros(2, 4)), "P must have shape"),
    ("dtype mix", dict(r=torch.zeros(3, dtype=torch.float64)), "share a dtype"),
    ("int r", dict(r=torch.zeros(3, dtype=torch.int64)), "float32 or float64"),
    ("is_source dtype", dict(is_source=torch.tensor([1, 0])), "is_source"),
    ("node_ptr end", dict(node_ptr=torch.tensor([0, 1])), "node_ptr"),
    ("node_ptr decreasing", dict(node_ptr=torch.tensor([0, 3, 2])), "node_ptr"),
    ("indptr length", dict(indptr=torch.tensor([0, 1])), r"N \+ 1"),
    ("index out of range", dict(index=torch.tensor([7])), "outside|out of range"),
    ("bad successor csr", dict(t_indptr=torch.tensor([0, 1, 1]), t_index=torch.tensor([5])), "t_index out of range"),
    ("half successor csr", dict(t_indptr=torch.tensor([0, 1, 1])), "both t_indptr and t_index"),
]


@pytest.mark.parametrize("schedule", ["graph", "level"])
@pytest.mark.parametrize("name,override,message", FLOW_BAD, ids=[c[0] for c in FLOW_BAD])
def test_flow_surrogate_bad_input(name, override, message, schedule):
    args = {**_good_args(), **override}
    t = {key: args.pop(key) for key in ("t_indptr", "t_index") if key in args}
    with pytest.raises(RuntimeError) as info:
        if t:
            torch.ops.fgp.flow_surrogate(*args.values(), 0.5, schedule, t.get("t_indptr"), t.get("t_index"))
        else:
            _surrogate(**args, schedule=schedule)
    assert re.search(message, str(info.value)), str(info.value)


def test_flow_surrogate_bad_alpha_and_schedule():
    with pytest.raises(RuntimeError, match="alpha"):
        _surrogate(**_good_args(), alpha=1.5)
    with pytest.raises(RuntimeError, match="schedule"):
        _surrogate(**_good_args(), schedule="fastest")


def test_empty_batch():
    b = batch_from_arrays(torch.zeros(0, dtype=torch.int64), torch.zeros(2, 0, dtype=torch.int64),
                          torch.zeros(1, dtype=torch.int64))
    r, P, W = flow_params(2, 3, 0.1)
    out = ops.flow_surrogate(b.op, b.in_csr, b.node_ptr, b.is_source, r, P, W)
    assert out.shape == (0, 3)
