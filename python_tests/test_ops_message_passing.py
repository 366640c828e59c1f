"""segment_sum_csr, gather_segment_sum, edge_dot, csr_transpose against their references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from conftest import csr_problems, random_csr
from fgp_ext.sparse import CSR
from fgp_ext import ops
from fgp_ext import reference as ref

SETTINGS = settings(max_examples=60, deadline=None)


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)


@SETTINGS
@given(csr_problems())
def test_segment_sum_matches_reference(problem):
    x, index, indptr, w = problem
    src = x.index_select(0, index)  # [E, F] rows to segment
    torch.testing.assert_close(ops.segment_sum_csr(src, indptr), ref.segment_sum_csr(src, indptr), **tol(x.dtype))


@SETTINGS
@given(csr_problems())
def test_gather_segment_sum_matches_reference(problem):
    x, index, indptr, w = problem
    for weight in (None, w):
        got = ops.gather_segment_sum(x, CSR(indptr, index), weight)
        torch.testing.assert_close(got, ref.gather_segment_sum(x, index, indptr, weight), **tol(x.dtype))
        assert got.shape == (indptr.numel() - 1, x.shape[1])


@SETTINGS
@given(csr_problems())
def test_edge_dot_matches_reference(problem):
    x, index, indptr, w = problem
    # from the example's own data, so that a failing example replays exactly
    a = torch.randn(indptr.numel() - 1, x.shape[1], dtype=x.dtype,
                    generator=torch.Generator().manual_seed(index.numel() * 1009 + x.shape[0]))
    torch.testing.assert_close(ops.edge_dot(a, x, CSR(indptr, index)), ref.edge_dot(a, x, index, indptr), **tol(x.dtype))


@SETTINGS
@given(csr_problems())
def test_csr_transpose_matches_reference_and_inverts(problem):
    x, index, indptr, w = problem
    t = ops.csr_transpose(CSR(indptr, index), x.shape[0])
    for got, want in zip(t[:3], ref.csr_transpose(index, indptr, x.shape[0])):
        assert torch.equal(got, want)
    # Each transposed entry (column c, row t.index[j]) is original edge t.perm[j]: same row, column c.
    rows = ref.csr_row_ids(indptr, index.numel())
    cols = ref.csr_row_ids(t.indptr, index.numel())
    assert torch.equal(index[t.perm], cols)
    assert torch.equal(rows[t.perm], t.index)
    assert torch.equal(torch.sort(t.perm).values, torch.arange(index.numel()))
    # Stable: within a column, original edge order is kept.
    assert bool((t.perm.diff()[cols.diff() == 0] > 0).all())
    # Transposing back restores the row pointers.
    assert torch.equal(ops.csr_transpose(t, indptr.numel() - 1).indptr, indptr)


def test_trailing_dims_and_1d_inputs():
    indptr = torch.tensor([0, 2, 2, 3])
    src = torch.randn(3, 2, 4)
    torch.testing.assert_close(ops.segment_sum_csr(src, indptr), ref.segment_sum_csr(src, indptr))
    v = torch.randn(3)
    torch.testing.assert_close(ops.segment_sum_csr(v, indptr), torch.stack([v[:2].sum(), v[:0].sum(), v[2]]))
    x = torch.randn(5, 2, 3)
    index = torch.tensor([4, 0, 4])
    torch.testing.assert_close(ops.gather_segment_sum(x, CSR(indptr, index)), ref.gather_segment_sum(x, index, indptr))


def test_empty_inputs():
    # zero rows
    out = ops.segment_sum_csr(torch.zeros(0, 3), torch.tensor([0]))
    assert out.shape == (0, 3)
    # rows but no entries: all zeros
    out = ops.gather_segment_sum(torch.randn(4, 3), CSR(torch.zeros(5, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)))
    assert out.shape == (4, 3) and not out.any()
    t = ops.csr_transpose(CSR(torch.zeros(3, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)), 4)
    assert torch.equal(t.indptr, torch.zeros(5, dtype=torch.int64)) and t.index.numel() == 0


def _grad_problem(seed=0, rows=6, cols=5, feat=3):
    rng = np.random.default_rng(seed)
    indptr, index = random_csr(rng, rows, cols)
    x = torch.randn(cols, feat, dtype=torch.float64, requires_grad=True)
    w = torch.randn(index.numel(), dtype=torch.float64, requires_grad=True)
    return x, index, indptr, w


@pytest.mark.parametrize("seed", range(3))
def test_gradcheck(seed):
    x, index, indptr, w = _grad_problem(seed)
    assert torch.autograd.gradcheck(lambda x, w: ops.gather_segment_sum(x, CSR(indptr, index), w), (x, w))
    assert torch.autograd.gradcheck(lambda x: ops.gather_segment_sum(x, CSR(indptr, index)), (x,))
    t = ops.csr_transpose(CSR(indptr, index), x.shape[0])
    assert torch.autograd.gradcheck(lambda x, w: ops.gather_segment_sum(x, CSR(indptr, index), w, transpose=t), (x, w))
    src = torch.randn(index.numel(), 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: ops.segment_sum_csr(s, indptr), (src,))
    a = torch.randn(indptr.numel() - 1, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, x: ops.edge_dot(a, x, CSR(indptr, index)), (a, x))
    # Second order through the op's own backward (it is built from differentiable fgp ops).
    assert torch.autograd.gradgradcheck(lambda x, w: ops.gather_segment_sum(x, CSR(indptr, index), w), (x, w))


def test_gradient_matches_reference_autograd():
    x, index, indptr, w = _grad_problem(7, rows=30, cols=20, feat=4)
    g = torch.randn(30, 4, dtype=torch.float64)
    ours = torch.autograd.grad((ops.gather_segment_sum(x, CSR(indptr, index), w) * g).sum(), (x, w))
    theirs = torch.autograd.grad((ref.gather_segment_sum(x, index, indptr, w) * g).sum(), (x, w))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("seed", range(2))
def test_opcheck(seed):
    x, index, indptr, w = _grad_problem(seed)
    t = ops.csr_transpose(CSR(indptr, index), x.shape[0])
    torch.library.opcheck(torch.ops.fgp.gather_segment_sum, (x, index, indptr, w))
    torch.library.opcheck(torch.ops.fgp.gather_segment_sum, (x, index, indptr, None, t.indptr, t.index, t.perm))
    torch.library.opcheck(torch.ops.fgp.segment_sum_csr, (torch.randn(index.numel(), 2, dtype=torch.float64,
                                                                    requires_grad=True), indptr))
    a = torch.randn(indptr.numel() - 1, 3, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.fgp.edge_dot, (a, x, index, indptr))
    torch.library.opcheck(torch.ops.fgp.csr_transpose, (index, indptr, x.shape[0]))


def test_torch_compile_fullgraph():
    x, index, indptr, w = _grad_problem(3, rows=8, cols=8, feat=4)
    t = ops.csr_transpose(CSR(indptr, index), x.shape[0])

    def layer(x, w):
        h = ops.gather_segment_sum(x, CSR(indptr, index), w, transpose=t)
        s = ops.edge_dot(h, x, CSR(indptr, index))
        return ops.segment_sum_csr(torch.tanh(h), indptr.new_tensor([0, 4, 8])).sum() + s.sum()

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    want = layer(x, w)
    got = compiled(x, w)
    torch.testing.assert_close(got, want)
    gx, gw = torch.autograd.grad(got, (x, w))
    ex, ew = torch.autograd.grad(layer(x, w), (x, w))
    torch.testing.assert_close(gx, ex)
    torch.testing.assert_close(gw, ew)


def test_deterministic_across_runs_and_threads(num_threads):
    rng = np.random.default_rng(11)
    indptr, index = random_csr(rng, 5000, 3000, max_deg=12)
    x = torch.from_numpy(rng.standard_normal((3000, 33)).astype(np.float32))
    w = torch.from_numpy(rng.standard_normal(index.numel()).astype(np.float32))
    torch.set_num_threads(1)
    base = ops.gather_segment_sum(x, CSR(indptr, index), w)
    base_seg = ops.segment_sum_csr(x.index_select(0, index), indptr)
    torch.set_num_threads(num_threads)
    for _ in range(3):
        assert torch.equal(ops.gather_segment_sum(x, CSR(indptr, index), w), base)
        assert torch.equal(ops.segment_sum_csr(x.index_select(0, index), indptr), base_seg)


# ------------------------------------------------------------------------------------------------
# Bad input: a clear Python exception, never a crash
# ------------------------------------------------------------------------------------------------
BAD_CASES = [
    ("int index dtype", lambda: ops.gather_segment_sum(torch.randn(3, 2), CSR(torch.tensor([0, 2]), torch.tensor([0, 1], dtype=torch.int32))), "int64"),
    ("int features", lambda: ops.gather_segment_sum(torch.ones(3, 2, dtype=torch.int64), CSR(torch.tensor([0, 2]), torch.tensor([0, 1]))), "float32 or float64"),
    ("index out of range", lambda: ops.gather_segment_sum(torch.randn(3, 2), CSR(torch.tensor([0, 2]), torch.tensor([0, 3]))), "out of range"),
    ("negative index", lambda: ops.gather_segment_sum(torch.randn(3, 2), CSR(torch.tensor([0, 2]), torch.tensor([-1, 0]))), "out of range"),
    ("indptr end mismatch", lambda: ops.gather_segment_sum(torch.randn(3, 2), CSR(torch.tensor([0, 3]), torch.tensor([0, 1]))), "number of entries"),
    ("indptr start", lambda: ops.segment_sum_csr(torch.randn(3, 2), torch.tensor([1, 3])), "must be 0"),
    ("decreasing indptr", lambda: ops.segment_sum_csr(torch.randn(5, 2), torch.tensor([0, 4, 1, 5])),
     "non-decreasing"),
    ("decreasing indptr gather", lambda: ops.gather_segment_sum(torch.randn(5, 2), CSR(torch.tensor([0, 4, -2, 5]), torch.zeros(5, dtype=torch.int64))), "non-decreasing"),
    ("empty indptr", lambda: ops.segment_sum_csr(torch.randn(0, 2), torch.zeros(0, dtype=torch.int64)),
     "at least one"),
    ("weight shape", lambda: ops.gather_segment_sum(torch.randn(3, 2), CSR(torch.tensor([0, 2]), torch.tensor([0, 1])),
                                                    torch.ones(3)), "shape"),
    ("weight dtype", lambda: ops.gather_segment_sum(torch.randn(3, 2), CSR(torch.tensor([0, 2]), torch.tensor([0, 1])),
                                                    torch.ones(2, dtype=torch.float64)), "dtype"),
    ("2-D index", lambda: ops.gather_segment_sum(torch.randn(3, 2), CSR(torch.tensor([0, 2]), torch.tensor([[0, 1]]))),
     "1-D"),
    ("edge_dot rows", lambda: ops.edge_dot(torch.randn(3, 2), torch.randn(3, 2), CSR(torch.tensor([0, 2]), torch.tensor([0, 1]))), "one row per CSR row"),
    ("transpose cols", lambda: ops.csr_transpose(CSR(torch.tensor([0, 2]), torch.tensor([0, 5])), 3), "out of range"),
]


@pytest.mark.parametrize("name,call,message", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_raises_clear_error(name, call, message):
    with pytest.raises((RuntimeError, ValueError, TypeError)) as info:
        call()
    assert message in str(info.value), str(info.value)


def test_outputs_sized_by_values_are_refused_above_the_limit(monkeypatch):
    """A num_cols of 2^40 would ask for 8 TiB of row pointers: refused before allocating, with the
    size and the setting that allows more (FGP_MAX_OUTPUT_BYTES, read at every call)."""
    index, indptr = torch.tensor([0, 1]), torch.tensor([0, 1, 2])
    with pytest.raises(RuntimeError, match=r"csr_transpose: num_cols \+ 1 row pointers would need .*FGP_MAX_OUTPUT_BYTES"):
        ops.csr_transpose(CSR(indptr, index), 2**40)
    monkeypatch.setenv("FGP_MAX_OUTPUT_BYTES", "64")  # 8 int64 row pointers
    assert ops.csr_transpose(CSR(indptr, index), 7).indptr.numel() == 8
    with pytest.raises(RuntimeError, match="above the limit of 64 bytes"):
        ops.csr_transpose(CSR(indptr, index), 8)
    monkeypatch.setenv("FGP_MAX_OUTPUT_BYTES", "lots")
    with pytest.raises(RuntimeError, match="FGP_MAX_OUTPUT_BYTES must be a positive integer"):
        ops.csr_transpose(CSR(indptr, index), 2)
