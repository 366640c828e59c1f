"""gated_aggregate (GatedGCN's fused edge-gated aggregation): against the plain-PyTorch reference,
gradients (gradcheck, opcheck), the symmetric-CSR transpose shortcut, determinism, bad input, and
the GatedGCN layer against its unfused formulation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import csr_problems, random_csr
from hypothesis import given, settings

from fgp_ext import ArchGraph, collate, ops
from fgp_ext import reference as ref
from fgp_ext.encoders.gatedgcn import GatedGCNLayer
from fgp_ext.ops import CSR

SETTINGS = settings(max_examples=40, deadline=None)


def _inputs(rows, cols, feat, dtype=torch.float64, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(rows, feat, generator=g, dtype=dtype),
            scale * torch.randn(cols, feat, generator=g, dtype=dtype),
            torch.randn(cols, feat, generator=g, dtype=dtype))


@SETTINGS
@given(csr_problems(max_rows=12, max_cols=10, max_feat=70))
def test_matches_reference_values_and_gradients(problem):
    """Random CSRs (empty rows, repeated columns), both dtypes, widths across the kernel's column
    tile (64 floats / 32 doubles), with and without a precomputed transpose."""
    x, index, indptr, _ = problem
    rows, feat = indptr.numel() - 1, x.shape[1]
    a, b, v = _inputs(rows, x.shape[0], feat, x.dtype, seed=feat + rows, scale=3.0)
    csr = CSR(indptr, index)
    tol = dict(rtol=1e-5, atol=1e-5) if x.dtype == torch.float32 else dict(rtol=1e-11, atol=1e-12)
    leaves = [t.clone().requires_grad_(True) for t in (a, b, v)]
    expect = ref.gated_aggregate(*leaves, index, indptr)
    up = torch.randn(expect.shape, dtype=expect.dtype, generator=torch.Generator().manual_seed(feat * 131 + rows))
    expect_grads = torch.autograd.grad(expect, leaves, up) if expect.numel() else None
    for transpose in (None, ops.csr_transpose(CSR(indptr, index), x.shape[0])):
        got = ops.gated_aggregate(*leaves, csr, transpose=transpose)
        torch.testing.assert_close(got, expect, **tol)
        if expect_grads is not None:
            for g, e in zip(torch.autograd.grad(got, leaves, up), expect_grads):
                torch.testing.assert_close(g, e, **tol)


def test_worked_example_and_empty_rows():
    """Row 0 reads columns 0 and 1; row 1 has no entries (0); row 2 reads column 1 twice."""
    a = torch.tensor([[0.0], [5.0], [1.0]], dtype=torch.float64)
    b = torch.tensor([[0.0], [-1.0]], dtype=torch.float64)
    v = torch.tensor([[2.0], [4.0]], dtype=torch.float64)
    csr = CSR(torch.tensor([0, 2, 2, 4]), torch.tensor([0, 1, 1, 1]))
    out = ops.gated_aggregate(a, b, v, csr, eps=1e-300)
    g0, g1 = torch.sigmoid(torch.tensor(0.0, dtype=torch.float64)), torch.sigmoid(torch.tensor(-1.0, dtype=torch.float64))
    expect = torch.stack([(g0 * 2 + g1 * 4) / (g0 + g1), torch.tensor(0.0, dtype=torch.float64),
                          torch.tensor(4.0, dtype=torch.float64)]).reshape(3, 1)
    torch.testing.assert_close(out, expect, rtol=1e-15, atol=1e-15)


def test_extreme_gate_inputs_stay_finite():
    """Gate pre-activations far outside exp's range: the gates saturate to 0 / 1, nothing is NaN."""
    a, b, v = _inputs(4, 3, 5, torch.float32, scale=1.0)
    a = a * 1e4
    csr = CSR(torch.tensor([0, 2, 3, 3, 6]), torch.tensor([0, 1, 2, 0, 1, 2]))
    leaves = [t.clone().requires_grad_(True) for t in (a, b, v)]
    out = ops.gated_aggregate(*leaves, csr)
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(out.sum(), leaves))
    torch.testing.assert_close(out, ref.gated_aggregate(a, b, v, csr.index, csr.indptr), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_gradcheck_and_opcheck(seed):
    rng = np.random.default_rng(seed)
    indptr, index = random_csr(rng, 6, 5)
    a, b, v = (t.requires_grad_(True) for t in _inputs(6, 5, 3, seed=seed))
    csr = CSR(indptr, index)
    t = ops.csr_transpose(CSR(indptr, index), 5)
    assert torch.autograd.gradcheck(lambda a, b, v: ops.gated_aggregate(a, b, v, csr), (a, b, v))
    assert torch.autograd.gradcheck(lambda a, b, v: ops.gated_aggregate(a, b, v, csr, transpose=t), (a, b, v))
    args = (a.detach(), b.detach(), v.detach(), index, indptr, 1e-6)
    torch.library.opcheck(torch.ops.fgp.gated_aggregate, args)
    torch.library.opcheck(torch.ops.fgp.gated_aggregate, (*args, t.indptr, t.index))


def test_symmetric_csr_is_its_own_transpose():
    """The GatedGCN layer passes the undirected CSR as its own transpose: same gradients as with the
    true transpose (the backward needs each transposed row's multiset of rows, not the entry map)."""
    b_ = collate([ArchGraph([0, 1, 2, 3], [[0, 0, 1, 2], [1, 2, 3, 3]]), ArchGraph([1, 2], [[0], [1]])])
    csr = b_.undirected_csr
    n = b_.num_nodes
    leaves = [t.requires_grad_(True) for t in _inputs(n, n, 4)]
    up = torch.randn(n, 4, dtype=torch.float64)
    g_self = torch.autograd.grad(ops.gated_aggregate(*leaves, csr, transpose=csr), leaves, up)
    g_true = torch.autograd.grad(ops.gated_aggregate(*leaves, csr, transpose=ops.csr_transpose(
        csr, n)), leaves, up)
    for x, y in zip(g_self, g_true):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-14)


