"""Message-passing ops: segment sums, the CSR sparse-dense product, per-edge dot products, the CSR
transpose and GatedGCN's fused edge-gated aggregation (wrappers, autograd, fake kernels and CUDA
fallbacks together)."""
from __future__ import annotations

import torch

from fgp_ext import reference as _ref
from fgp_ext.ops._library import CUDA_KERNELS, ops as _ops
from fgp_ext.sparse import CSR, as_csr

__all__ = ["segment_sum_csr", "gather_segment_sum", "edge_dot", "csr_transpose", "gated_aggregate"]


def segment_sum_csr(src: torch.Tensor, indptr: torch.Tensor) -> torch.Tensor:
    """Sum consecutive rows of ``src`` [E, ...] per segment: ``out[i] = src[indptr[i]:indptr[i+1]].sum(0)``.

    Returns ``[len(indptr) - 1, ...]``; empty segments give zeros. Differentiable in ``src``.
    """
    return _ops.segment_sum_csr(src, indptr)


def gather_segment_sum(x: torch.Tensor, csr: CSR, weight: torch.Tensor | None = None,
                       transpose: CSR | None = None) -> torch.Tensor:
    """The message-passing step ``out[v] = sum_{e in row v} weight[e] * x[csr.index[e]]``.

    Args:
        x: node features ``[M, ...]`` (float32/float64).
        csr: the graph by destination (:class:`~fgp_ext.sparse.CSR`): row ``v`` lists the rows of
            ``x`` it sums (its predecessors); ``N = csr.num_rows``.
        weight: optional ``[E]`` per-entry weights (same dtype as ``x``); differentiable.
        transpose: the CSR's transpose, used only by the backward pass; default ``csr.transpose``,
            else built in the backward. Pass a batch's precomputed one to avoid rebuilding it.

    Returns ``[N, ...]``. Differentiable in ``x`` and ``weight``.
    """
    csr = as_csr(csr, "gather_segment_sum")
    t = _transpose_of(csr, transpose)
    t_indptr, t_index, t_perm = (None, None, None) if t is None else (t.indptr, t.index, t.perm)
    return _ops.gather_segment_sum(x, csr.index, csr.indptr, weight, t_indptr, t_index, t_perm)


def edge_dot(a: torch.Tensor, b: torch.Tensor, csr: CSR) -> torch.Tensor:
    """Per-entry dot products ``out[e] = <a[row(e)], b[csr.index[e]]>`` (``[E]``).

    ``a`` has one row per CSR row, ``b`` one per column. The weight gradient of
    :func:`gather_segment_sum`; also dot-product attention scores on edges. Differentiable.
    """
    csr = as_csr(csr, "edge_dot")
    return _ops.edge_dot(a, b, csr.index, csr.indptr)


def csr_transpose(csr: CSR, num_cols: int) -> CSR:
    """The transpose of a CSR with ``num_cols`` columns: ``CSR(indptr, index, perm)`` where row
    ``c`` lists the rows of ``csr`` that hold ``c``, in original entry order (stable), and ``perm``
    gives each transposed entry's position in ``csr``. For a graph by destination this is the graph
    by source (successor lists)."""
    csr = as_csr(csr, "csr_transpose")
    t_indptr, t_index, t_perm = _ops.csr_transpose(csr.index, csr.indptr, int(num_cols))
    return CSR(t_indptr, t_index, t_perm)


