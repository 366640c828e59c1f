"""ArchBatch structure: both CSRs, the undirected CSR, sources and levels."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings

from conftest import assert_csr_equal, batch_tensors, dag_batches


@settings(max_examples=40, deadline=None)
@given(dag_batches())
def test_csrs_and_undirected_csr_match_edge_lists(graphs):
    b = batch_tensors(graphs)
    offsets = b.node_ptr[:-1].tolist()
    want_pred, want_succ = {}, {}
    for off, (ops_, edges, _) in zip(offsets, graphs):
        for v in range(len(ops_)):
            want_pred[off + v] = []
            want_succ[off + v] = []
        for s, d in edges:
            want_pred[off + d].append(off + s)
            want_succ[off + s].append(off + d)
    csr, rows = b.undirected_csr, b.undirected_rows
    assert csr.index.numel() == 2 * b.num_edges
    for v in range(b.num_nodes):
        preds = b.in_csr.index[b.in_csr.indptr[v]:b.in_csr.indptr[v + 1]].tolist()
        succs = b.out_csr.index[b.out_csr.indptr[v]:b.out_csr.indptr[v + 1]].tolist()
        assert sorted(preds) == sorted(want_pred[v])
        assert sorted(succs) == sorted(want_succ[v])
        # undirected row: predecessors (in_csr order) then successors (out_csr order)
        assert csr.index[csr.indptr[v]:csr.indptr[v + 1]].tolist() == preds + succs
        assert bool((rows[csr.indptr[v]:csr.indptr[v + 1]] == v).all())
    # sources: declared = nodes without predecessors here
    assert torch.equal(b.is_source, b.in_csr.indptr.diff() == 0)
    # out_csr.perm maps back to in_csr entries of the same edge
    if b.num_edges:
        assert torch.equal(b.in_csr.index[b.out_csr.perm], b.out_rows)


def test_select_keeps_undirected_structure():
    rng = np.random.default_rng(0)
    from conftest import random_dag
    from fgp_ext import ArchGraph, collate

    graphs = [ArchGraph(rng.integers(0, 3, n), np.array(random_dag(rng, n, 0.4) or [(0, 1)]).T.reshape(2, -1))
              for n in rng.integers(2, 9, 20)]
    full = collate(graphs)
    ids = [5, 2, 2, 17]
    sub, ref = full.select(ids), collate([graphs[i] for i in ids])
    assert_csr_equal(sub.undirected_csr, ref.undirected_csr)


@settings(max_examples=25, deadline=None)
@given(dag_batches(max_graphs=6))
def test_select_without_csr_perms_matches_the_compiled_select(graphs):
    """A hand-built batch without CSR permutations takes the plain-tensor select; nodes, rows,
    indices, levels and sources equal those of the compiled select_graphs path."""
    from dataclasses import replace

    from fgp_ext.sparse import CSR

    b = batch_tensors(graphs)
    bare = replace(b, in_csr=CSR(b.in_csr.indptr, b.in_csr.index), out_csr=CSR(b.out_csr.indptr, b.out_csr.index))
    ids = torch.tensor([len(graphs) - 1, 0, len(graphs) - 1])
    got, want = bare.select(ids), b.select(ids)
    assert got.in_csr.perm is None and got.out_csr.perm is None
    for name in ("op", "node_ptr", "graph", "level", "is_source"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    for csr in ("in_csr", "out_csr"):
        assert torch.equal(getattr(got, csr).indptr, getattr(want, csr).indptr)
        assert torch.equal(getattr(got, csr).index, getattr(want, csr).index)
