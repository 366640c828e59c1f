"""GatedGCN benchmarks: the fused edge-gated aggregation against its compositions, and a whole
training epoch of our GatedGCN against the same network built from PyG's ``ResGatedGraphConv``.

* Op: ``out[v] = sum_e g_e * V h_u / (sum_e g_e + eps)``, ``g_e = sigmoid(A h_v + B h_u)``, forward and
  forward+backward (all three inputs), on all NB201 cells as one undirected batch (F = 64) and on a
  random graph of 100k nodes / 1M directed edges made symmetric (F = 16). Peers: the same function
  from stock PyTorch ops (gather, sigmoid, ``index_add_``), from our unfused ops (gather + sigmoid +
  ``segment_sum_csr``, the layer before the fused op), and from torch_scatter when importable.
* Epoch: all NB201 cells, batch 128 and 1024, 3 layers, hidden 64, Adam step, batches from a
  pre-collated dataset (``select``). Peers: our GatedGCN with the unfused layer, and PyG's
  ``ResGatedGraphConv`` x3 with the same embedding, ReLU, dropout, residual mix and mean pooling
  (when torch_geometric is importable; it is a benchmark peer only). PyG's layer does not normalise
  by the gate sum and has an extra bias, so it does slightly less work than ours.

Run: ``FGP_BENCH_THREADS=1 .venv/bin/python -m pytest bench/test_bench_gatedgcn.py --benchmark-only -q``
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from benchutil import record, run_bench, training_epoch
from torch import nn

from fgp_ext import ops
from fgp_ext.encoders import GatedGCN, segment_mean
from fgp_ext.encoders.gatedgcn import GatedGCNLayer
from fgp_ext.ops import CSR
from fgp_ext.sparse import csr_row_ids

HIDDEN, LAYERS, EPS = 64, 3, 1e-6


def _optional(name):
    try:
        return __import__(name)
    except Exception:  # noqa: BLE001  (any import failure: the peer is skipped)
        return None


# ---------------------------------------------------------------------------------------------
# the aggregation op
# ---------------------------------------------------------------------------------------------
@dataclass
class Workload:
    name: str
    csr: CSR
    rows: torch.Tensor
    x: torch.Tensor      # [N, 3F]: gate_dst | gate_src | value
    grad: torch.Tensor   # [N, F]

    @property
    def F(self) -> int:
        return self.grad.shape[1]


_WORKLOADS: dict = {}


def _workload(name, nb201_batch):
    if name not in _WORKLOADS:
        gen = torch.Generator().manual_seed(0)
        if name == "nb201-all-undirected":
            csr, F = nb201_batch.undirected_csr, 64
        else:  # random graph, 100k nodes, 1M directed edges, made symmetric
            n, m, F = 100_000, 1_000_000, 16
            src, dst = torch.randint(0, n, (m,), generator=gen), torch.randint(0, n, (m,), generator=gen)
            keep = src != dst
            src, dst = torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])
            order = torch.argsort(dst * n + src)
            index, dst = src[order], dst[order]
            csr = CSR(torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(dst, minlength=n).cumsum(0)]), index)
        n = csr.indptr.numel() - 1
        _WORKLOADS[name] = Workload(name, csr, csr_row_ids(csr.indptr, csr.index.numel()),
                                    torch.randn(n, 3 * F, generator=gen), torch.randn(n, F, generator=gen))
    return _WORKLOADS[name]


def _split(w, x):
    return x.split(w.F, dim=1)


def _fused(w, x):
    a, b, v = _split(w, x)
    return ops.gated_aggregate(a, b, v, w.csr, eps=EPS, transpose=w.csr)


def _unfused_fgp(w, x):
    a, b, v = _split(w, x)
    gate = torch.sigmoid(a.index_select(0, w.rows) + b.index_select(0, w.csr.index))
    num, den = ops.segment_sum_csr(torch.cat([gate * v.index_select(0, w.csr.index), gate], 1), w.csr.indptr).split(
        w.F, 1)
    return num / (den + EPS)


def _stock(w, x):
    a, b, v = _split(w, x)
    gate = torch.sigmoid(a.index_select(0, w.rows) + b.index_select(0, w.csr.index))
    n = w.csr.indptr.numel() - 1
    num = x.new_zeros(n, w.F).index_add_(0, w.rows, gate * v.index_select(0, w.csr.index))
    return num / (x.new_zeros(n, w.F).index_add_(0, w.rows, gate) + EPS)


def _scatter(w, x):
    ts = _optional("torch_scatter")
    a, b, v = _split(w, x)
    gate = torch.sigmoid(a.index_select(0, w.rows) + b.index_select(0, w.csr.index))
    num = ts.segment_csr(gate * v.index_select(0, w.csr.index), w.csr.indptr, reduce="sum")
    return num / (ts.segment_csr(gate, w.csr.indptr, reduce="sum") + EPS)


OP_CONTENDERS = {
    "fgp.gated_aggregate (fused)": ("ours", _fused),
    "fgp gather + sigmoid + segment_sum_csr (unfused)": ("ours-alt", _unfused_fgp),
    "index_select + sigmoid + index_add_": ("builtin", _stock),
    "index_select + sigmoid + torch_scatter.segment_csr": ("thirdparty", _scatter),
}


def _op_group(kind, w, threads):
    return f"gated aggregation {kind} | {w.name} F={w.F} | cpu {threads} thread(s)"


def _op_contender(contender, workload, nb201_batch):
    """(role, fn, workload) of an op benchmark; skips the torch_scatter peer when it is missing."""
    role, fn = OP_CONTENDERS[contender]
    if role == "thirdparty" and _optional("torch_scatter") is None:
        pytest.skip("torch_scatter not importable")
    return role, fn, _workload(workload, nb201_batch)


OP_WORKLOADS = ["nb201-all-undirected", "random-100k-nodes-2M-entries"]


@pytest.mark.parametrize("workload", OP_WORKLOADS)
@pytest.mark.parametrize("contender", list(OP_CONTENDERS))
def test_gated_aggregation_fwd(benchmark, cpu_threads, nb201_batch, workload, contender):
    role, fn, w = _op_contender(contender, workload, nb201_batch)
    with torch.no_grad():
        torch.testing.assert_close(fn(w, w.x), _fused(w, w.x), rtol=1e-4, atol=1e-5)
        benchmark.group = _op_group("forward", w, cpu_threads)
        run_bench(benchmark, lambda: fn(w, w.x))
    record(benchmark, role=role, contender=contender)


@pytest.mark.parametrize("workload", OP_WORKLOADS)
@pytest.mark.parametrize("contender", list(OP_CONTENDERS))
def test_gated_aggregation_fwdbwd(benchmark, cpu_threads, nb201_batch, workload, contender):
    role, fn, w = _op_contender(contender, workload, nb201_batch)
    x = w.x.clone().requires_grad_(True)

    def step():
        (gx,) = torch.autograd.grad(fn(w, x), x, w.grad)
        return gx

    expect = torch.autograd.grad(_fused(w, x), x, w.grad)[0]
    torch.testing.assert_close(step(), expect, rtol=1e-4, atol=1e-5)
    benchmark.group = _op_group("forward+backward", w, cpu_threads)
    run_bench(benchmark, step)
    record(benchmark, role=role, contender=contender)


# ---------------------------------------------------------------------------------------------
# training epoch
# ---------------------------------------------------------------------------------------------
class UnfusedGatedGCNLayer(GatedGCNLayer):
    """Our layer as it was before the fused op: gather, sigmoid and one segment sum of
    ``[gated message | gate]`` (same weights, same function)."""

    def forward(self, h, csr):
        d = self.dim
        uh, ah, vbh = self.proj(h).split([d, d, 2 * d], dim=-1)
        rows = csr.rows()
        vb_src = vbh.index_select(0, csr.index)
        gate = torch.sigmoid(ah.index_select(0, rows) + vb_src[:, d:])
        num, den = ops.segment_sum_csr(torch.cat([gate * vb_src[:, :d], gate], dim=-1), csr.indptr).split(d, dim=-1)
        return uh + num / (den + EPS)


class PygGatedGCN(nn.Module):
    """PyG's ResGatedGraphConv x3 in our GatedGCN's frame (embedding, ReLU, dropout, residual mix
    0.2 / 0.8, mean pooling), on the undirected edges of the batch."""

    def __init__(self, num_ops, hidden, layers, dropout=0.1, residual=0.2):
        super().__init__()
        from torch_geometric.nn import ResGatedGraphConv
        self.embed = nn.Embedding(num_ops, hidden)
        self.convs = nn.ModuleList(ResGatedGraphConv(hidden, hidden) for _ in range(layers))
        self.drop = nn.Dropout(dropout)
        self.residual = residual

    def forward(self, batch):
        csr = batch.undirected_csr
        edge_index = torch.stack([csr.index, batch.undirected_rows])  # (source, target)
        h = self.embed(batch.op)
        for conv in self.convs:
            h = self.residual * h + (1 - self.residual) * self.drop(torch.relu(conv(h, edge_index)))
        return segment_mean(h, batch.node_ptr)


def _epoch_model(kind):
    torch.manual_seed(0)
    if kind == "pyg":
        return PygGatedGCN(7, HIDDEN, LAYERS)
    model = GatedGCN(7, hidden=HIDDEN, layers=LAYERS)
    if kind == "unfused":
        for conv in model.convs:
            conv.__class__ = UnfusedGatedGCNLayer
    return model


EPOCH_CONTENDERS = {
    "GatedGCN, fused gated_aggregate": ("ours", "fused"),
    "GatedGCN, unfused (gather + sigmoid + segment_sum_csr)": ("ours-alt", "unfused"),
    "PyG ResGatedGraphConv x3, same frame": ("thirdparty", "pyg"),
}


@pytest.mark.parametrize("batch_size", [128, 1024])
@pytest.mark.parametrize("contender", list(EPOCH_CONTENDERS))
def test_gatedgcn_training_epoch_nb201(benchmark, cpu_threads, nb201_batch, batch_size, contender):
    role, kind = EPOCH_CONTENDERS[contender]
    if kind == "pyg" and _optional("torch_geometric") is None:
        pytest.skip("torch_geometric not importable")
    benchmark.group = (f"GatedGCN training epoch | NB201 all {nb201_batch.num_graphs} cells, batch {batch_size}, "
                       f"{LAYERS} layers, hidden {HIDDEN} | cpu {cpu_threads} thread(s)")
    model = _epoch_model(kind)
    epoch = training_epoch(nb201_batch, model, batch_size, HIDDEN)

    first = epoch()
    assert first == first and first > 0  # finite
    run_bench(benchmark, epoch, min_rounds=1, max_rounds=3, target=2.0)
    record(benchmark, role=role, contender=contender)
