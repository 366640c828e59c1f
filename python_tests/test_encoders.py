"""Encoders (GIN, GatedGCN, MLP) on the fgp ops, and ArchBatch.select."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fgp_ext
from fgp_ext import ArchGraph, collate
from fgp_ext.encoders import ENCODERS, GIN, GatedGCN, MLPEncoder, build_encoder

from conftest import assert_csr_equal, random_dag


pytestmark = pytest.mark.usefixtures("one_thread")

NUM_OPS = 5


def random_graphs(seed: int, count: int = 12, max_nodes: int = 8):
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(count):
        n = int(rng.integers(1, max_nodes + 1))
        edges = np.array(random_dag(rng, n, p=float(rng.uniform(0.1, 0.6))), dtype=np.int64).T.reshape(2, -1)
        graphs.append(ArchGraph(rng.integers(0, NUM_OPS, size=n), edges))
    return graphs


def make(name, **kw):
    torch.manual_seed(0)
    enc = build_encoder(name, NUM_OPS, hidden=16, **kw)
    enc.eval()
    return enc


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_shapes(name):
    graphs = random_graphs(1)
    batch = collate(graphs)
    enc = make(name)
    h = enc.node_embeddings(batch)
    z = enc(batch)
    assert h.shape == (batch.num_nodes, enc.out_dim)
    assert z.shape == (batch.num_graphs, enc.out_dim)
    assert torch.isfinite(z).all()
    # forward is the segment mean of the node embeddings
    ptr = batch.node_ptr.tolist()
    torch.testing.assert_close(z, torch.stack([h[a:b].mean(0) for a, b in zip(ptr[:-1], ptr[1:])]))


def test_out_dims():
    assert make("gin").out_dim == 16 * 3          # layer-concat readout
    assert make("gatedgcn").out_dim == 16
    assert make("mlp").out_dim == 16


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_graph_order_invariance(name):
    graphs = random_graphs(2)
    enc = make(name)
    perm = np.random.default_rng(0).permutation(len(graphs))
    with torch.no_grad():
        z = enc(collate(graphs))
        zp = enc(collate([graphs[i] for i in perm]))
    torch.testing.assert_close(zp, z[torch.as_tensor(perm)], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["gin", "gatedgcn", "flowerformer"])
def test_node_relabelling_invariance(name):
    """Renumbering the nodes of a graph does not change its pooled embedding."""
    g = random_graphs(3, count=1, max_nodes=8)[0]
    assert g.num_edges > 0 and g.num_nodes > 2       # seed 3 gives a graph with edges to relabel
    perm = np.random.default_rng(1).permutation(g.num_nodes)   # old id -> new id
    ops = np.empty_like(g.ops)
    ops[perm] = g.ops
    g2 = ArchGraph(ops, perm[g.edges])
    enc = make(name)
    with torch.no_grad():
        torch.testing.assert_close(enc(collate([g2])), enc(collate([g])), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_gradients_flow(name):
    batch = collate(random_graphs(4))
    enc = make(name)
    enc.train()
    enc(batch).pow(2).sum().backward()
    for pname, p in enc.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in enc.parameters())


def test_gatedgcn_uses_both_directions():
    """Undirected message passing: the embedding of a source node depends on its successors."""
    e = np.array([[0], [1]])
    a = collate([ArchGraph([0, 1], e), ArchGraph([0, 2], e)])
    enc = make("gatedgcn")
    with torch.no_grad():
        h = enc.node_embeddings(a)
    assert not torch.allclose(h[0], h[2])


def test_directed_gatedgcn_reads_predecessors_only():
    """``undirected=False``: a source node never hears from its successors, a sink does hear from
    its predecessors, and the layer equals a plain-PyTorch loop over the in-edges."""
    e = np.array([[0], [1]])
    a = collate([ArchGraph([0, 1], e), ArchGraph([0, 2], e)])
    enc = make("gatedgcn", undirected=False)
    assert enc.config["undirected"] is False
    with torch.no_grad():
        h = enc.node_embeddings(a)
    torch.testing.assert_close(h[0], h[2])             # same source op, different successor
    b = collate([ArchGraph([0, 1], e), ArchGraph([3, 1], e)])
    with torch.no_grad():
        hb = enc.node_embeddings(b)
    assert not torch.allclose(hb[1], hb[3])            # same sink op, different predecessor
    # one layer against a per-edge reference
    batch = collate(random_graphs(6))
    layer = enc.convs[0]
    x = torch.randn(batch.num_nodes, 16, dtype=torch.float64)
    layer = layer.double()
    with torch.no_grad():
        uh, ah, vh, bh = layer.proj(x).split(16, dim=-1)
        ref = uh.clone()
        src, dst = batch.in_csr.index.tolist(), batch.in_rows.tolist()
        for v in range(batch.num_nodes):
            us = [u for u, d in zip(src, dst) if d == v]
            if us:
                g = torch.sigmoid(ah[v] + bh[us])
                ref[v] += (g * vh[us]).sum(0) / (g.sum(0) + 1e-6)
        torch.testing.assert_close(layer(x, batch.in_csr), ref)
    assert not torch.allclose(make("gatedgcn")(batch), make("gatedgcn", undirected=False)(batch))


def test_errors():
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("transformer", 5)
    with pytest.raises(ValueError, match="op id"):
        make("gatedgcn")(collate([ArchGraph([0, NUM_OPS], np.array([[0], [1]]))]))
    with pytest.raises(ValueError, match="at most"):
        MLPEncoder(NUM_OPS, max_nodes=2)(collate([ArchGraph([0, 1, 2], np.zeros((2, 0)))]))
    with pytest.raises(ValueError):
        GIN(NUM_OPS, layers=0)
    with pytest.raises(ValueError):
        GatedGCN(NUM_OPS, residual=1.5)


def test_config_rebuilds():
    for name in ENCODERS:
        enc = make(name)
        again = build_encoder(enc.name, **enc.config)
        assert type(again) is type(enc) and again.config == enc.config


# --------------------------------------------------------------------------------------------
# ArchBatch.select
# --------------------------------------------------------------------------------------------
def _assert_batches_equal(a, b):
    for f in ("op", "node_ptr", "graph", "level", "is_source"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    for f in ("in_csr", "out_csr"):
        assert_csr_equal(getattr(a, f), getattr(b, f), f)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_select_equals_collate(seed):
    graphs = random_graphs(10 + seed, count=15)
    graphs.append(ArchGraph([1], np.zeros((2, 0))))                    # single node, no edges
    full = collate(graphs)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, len(graphs), size=9)                          # repeats allowed
    ids[0] = len(graphs) - 1
    _assert_batches_equal(full.select(ids), collate([graphs[i] for i in ids]))
    _assert_batches_equal(full.select(torch.arange(len(graphs))), full)


def test_select_nb201_and_rows():
    from fgp_ext.data import formats

    ds = formats.load("nb201")
    full = collate(ds.graphs[:300])
    ids = [299, 0, 17, 17, 150]
    sub = full.select(ids)
    _assert_batches_equal(sub, collate([ds.graphs[i] for i in ids]))
    # cached per-entry row ids
    rows = torch.repeat_interleave(torch.arange(sub.num_nodes), sub.in_csr.indptr.diff())
    assert torch.equal(sub.in_rows, rows)
    assert sub.in_rows is sub.in_rows


def test_select_errors_and_empty():
    full = collate(random_graphs(5, count=4))
    with pytest.raises(IndexError):
        full.select([4])
    empty = full.select([])
    assert empty.num_graphs == 0 and empty.num_nodes == 0
    _assert_batches_equal(full.select([-1]), full.select([3]))