def gated_aggregate(gate_dst: torch.Tensor, gate_src: torch.Tensor, value: torch.Tensor, csr: CSR,
                    eps: float = 1e-6, transpose: CSR | None = None) -> torch.Tensor:
    """GatedGCN's edge-gated aggregation, fused: for every row ``v`` of ``csr`` (entries ``e``
    reading rows ``u_e``), per channel::

        g_e    = sigmoid(gate_dst[v] + gate_src[u_e])
        out[v] = sum_e g_e * value[u_e] / (sum_e g_e + eps)

    Args:
        gate_dst: ``[N, F]`` (the ``A h`` of the layer), one row per CSR row.
        gate_src, value: ``[M, F]`` (``B h`` and ``V h``), read through ``csr.index``.
        csr: the CSR (``indptr [N + 1]``, ``index [E]``).
        eps: ``> 0``; keeps rows whose gates are all ~0 finite; rows without entries give 0.
        transpose: the CSR's transpose (its ``indptr``/``index``; the perm is not needed), read by
            the backward only; default ``csr.transpose``, else built in the backward. A symmetric
            CSR (e.g. :attr:`ArchBatch.undirected_csr`) is its own transpose: pass it again.

    Returns ``[N, F]``. Differentiable in the three inputs; neither the forward nor the backward
    stores per-entry tensors (the backward recomputes the gates), and no atomics are used.
    """
    csr = as_csr(csr, "gated_aggregate")
    transpose = _transpose_of(csr, transpose)
    t = (None, None) if transpose is None else (transpose.indptr, transpose.index)
    return _ops.gated_aggregate(gate_dst, gate_src, value, csr.index, csr.indptr, float(eps), *t)


def _transpose_of(csr: CSR, transpose: CSR | None) -> CSR | None:
    return csr.transpose if transpose is None else transpose


# ---- autograd ---------------------------------------------------------------------------------
def _segment_sum_setup(ctx, inputs, output):
    src, indptr = inputs
    ctx.save_for_backward(indptr)
    ctx.num_entries = src.shape[0]


def _segment_sum_backward(ctx, grad):
    (indptr,) = ctx.saved_tensors
    rows = _ref.csr_row_ids(indptr, ctx.num_entries)
    return grad.index_select(0, rows), None


torch.library.register_autograd("fgp::segment_sum_csr", _segment_sum_backward, setup_context=_segment_sum_setup)


def _gather_setup(ctx, inputs, output):
    x, index, indptr, weight, t_indptr, t_index, t_perm = inputs
    ctx.save_for_backward(x, index, indptr, weight, t_indptr, t_index, t_perm)
    ctx.num_rows_x = x.shape[0]


def _gather_backward(ctx, grad):
    x, index, indptr, weight, t_indptr, t_index, t_perm = ctx.saved_tensors
    grad_x = grad_w = None
    if ctx.needs_input_grad[0]:
        if t_indptr is None or t_index is None or t_perm is None:
            t_indptr, t_index, t_perm = _ops.csr_transpose(index, indptr, ctx.num_rows_x)
        t_weight = None if weight is None else weight.index_select(0, t_perm)
        grad_x = _ops.gather_segment_sum(grad, t_index, t_indptr, t_weight, None, None, None)
    if weight is not None and ctx.needs_input_grad[3]:
        grad_w = _ops.edge_dot(grad, x, index, indptr)
    return grad_x, None, None, grad_w, None, None, None


torch.library.register_autograd("fgp::gather_segment_sum", _gather_backward, setup_context=_gather_setup)


def _edge_dot_setup(ctx, inputs, output):
    a, b, index, indptr = inputs
    ctx.save_for_backward(a, b, index, indptr)


def _edge_dot_backward(ctx, grad):
    a, b, index, indptr = ctx.saved_tensors
    grad_a = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_a = _ops.gather_segment_sum(b, index, indptr, grad, None, None, None).reshape(a.shape)
    if ctx.needs_input_grad[1]:
        t_indptr, t_index, t_perm = _ops.csr_transpose(index, indptr, b.shape[0])
        grad_b = _ops.gather_segment_sum(a, t_index, t_indptr, grad.index_select(0, t_perm), None, None, None)
        grad_b = grad_b.reshape(b.shape)
    return grad_a, grad_b, None, None


torch.library.register_autograd("fgp::edge_dot", _edge_dot_backward, setup_context=_edge_dot_setup)