def test_deterministic_across_runs_and_threads(num_threads):
    rng = np.random.default_rng(5)
    indptr, index = random_csr(rng, 3000, 2000, max_deg=10)
    a, b, v = (t.float() for t in _inputs(3000, 2000, 40, seed=1))
    csr = CSR(indptr, index)

    def run():
        leaves = [t.clone().requires_grad_(True) for t in (a, b, v)]
        out = ops.gated_aggregate(*leaves, csr)
        return (out, *torch.autograd.grad(out, leaves, torch.ones_like(out)))

    torch.set_num_threads(1)
    base = run()
    torch.set_num_threads(num_threads)
    for _ in range(2):
        for x, y in zip(run(), base):
            assert torch.equal(x, y)


def test_gatedgcn_layer_equals_its_unfused_formulation():
    """The layer on the fused op computes what the unfused layer (gather, sigmoid, segment sums)
    did, values and parameter gradients."""
    torch.manual_seed(0)
    b_ = collate([ArchGraph([0, 1, 2, 3, 1], [[0, 0, 1, 2, 3], [1, 2, 3, 3, 4]]), ArchGraph([4], [])] * 3)
    layer = GatedGCNLayer(6).double()
    h = torch.randn(b_.num_nodes, 6, dtype=torch.float64, requires_grad=True)

    def unfused(h):
        uh, ah, vh, bh = layer.proj(h).split(6, dim=-1)
        csr, rows = b_.undirected_csr, b_.undirected_rows
        gate = torch.sigmoid(ah.index_select(0, rows) + bh.index_select(0, csr.index))
        num = ref.segment_sum_csr(gate * vh.index_select(0, csr.index), csr.indptr)
        return uh + num / (ref.segment_sum_csr(gate, csr.indptr) + 1e-6)

    params = [h, *layer.parameters()]
    got, expect = layer(h, b_.undirected_csr), unfused(h)
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)
    for x, y in zip(torch.autograd.grad(got.sum(), params), torch.autograd.grad(expect.sum(), params)):
        torch.testing.assert_close(x, y, rtol=1e-11, atol=1e-12)


def _csr():
    return CSR(torch.tensor([0, 2, 3]), torch.tensor([0, 1, 1]))


