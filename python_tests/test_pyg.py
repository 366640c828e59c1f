"""The PyTorch Geometric bridge: csr_from_edge_index, ArchBatch.from_pyg / to_pyg, the layers on
(x, csr), encoders on continuous node features, and the README's PyG example."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_csr_equal, random_dag

from fgp_ext import ArchBatch, ArchGraph, collate, load, ops
from fgp_ext import reference as ref
from fgp_ext.encoders import FlowPass, GatedGCNLayer, build_encoder
from fgp_ext.encoders.flowerformer import LevelBackend
from fgp_ext.sparse import csr_from_edge_index
from fgp_ext.surrogate import flow_params, flow_surrogate

pyg_data = pytest.importorskip("torch_geometric.data")

README = Path(__file__).resolve().parents[1] / "README.md"


def _random_graphs(seed: int, count: int = 12, max_nodes: int = 9):
    rng = np.random.default_rng(seed)
    return [ArchGraph(rng.integers(0, 5, n), np.array(random_dag(rng, n, 0.4) or [(0, 1)]).T.reshape(2, -1))
            for n in rng.integers(2, max_nodes, count)]


def _assert_batches_equal(a: ArchBatch, b: ArchBatch) -> None:
    for f in ("op", "node_ptr", "graph", "level", "is_source"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert_csr_equal(a.in_csr, b.in_csr, "in_csr")
    assert_csr_equal(a.out_csr, b.out_csr, "out_csr")
    assert (a.x is None) == (b.x is None)
    if a.x is not None:
        assert torch.equal(a.x, b.x)


# ---- csr_from_edge_index ----------------------------------------------------------------------
def test_csr_from_edge_index_is_stable_and_perm_maps_to_edges():
    # node 3 receives from 2, then 0, then 1 (edge order), node 1 from 0 twice (a repeated edge)
    edge_index = torch.tensor([[2, 0, 0, 1, 0], [3, 3, 1, 3, 1]])
    csr = csr_from_edge_index(edge_index, 5)
    assert csr.indptr.tolist() == [0, 0, 2, 2, 5, 5]
    assert csr.index.tolist() == [0, 0, 2, 0, 1]
    assert csr.perm.tolist() == [2, 4, 0, 1, 3]
    # every entry is its edge: same source, destination = its row
    assert torch.equal(edge_index[0, csr.perm], csr.index)
    assert torch.equal(edge_index[1, csr.perm], csr.rows())


def test_csr_from_edge_index_takes_any_graph_and_matches_collate():
    cyclic = csr_from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]), 3)  # a cycle is fine here
    assert cyclic.indptr.tolist() == [0, 1, 2, 3]
    graphs = _random_graphs(0)
    b = collate(graphs)
    rows = b.in_rows
    edges = torch.stack([b.in_csr.index, rows])[:, torch.argsort(b.in_csr.perm)]  # the original edge list
    got = csr_from_edge_index(edges, b.num_nodes)
    assert torch.equal(got.indptr, b.in_csr.indptr) and torch.equal(got.index, b.in_csr.index)
    assert torch.equal(got.perm, b.in_csr.perm)


@pytest.mark.parametrize("edge_index,message", [
    (torch.tensor([[0, 5], [1, 2]]), r"edge_index\[0, 1\] = 5"),
    (torch.tensor([[0, 1], [-1, 2]]), r"edge_index\[1, 0\] = -1"),
])
def test_csr_from_edge_index_names_the_bad_entry(edge_index, message):
    with pytest.raises(IndexError, match=message):
        csr_from_edge_index(edge_index, 3)


def test_csr_from_edge_index_refuses_bad_shapes_and_dtypes():
    with pytest.raises(ValueError, match=r"\[2, E\]"):
        csr_from_edge_index(torch.zeros(3, 2, dtype=torch.int64), 3)
    with pytest.raises(TypeError, match="integer"):
        csr_from_edge_index(torch.zeros(2, 2), 3)


def test_ops_refuse_the_old_calling_style_with_a_hint():
    x = torch.randn(3, 2)
    with pytest.raises(TypeError, match="csr_from_edge_index"):
        ops.gather_segment_sum(x, torch.tensor([0, 1]), torch.tensor([0, 1, 2, 2]))


def test_csr_with_transpose_and_to():
    csr = csr_from_edge_index(torch.tensor([[0, 0, 1], [1, 2, 2]]), 3).with_transpose()
    assert csr.transpose.indptr.tolist() == [0, 2, 3, 3]
    compiled = ops.csr_transpose(csr, 3)  # the compiled op builds the same structure
    for a, b in zip(csr.transpose[:3], compiled[:3]):
        assert torch.equal(a, b)
    assert csr.with_transpose() is csr  # already carried: not rebuilt
    moved = csr.to("cpu")
    assert_csr_equal(moved, csr)


# ---- ArchBatch <-> PyG -------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_to_pyg_and_back_rebuilds_the_batch(seed):
    b = collate(_random_graphs(seed))
    p = b.to_pyg()
    assert torch.equal(p.ptr, b.node_ptr) and torch.equal(p.batch, b.graph)
    assert p.edge_index.shape == (2, b.num_edges)
    _assert_batches_equal(ArchBatch.from_pyg(p), b)
    # with node features, which select() and to() carry along
    featured = ArchBatch.from_pyg(_with_x(p, torch.randn(b.num_nodes, 3)))
    back = ArchBatch.from_pyg(featured.to_pyg())
    _assert_batches_equal(back, featured)
    ids = [3, 0, 3]
    sub = featured.select(ids)
    want = torch.cat([featured.x[int(featured.node_ptr[i]):int(featured.node_ptr[i + 1])] for i in ids])
    assert torch.equal(sub.x, want)


def _with_x(pyg_batch, x):
    pyg_batch = pyg_batch.clone()
    pyg_batch.x = x
    return pyg_batch


def test_from_pyg_reads_op_ids_from_an_integer_x_and_graph_bounds_from_batch():
    data = [pyg_data.Data(x=torch.tensor([[0], [2], [1]]), edge_index=torch.tensor([[0, 1], [1, 2]])),
            pyg_data.Data(x=torch.tensor([[1], [0]]), edge_index=torch.tensor([[0], [1]]))]
    batch = pyg_data.Batch.from_data_list(data)
    a = ArchBatch.from_pyg(batch)
    assert a.op.tolist() == [0, 2, 1, 1, 0] and a.x is None
    assert a.node_ptr.tolist() == [0, 3, 5] and a.level.tolist() == [0, 1, 2, 0, 1]
    del batch.ptr  # boundaries from the batch vector instead
    assert ArchBatch.from_pyg(batch).node_ptr.tolist() == [0, 3, 5]
    # the same architectures collated directly: same batch, same encoder output
    direct = collate([ArchGraph([0, 2, 1], [[0, 1], [1, 2]]), ArchGraph([1, 0], [[0], [1]])])
    _assert_batches_equal(a, direct)
    torch.manual_seed(0)
    enc = build_encoder("gatedgcn", 3, hidden=8).eval()
    assert torch.equal(enc(a), enc(direct))


def test_from_pyg_errors():
    with pytest.raises(ValueError, match="neither op ids"):
        ArchBatch.from_pyg(pyg_data.Data(edge_index=torch.tensor([[0], [1]]), num_nodes=2))
    with pytest.raises(RuntimeError, match="cycle"):
        ArchBatch.from_pyg(pyg_data.Data(op=torch.tensor([0, 1]), edge_index=torch.tensor([[0, 1], [1, 0]]),
                                         num_nodes=2))
    unsorted = pyg_data.Data(op=torch.tensor([0, 1, 0]), edge_index=torch.zeros(2, 0, dtype=torch.int64),
                             batch=torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match="sorted"):
        ArchBatch.from_pyg(unsorted)


def test_to_pyg_without_torch_geometric_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_geometric.data", None)
    with pytest.raises(ImportError, match="pip install torch_geometric"):
        collate(_random_graphs(0, count=2)).to_pyg()


# ---- layers on (x, csr) and node features ------------------------------------------------------
def test_gatedgcn_layer_on_an_edge_index_equals_the_formula():
    torch.manual_seed(0)
    edge_index = torch.tensor([[0, 0, 1, 2, 3, 3], [1, 2, 3, 3, 4, 1]])
    x = torch.randn(5, 6, dtype=torch.float64)
    layer = GatedGCNLayer(6).double()
    got = layer(x, csr_from_edge_index(edge_index, 5))
    uh, ah, vh, bh = layer.proj(x).split(6, dim=-1)
    src, dst = edge_index
    gate = torch.sigmoid(ah[dst] + bh[src])
    num = torch.zeros_like(uh).index_add_(0, dst, gate * vh[src])
    den = torch.zeros_like(uh).index_add_(0, dst, gate)
    torch.testing.assert_close(got, uh + num / (den + 1e-6))


def test_flow_pass_layer_equals_flowerformers_passes():
    """FlowPass on (x, csr) computes the forward then reversed pass FlowerFormer runs on a batch."""
    torch.manual_seed(0)
    b = collate(_random_graphs(2))
    layer = FlowPass(8).double()
    x = torch.randn(b.num_nodes, 8, dtype=torch.float64)
    backend = LevelBackend(b)
    want = backend.flow(layer.backward_step, backend.flow(layer.forward_step, x, reverse=False), reverse=True)
    edges = torch.stack([b.in_csr.index, b.in_rows])
    got = layer(x, csr_from_edge_index(edges, b.num_nodes), b.node_ptr)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    one_way = FlowPass(8, bidirectional=False).double()
    one_way.forward_step.load_state_dict(layer.forward_step.state_dict())
    torch.testing.assert_close(one_way(x, b.in_csr, b.node_ptr), backend.flow(layer.forward_step, x, reverse=False),
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="cycle"):
        layer(x[:3], csr_from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]), 3))


@pytest.mark.parametrize("name", ["gin", "gatedgcn", "flowerformer"])
def test_encoders_on_continuous_node_features(name):
    torch.manual_seed(0)
    b = collate(_random_graphs(3))
    x = torch.randn(b.num_nodes, 5)
    featured = ArchBatch.from_pyg(_with_x(b.to_pyg(), x))
    enc = build_encoder(name, 1, hidden=8, node_features=5, **({"heads": 2} if name == "flowerformer" else {}))
    assert enc.config["node_features"] == 5
    assert isinstance(enc.node_encoder, torch.nn.Linear)
    out = enc(featured)
    assert out.shape == (b.num_graphs, enc.out_dim) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert enc.node_encoder.weight.grad.abs().sum() > 0
    # the features matter: other features, other embeddings
    other = ArchBatch.from_pyg(_with_x(b.to_pyg(), torch.randn(b.num_nodes, 5)))
    assert not torch.allclose(enc.eval()(other), enc(featured))
    with pytest.raises(ValueError, match="has none"):
        enc(b)
    with pytest.raises(ValueError, match="shape"):
        enc(ArchBatch.from_pyg(_with_x(b.to_pyg(), torch.randn(b.num_nodes, 4))))
    rebuilt = build_encoder(name, **enc.config)
    rebuilt.load_state_dict(enc.state_dict())
    assert torch.equal(rebuilt.eval()(featured), enc(featured))


def test_custom_node_encoder_module():
    torch.manual_seed(0)
    b = collate(_random_graphs(4))
    custom = torch.nn.Sequential(torch.nn.Embedding(5, 8), torch.nn.Tanh())
    enc = build_encoder("gatedgcn", 5, hidden=8, node_encoder=custom)
    assert enc.node_encoder is custom and "node_encoder.0.weight" in enc.state_dict()
    out = enc(b)
    out.sum().backward()
    assert custom[0].weight.grad is not None
    with pytest.raises(ValueError, match="not both"):
        build_encoder("gin", 5, node_features=3, node_encoder=custom)


def test_state_dicts_with_the_old_embedding_name_load():
    torch.manual_seed(0)
    enc = build_encoder("flowerformer", 7, hidden=8, heads=2)
    old = {("embed." + k[len("node_encoder."):] if k.startswith("node_encoder.") else k): v
           for k, v in enc.state_dict().items()}
    assert "embed.weight" in old
    fresh = build_encoder("flowerformer", 7, hidden=8, heads=2)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.node_encoder.weight, enc.node_encoder.weight)


def test_readme_pyg_example_runs():
    text = README.read_text()
    match = re.search(r"<!-- pyg-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "the README's PyG example (after <!-- pyg-example -->) is missing"
    scope: dict = {}
    torch.manual_seed(0)
    exec(compile(match.group(1), "README.md:pyg-example", "exec"), scope)
    assert scope["score"].shape == (2,)
    assert all(p.grad is not None for p in scope["model"].parameters())
    assert scope["embedding"].shape == (2, 32)
    # the example's model trains: a few steps fit two targets
    model, batch = scope["model"], scope["batch"]
    target = torch.tensor([1.0, -1.0])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (model(batch) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_nb201_through_pyg_gives_the_same_surrogate():
    ds = load("nb201")
    b = collate(ds.graphs[:64])
    back = ArchBatch.from_pyg(b.to_pyg())
    kw = dict(k=7, std=0.1, num_ops=ds.space.num_ops)
    assert torch.equal(flow_surrogate(back, **kw), flow_surrogate(b, **kw))
    # and the reference on the raw tensors agrees
    r, P, W = flow_params(ds.space.num_ops, 7, 0.1)
    want = ref.flow_surrogate_batched(back.op, back.in_csr.indptr, back.in_csr.index, back.node_ptr, back.is_source,
                                      r, P, W, 0.5)
    torch.testing.assert_close(flow_surrogate(back, **kw), want)
