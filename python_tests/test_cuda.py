"""CUDA against CPU, bitwise (the CUDA build disables FMA contraction). Skipped without a GPU: on
this project's machines the CUDA kernels are verified by compilation only."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_csr, random_dag
from fgp_ext.sparse import CSR
from fgp_ext import ArchGraph, collate, ops
from fgp_ext.surrogate import flow_params

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    indptr, index = random_csr(rng, 500, 400, max_deg=9)
    x = torch.from_numpy(rng.standard_normal((400, 17)))
    w = torch.from_numpy(rng.standard_normal(index.numel()))
    return x, index, indptr, w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_message_passing_cuda_equals_cpu(dtype):
    x, index, indptr, w = (t.to(dtype) if t.is_floating_point() else t for t in _problem())
    c = lambda t: t.cuda()  # noqa: E731
    assert torch.equal(ops.gather_segment_sum(c(x), CSR(c(indptr), c(index)), c(w)).cpu(),
                       ops.gather_segment_sum(x, CSR(indptr, index), w))
    src = x.index_select(0, index)
    assert torch.equal(ops.segment_sum_csr(c(src), c(indptr)).cpu(), ops.segment_sum_csr(src, indptr))
    a = torch.randn(500, 17, dtype=dtype)
    torch.testing.assert_close(ops.edge_dot(c(a), c(x), CSR(c(indptr), c(index))).cpu(), ops.edge_dot(a, x, CSR(indptr, index)))
    for got, want in zip(ops.csr_transpose(CSR(c(indptr), c(index)), 400)[:3], ops.csr_transpose(CSR(indptr, index), 400)[:3]):
        assert torch.equal(got.cpu(), want)


def test_gradients_cuda_equal_cpu():
    x, index, indptr, w = _problem(1)
    outs = []
    for dev in ("cpu", "cuda"):
        xd = x.to(dev).requires_grad_()
        wd = w.to(dev).requires_grad_()
        ops.gather_segment_sum(xd, CSR(indptr.to(dev), index.to(dev)), wd).square().sum().backward()
        outs.append((xd.grad.cpu(), wd.grad.cpu()))
    torch.testing.assert_close(outs[0], outs[1])


@pytest.mark.parametrize("schedule", ["graph", "level"])
def test_dag_ops_cuda_equal_cpu(schedule):
    rng = np.random.default_rng(3)
    graphs = [ArchGraph(rng.integers(0, 5, n), np.array(random_dag(rng, n, 0.3) or [(0, 1)]).T.reshape(2, -1))
              for n in rng.integers(2, 20, 300)]
    b = collate(graphs)
    r, P, W = flow_params(5, 7, 0.1, seed=0)
    args = (b.op, b.in_csr.indptr, b.in_csr.index, b.node_ptr, b.is_source, r, P, W)
    want = torch.ops.fgp.flow_surrogate(*args, 0.5, schedule)
    got = ops.flow_surrogate(b.op.cuda(), b.in_csr.to("cuda"), *(t.cuda() for t in args[3:]), 0.5, schedule)
    assert torch.equal(got.cpu(), want)
    assert torch.equal(ops.topo_levels(b.in_csr.to("cuda"), b.node_ptr.cuda()).cpu(), b.level)


def test_cuda_cycle_error_names_graph():
    with pytest.raises(RuntimeError, match="graph 0 .*cycle"):
        ops.topo_levels(CSR(torch.tensor([0, 1, 2], device="cuda"), torch.tensor([1, 0], device="cuda")))