BAD_CASES = [
    ("int values", lambda: ops.gated_aggregate(torch.ones(2, 3, dtype=torch.int64), torch.ones(2, 3),
                                               torch.ones(2, 3), _csr()), "float32 or float64"),
    ("mixed dtypes", lambda: ops.gated_aggregate(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.float64),
                                                 torch.ones(2, 3), _csr()), "one dtype"),
    ("width mismatch", lambda: ops.gated_aggregate(torch.ones(2, 3), torch.ones(2, 4), torch.ones(2, 4), _csr()),
     "F = 3"),
    ("value shape", lambda: ops.gated_aggregate(torch.ones(2, 3), torch.ones(2, 3), torch.ones(3, 3), _csr()),
     "shape of gate_src"),
    ("rows vs indptr", lambda: ops.gated_aggregate(torch.ones(3, 3), torch.ones(2, 3), torch.ones(2, 3), _csr()),
     "N + 1"),
    ("index out of range", lambda: ops.gated_aggregate(torch.ones(2, 3), torch.ones(1, 3), torch.ones(1, 3), _csr()),
     "out of range"),
    ("int32 index", lambda: ops.gated_aggregate(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3), CSR(
        torch.tensor([0, 2, 3]), torch.tensor([0, 1, 1], dtype=torch.int32))), "int64"),
    ("decreasing indptr", lambda: ops.gated_aggregate(torch.ones(3, 3), torch.ones(2, 3), torch.ones(2, 3), CSR(
        torch.tensor([0, 2, 1, 3]), torch.tensor([0, 1, 1]))), "non-decreasing"),
    ("negative eps", lambda: ops.gated_aggregate(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3), _csr(),
                                                 eps=-1.0), "eps must be > 0"),
    ("zero eps", lambda: ops.gated_aggregate(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3), _csr(), eps=0.0),
     "eps must be > 0"),
    ("zero eps, reference", lambda: ref.gated_aggregate(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3),
                                                        _csr().index, _csr().indptr, eps=0.0), "eps must be > 0"),
    ("bad transpose", lambda: torch.ops.fgp._gated_aggregate_backward(
        torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3), torch.tensor([0, 1, 1]),
        torch.tensor([0, 2, 3]), torch.ones(2, 3), 1e-6, torch.tensor([0, 1, 3]), torch.tensor([0, 5, 1])),
     "out of range"),
]


@pytest.mark.parametrize("name,call,message", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_raises_clear_error(name, call, message):
    with pytest.raises((RuntimeError, ValueError, TypeError)) as info:
        call()
    assert message in str(info.value), str(info.value)


def test_strided_inputs_are_read_in_place_or_copied_and_agree():
    """Column slices of one projection (row stride 4F) are read in place; other layouts (a
    transposed view) are copied; all give the contiguous result, values and gradients."""
    rng = np.random.default_rng(3)
    indptr, index = random_csr(rng, 7, 7)
    csr = CSR(indptr, index)
    proj = torch.randn(7, 12, dtype=torch.float64, requires_grad=True)
    a, b, v = proj[:, 0:3], proj[:, 6:9], proj[:, 3:6]
    got = ops.gated_aggregate(a, b, v, csr)
    plain = [t.detach().clone().requires_grad_(True) for t in (a, b, v)]
    expect = ops.gated_aggregate(*plain, csr)
    torch.testing.assert_close(got, expect, rtol=0, atol=0)
    up = torch.randn_like(got)
    (g_proj,) = torch.autograd.grad(got, proj, up)
    g_plain = torch.autograd.grad(expect, plain, up)
    torch.testing.assert_close(g_proj[:, 0:3], g_plain[0], rtol=0, atol=0)
    torch.testing.assert_close(g_proj[:, 6:9], g_plain[1], rtol=0, atol=0)
    torch.testing.assert_close(g_proj[:, 3:6], g_plain[2], rtol=0, atol=0)
    tr = torch.randn(3, 7, dtype=torch.float64).t()  # stride (1, 7): not unit channel stride
    torch.testing.assert_close(ops.gated_aggregate(tr, plain[1].detach(), plain[2].detach(), csr),
                               ops.gated_aggregate(tr.contiguous(), plain[1].detach(), plain[2].detach(), csr),
                               rtol=0, atol=0)


def test_opcheck_on_non_contiguous_inputs():
    csr = _csr()
    args = (torch.randn(3, 2).t(), torch.randn(3, 2).t(), torch.randn(2, 3), csr.index, csr.indptr, 1e-6)
    torch.library.opcheck(torch.ops.fgp.gated_aggregate, args)
