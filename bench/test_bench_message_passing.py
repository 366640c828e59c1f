"""Message passing: ``fgp_ext.ops.gather_segment_sum`` / ``segment_sum_csr`` against stock PyTorch
(CSR ``torch.sparse.mm``, ``index_add_``, ``scatter_reduce``, ``segment_reduce``) and torch_scatter
when importable, measured side by side in one run.

Workloads
  nb201-undir   all 15,625 NB201 cells as 8-node op-on-node graphs, made undirected (both edge
                directions, as GatedGCN does): 125,000 nodes, 312,500 entries, F = 64.
  nb201-dir     the same, directed only (edges source -> destination): 156,250 entries, F = 64.
  rand-1M-F64   a random graph, 100,000 nodes, 1,000,000 uniformly random edges, F = 64.
  rand-1M-F16   the same graph, F = 16.

Operations (one pytest-benchmark group per operation x workload x thread count)
  gather_fwd     out[i] = sum_{e in row i} x[index[e]]; peers gather ``x[index]`` then reduce
                 (the fair composite), except ``torch.sparse.mm`` which does it in one call.
  gather_fwdbwd  forward + gradient w.r.t. x (``torch.autograd.grad``); ours gets the batch's
                 precomputed transpose via ``transpose=`` (and an extra row without it).
  segsum_fwd     out[i] = sum of src rows indptr[i]..indptr[i+1]-1 with precomputed src [E, F].

Every contender's output is checked against ours (allclose) before it is timed.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import pytest
import torch

from benchutil import record, run_bench

from fgp_ext.sparse import CSR
from fgp_ext import ops

try:  # optional third-party peer: never a dependency
    import torch_scatter  # noqa: F401

    HAVE_TS = True
except Exception:  # pragma: no cover - depends on the environment
    HAVE_TS = False


@dataclass
class Workload:
    name: str
    N: int                 # output rows (destinations)
    M: int                 # rows of x (sources)
    index: torch.Tensor    # [E] source of each entry, entries sorted by destination (stable)
    dst: torch.Tensor      # [E] destination (CSR row) of each entry
    indptr: torch.Tensor   # [N+1]
    transpose: ops.CSR     # CSR by source, for the backward pass
    x: torch.Tensor        # [M, F]
    grad: torch.Tensor     # [N, F] upstream gradient
    msg: torch.Tensor      # [E, F] = x[index] (segment_sum input)
    csr: torch.Tensor      # sparse CSR [N, M] with ones (gather as SpMM)
    csr_seg: torch.Tensor  # sparse CSR [N, E] with ones at (row(e), e) (segment sum as SpMM)
    lengths: torch.Tensor  # [N] segment lengths
    dst_exp: torch.Tensor  # [E, F] expanded dst for scatter_reduce

    @property
    def E(self) -> int:
        return self.index.numel()

    def to(self, device) -> "Workload":
        kw = {}
        for k, v in self.__dict__.items():
            if isinstance(v, torch.Tensor):
                kw[k] = v.to(device)
            elif isinstance(v, ops.CSR):
                kw[k] = ops.CSR(*(t.to(device) for t in v))
            else:
                kw[k] = v
        kw["dst_exp"] = kw["dst"].view(-1, 1).expand(-1, self.x.shape[1])
        return Workload(**kw)


def _make(name, src, dst, num_nodes, F, seed=0) -> Workload:
    order = torch.sort(dst, stable=True).indices
    src, dst = src[order].contiguous(), dst[order].contiguous()
    indptr = torch.zeros(num_nodes + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(torch.bincount(dst, minlength=num_nodes), 0)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, F, generator=g)
    grad = torch.randn(num_nodes, F, generator=g)
    E = src.numel()
    ones = torch.ones(E)
    with warnings.catch_warnings():  # "sparse CSR support is in beta" / invariant-check notices
        warnings.simplefilter("ignore", UserWarning)
        csr = torch.sparse_csr_tensor(indptr, src, ones, size=(num_nodes, num_nodes))
        csr_seg = torch.sparse_csr_tensor(indptr, torch.arange(E), ones, size=(num_nodes, E))
    return Workload(
        name=name, N=num_nodes, M=num_nodes, index=src, dst=dst, indptr=indptr,
        transpose=ops.csr_transpose(CSR(indptr, src), num_nodes), x=x, grad=grad,
        msg=x.index_select(0, src).contiguous(),
        csr=csr, csr_seg=csr_seg,
        lengths=indptr.diff(), dst_exp=dst.view(-1, 1).expand(-1, F),
    )


_CACHE: dict = {}


def _nb201_edges(batch, undirected: bool):
    src, indptr = batch.in_csr.index, batch.in_csr.indptr
    dst = torch.repeat_interleave(torch.arange(indptr.numel() - 1), indptr.diff())
    if undirected:
        src, dst = torch.cat([src, dst]), torch.cat([dst, src])
    return src, dst, batch.num_nodes


def get_workload(name: str, device: str, request) -> Workload:
    key = (name, device)
    if key in _CACHE:
        return _CACHE[key]
    base_key = (name, "cpu")
    if base_key not in _CACHE:
        if name.startswith("nb201"):
            batch = request.getfixturevalue("nb201_batch")
            src, dst, n = _nb201_edges(batch, undirected=name == "nb201-undir")
            _CACHE[base_key] = _make(name, src, dst, n, 64)
        else:
            F = int(name.rsplit("F", 1)[1])
            rk = ("rand-edges",)
            if rk not in _CACHE:
                g = torch.Generator().manual_seed(1)
                n, e = 100_000, 1_000_000
                _CACHE[rk] = (torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g), n)
            src, dst, n = _CACHE[rk]
            _CACHE[base_key] = _make(name, src, dst, n, F)
    if device != "cpu":
        _CACHE[key] = _CACHE[base_key].to(device)
    return _CACHE[key]


WORKLOADS = ["nb201-undir", "nb201-dir", "rand-1M-F64", "rand-1M-F16"]


# ----------------------------------------------------------------------------------------------
# contenders: name -> (role, builder(w) -> callable(x) -> out)
# ----------------------------------------------------------------------------------------------
def _ts():
    if not HAVE_TS:
        pytest.skip("torch_scatter is not importable")
    import torch_scatter

    return torch_scatter


GATHER = {
    "fgp.gather_segment_sum": ("ours", lambda w: lambda x: ops.gather_segment_sum(x, CSR(w.indptr, w.index),
                                                                                   transpose=w.transpose)),
    "fgp.gather_segment_sum(no transpose=)": ("ours-alt", lambda w: lambda x: ops.gather_segment_sum(
        x, CSR(w.indptr, w.index))),
    "torch.sparse.mm(CSR)": ("builtin", lambda w: lambda x: torch.sparse.mm(w.csr, x)),
    "x[index] + index_add_": ("builtin", lambda w: lambda x: x.new_zeros(w.N, x.shape[1]).index_add_(
        0, w.dst, x.index_select(0, w.index))),
    "x[index] + scatter_reduce(sum)": ("builtin", lambda w: lambda x: x.new_zeros(w.N, x.shape[1]).scatter_reduce(
        0, w.dst_exp, x.index_select(0, w.index), "sum")),
    "x[index] + segment_reduce(offsets)": ("builtin", lambda w: lambda x: torch.segment_reduce(
        x.index_select(0, w.index), "sum", offsets=w.indptr)),
    "x[index] + segment_reduce(lengths)": ("builtin", lambda w: lambda x: torch.segment_reduce(
        x.index_select(0, w.index), "sum", lengths=w.lengths)),
    "x[index] + torch_scatter.segment_csr": ("thirdparty", lambda w: (lambda ts: lambda x: ts.segment_csr(
        x.index_select(0, w.index), w.indptr, reduce="sum"))(_ts())),
    "x[index] + torch_scatter.scatter_add": ("thirdparty", lambda w: (lambda ts: lambda x: ts.scatter_add(
        x.index_select(0, w.index), w.dst, dim=0, dim_size=w.N))(_ts())),
}

SEGSUM = {
    "fgp.segment_sum_csr": ("ours", lambda w: lambda s: ops.segment_sum_csr(s, w.indptr)),
    "torch.sparse.mm(CSR [N,E])": ("builtin", lambda w: lambda s: torch.sparse.mm(w.csr_seg, s)),
    "index_add_": ("builtin", lambda w: lambda s: s.new_zeros(w.N, s.shape[1]).index_add_(0, w.dst, s)),
    "scatter_reduce(sum)": ("builtin", lambda w: lambda s: s.new_zeros(w.N, s.shape[1]).scatter_reduce(
        0, w.dst_exp, s, "sum")),
    "segment_reduce(offsets)": ("builtin", lambda w: lambda s: torch.segment_reduce(s, "sum", offsets=w.indptr)),
    "segment_reduce(lengths)": ("builtin", lambda w: lambda s: torch.segment_reduce(s, "sum", lengths=w.lengths)),
    "torch_scatter.segment_csr": ("thirdparty", lambda w: (lambda ts: lambda s: ts.segment_csr(
        s, w.indptr, reduce="sum"))(_ts())),
    "torch_scatter.scatter_add": ("thirdparty", lambda w: (lambda ts: lambda s: ts.scatter_add(
        s, w.dst, dim=0, dim_size=w.N))(_ts())),
}

_REF_OUT: dict = {}


def _reference_out(kind, w, device):
    """Our op's output (cached), the yardstick every contender is checked against."""
    key = (kind, w.name, device)
    if key not in _REF_OUT:
        if kind == "gather_fwd":
            _REF_OUT[key] = ops.gather_segment_sum(w.x, CSR(w.indptr, w.index))
        elif kind == "segsum_fwd":
            _REF_OUT[key] = ops.segment_sum_csr(w.msg, w.indptr)
        else:  # gradient of <out, grad> w.r.t. x = A^T grad
            _REF_OUT[key] = ops.gather_segment_sum(w.grad, w.transpose)
    return _REF_OUT[key]