def _gated_setup(ctx, inputs, output):
    gate_dst, gate_src, value, index, indptr, eps, t_indptr, t_index = inputs
    ctx.save_for_backward(gate_dst, gate_src, value, index, indptr, output, t_indptr, t_index)
    ctx.eps = eps


def _gated_backward(ctx, grad):
    gate_dst, gate_src, value, index, indptr, out, t_indptr, t_index = ctx.saved_tensors
    if t_indptr is None or t_index is None:
        t_indptr, t_index, _ = _ops.csr_transpose(index, indptr, gate_src.shape[0])
    grads = _ops._gated_aggregate_backward(grad.contiguous(), gate_dst, gate_src, value, index, indptr, out, ctx.eps,
                                           t_indptr, t_index)
    return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:3])), None, None, None, None, None)


torch.library.register_autograd("fgp::gated_aggregate", _gated_backward, setup_context=_gated_setup)


# ---- fake kernels (shapes only: torch.compile, meta tensors) -----------------------------------
@torch.library.register_fake("fgp::segment_sum_csr")
def _segment_sum_fake(src, indptr):
    torch._check(indptr.dim() == 1, lambda: "indptr must be 1-D")
    return src.new_empty((indptr.shape[0] - 1, *src.shape[1:]))


@torch.library.register_fake("fgp::gather_segment_sum")
def _gather_fake(x, index, indptr, weight=None, t_indptr=None, t_index=None, t_perm=None):
    torch._check(index.dim() == 1 and indptr.dim() == 1, lambda: "index and indptr must be 1-D")
    return x.new_empty((indptr.shape[0] - 1, *x.shape[1:]))


@torch.library.register_fake("fgp::edge_dot")
def _edge_dot_fake(a, b, index, indptr):
    return a.new_empty((index.shape[0],))


@torch.library.register_fake("fgp::csr_transpose")
def _csr_transpose_fake(index, indptr, num_cols):
    return index.new_empty((num_cols + 1,)), index.new_empty(index.shape), index.new_empty(index.shape)


@torch.library.register_fake("fgp::gated_aggregate")
def _gated_fake(gate_dst, gate_src, value, index, indptr, eps=1e-6, t_indptr=None, t_index=None):
    torch._check(gate_dst.dim() == 2, lambda: "gate_dst must be [N, F]")
    return gate_dst.new_empty(gate_dst.shape)  # contiguous, as the kernels return


@torch.library.register_fake("fgp::_gated_aggregate_backward")
def _gated_backward_fake(grad, gate_dst, gate_src, value, index, indptr, out, eps, t_indptr, t_index):
    return gate_dst.new_empty(gate_dst.shape), gate_src.new_empty(gate_src.shape), value.new_empty(value.shape)


# ---- CUDA without compiled CUDA kernels: plain-PyTorch fallbacks, never "no kernel" ----------
if not CUDA_KERNELS:
    torch.library.register_kernel("fgp::segment_sum_csr", "cuda", _ref.segment_sum_csr)
    torch.library.register_kernel(
        "fgp::gather_segment_sum", "cuda",
        lambda x, index, indptr, weight=None, t_indptr=None, t_index=None, t_perm=None: _ref.gather_segment_sum(
            x, index, indptr, weight),
    )
    torch.library.register_kernel("fgp::edge_dot", "cuda", _ref.edge_dot)
    torch.library.register_kernel("fgp::csr_transpose", "cuda", _ref.csr_transpose)
    torch.library.register_kernel(
        "fgp::gated_aggregate", "cuda",
        lambda gate_dst, gate_src, value, index, indptr, eps=1e-6, t_indptr=None, t_index=None: _ref.gated_aggregate(
            gate_dst, gate_src, value, index, indptr, eps),
    )
    torch.library.register_kernel("fgp::_gated_aggregate_backward", "cuda", _ref.gated_aggregate_backward)