def _check(out, ref, what):
    assert out.shape == ref.shape, what
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4, msg=lambda m: f"{what}: {m}")


def _group(kind, wname, device, threads):
    return f"{kind} | {wname} | " + ("cuda" if device == "cuda" else f"cpu {threads} thread(s)")


@pytest.mark.parametrize("workload", WORKLOADS)
@pytest.mark.parametrize("contender", list(GATHER))
def test_gather_fwd(benchmark, request, device_threads, workload, contender):
    device, threads = device_threads
    role, build = GATHER[contender]
    if role == "ours-alt":
        pytest.skip("the no-transpose variant only matters for the backward pass")
    w = get_workload(workload, device, request)
    fn = build(w)
    with torch.no_grad():
        _check(fn(w.x), _reference_out("gather_fwd", w, device), contender)
        benchmark.group = _group("gather_fwd", workload, device, threads)
        benchmark.extra_info.update(N=w.N, E=w.E, F=w.x.shape[1])
        run_bench(benchmark, lambda: fn(w.x), device=device)
    record(benchmark, role=role, contender=contender)


@pytest.mark.parametrize("workload", WORKLOADS)
@pytest.mark.parametrize("contender", list(GATHER))
def test_gather_fwdbwd(benchmark, request, device_threads, workload, contender):
    device, threads = device_threads
    role, build = GATHER[contender]
    w = get_workload(workload, device, request)
    fn = build(w)
    x = w.x.detach().clone().requires_grad_(True)

    def step():
        out = fn(x)
        (gx,) = torch.autograd.grad(out, x, w.grad)
        return gx

    _check(step(), _reference_out("gather_grad", w, device), contender)
    benchmark.group = _group("gather_fwdbwd", workload, device, threads)
    benchmark.extra_info.update(N=w.N, E=w.E, F=w.x.shape[1])
    run_bench(benchmark, step, device=device)
    record(benchmark, role=role, contender=contender)


@pytest.mark.parametrize("workload", WORKLOADS)
@pytest.mark.parametrize("contender", list(SEGSUM))
def test_segsum_fwd(benchmark, request, device_threads, workload, contender):
    device, threads = device_threads
    role, build = SEGSUM[contender]
    w = get_workload(workload, device, request)
    fn = build(w)
    with torch.no_grad():
        _check(fn(w.msg), _reference_out("segsum_fwd", w, device), contender)
        benchmark.group = _group("segsum_fwd", workload, device, threads)
        benchmark.extra_info.update(N=w.N, E=w.E, F=w.x.shape[1])
        run_bench(benchmark, lambda: fn(w.msg), device=device)
    record(benchmark, role=role, contender=contender)
