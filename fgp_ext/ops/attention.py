"""Fused sparse attention ops: segment softmax + gather + segment sum over a CSR
(:func:`gather_attention`) and multi-head dot-product attention over allowed pairs
(:func:`dot_attention`), with their autograd, fake kernels and CUDA fallbacks."""
from __future__ import annotations

import math

import torch

from fgp_ext import reference as _ref
from fgp_ext.ops._library import CUDA_KERNELS, ops as _ops
from fgp_ext.ops.dropout import draw_seed
from fgp_ext.sparse import CSR, as_csr

__all__ = ["gather_attention", "dot_attention"]


def gather_attention(
    x: torch.Tensor,
    logit: torch.Tensor,
    csr: CSR,
    transpose: CSR | None = None,
) -> torch.Tensor:
    """Fused attention aggregation: segment softmax + gather + segment sum, multi-head.

    ``out[r, h] = sum_{e in row r} alpha[e, h] * x[csr.index[e], h]`` with
    ``alpha[:, h] = softmax(logit[:, h])`` over the entries of row ``r``.

    Args:
        x: ``[M, H, D]`` values (heads ``H`` of width ``D``), or ``[M, D]`` with ``logit [E]`` for one
            head.
        logit: ``[E, H]`` (or ``[E]``) attention scores of the CSR entries.
        csr: the CSR (entry ``e`` reads row ``csr.index[e]`` of ``x``); ``R = csr.num_rows``.
        transpose: the CSR's transpose (:func:`~fgp_ext.ops.csr_transpose`), read by the backward
            pass; default ``csr.transpose``, else built in the backward.

    Returns ``[R, H, D]`` (or ``[R, D]``); rows without entries are zero. Differentiable in ``x``
    and ``logit``; the backward recomputes the softmax and never uses atomics.
    """
    csr = as_csr(csr, "gather_attention")
    transpose = csr.transpose if transpose is None else transpose
    single = logit.dim() == 1
    if single:
        x, logit = x.unsqueeze(1), logit.unsqueeze(1)
    t = (None, None, None) if transpose is None else (transpose.indptr, transpose.index, transpose.perm)
    out = _ops.gather_attention(x, logit, csr.index, csr.indptr, *t)
    return out.squeeze(1) if single else out


def dot_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pairs: CSR, scale: float | None = None,
                  dropout: float = 0.0, seed: int | None = None, transpose: CSR | None = None) -> torch.Tensor:
    """Sparse multi-head dot-product attention over allowed (query, key) pairs, fused.

    ``out[r, h] = sum_{e in row r} softmax_e(scale * <q[r, h], k[index[e], h]>) * v[index[e], h]``
    for ``q [M, H, D]``, ``k, v [C, H, D]`` and ``pairs`` a CSR (``indptr [M+1]``, ``index [E]``) of
    the keys each query may attend to. ``transpose`` (default ``pairs.transpose``, which
    :attr:`fgp_ext.graph.ArchBatch.flow_pairs` carries) is the transpose the backward reads; when
    absent it is built there. ``scale`` defaults to ``1 / sqrt(D)``. Rows without pairs give zeros.
    Neither the gathered queries/keys nor the scores are materialised; differentiable in q, k, v.

    ``dropout`` in ``[0, 1)`` drops attention weights after the softmax (kept ones scaled by
    ``1 / (1 - dropout)``), inside the same kernel: the mask is :func:`~fgp_ext.ops.dropout`'s
    counter-based hash of ``seed`` and the weight's position ``e * H + h`` in the ``[E, H]`` weights,
    so it is the same on every device, recomputed in the backward and never stored. ``seed``
    defaults to a draw from torch's generator. Callers pass ``dropout`` in training only.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"attention dropout must be in [0, 1), got {dropout}")
    if float(dropout) > 0.0 and seed is None:
        seed = draw_seed()
    pairs = as_csr(pairs, "dot_attention", "pairs")
    transpose = pairs.transpose if transpose is None else transpose
    t = (None, None, None) if transpose is None else (transpose.indptr, transpose.index, transpose.perm)
    return _ops.dot_attention(q, k, v, pairs.index, pairs.indptr, scale, *t, float(dropout),
                              0 if seed is None else int(seed))


# ---- autograd ---------------------------------------------------------------------------------
def _attention_setup(ctx, inputs, output):
    x, logit, index, indptr, t_indptr, t_index, t_perm = inputs
    ctx.save_for_backward(x, logit, index, indptr, output, t_indptr, t_index, t_perm)


def _attention_backward(ctx, grad):
    x, logit, index, indptr, out, t_indptr, t_index, t_perm = ctx.saved_tensors
    if t_indptr is None or t_index is None or t_perm is None:
        t_indptr, t_index, t_perm = _ops.csr_transpose(index, indptr, x.shape[0])
    grad_x, grad_logit = _ops._gather_attention_backward(grad.contiguous(), x, logit, index, indptr, out, t_indptr,
                                                         t_index, t_perm)
    return (grad_x if ctx.needs_input_grad[0] else None, grad_logit if ctx.needs_input_grad[1] else None,
            None, None, None, None, None)


torch.library.register_autograd("fgp::gather_attention", _attention_backward, setup_context=_attention_setup)


def _dot_attention_setup(ctx, inputs, output):
    q, k, v, index, indptr, scale, t_indptr, t_index, t_perm, p, seed = inputs
    ctx.save_for_backward(q, k, v, index, indptr, output, t_indptr, t_index, t_perm)
    ctx.scale, ctx.p, ctx.seed = scale, p, seed


def _dot_attention_backward(ctx, grad):
    q, k, v, index, indptr, out, t_indptr, t_index, t_perm = ctx.saved_tensors
    if t_indptr is None or t_index is None or t_perm is None:
        t_indptr, t_index, t_perm = _ops.csr_transpose(index, indptr, k.shape[0])
    dq, dk, dv = _ops._dot_attention_backward(grad.contiguous(), q, k, v, index, indptr, out, ctx.scale, t_indptr,
                                              t_index, t_perm, ctx.p, ctx.seed)  # the same mask, from the seed
    return dq, dk, dv, None, None, None, None, None, None, None, None


torch.library.register_autograd("fgp::dot_attention", _dot_attention_backward, setup_context=_dot_attention_setup)


# ---- fake kernels -----------------------------------------------------------------------------
@torch.library.register_fake("fgp::gather_attention")
def _attention_fake(x, logit, index, indptr, t_indptr=None, t_index=None, t_perm=None):
    torch._check(x.dim() == 3, lambda: "x must be [M, H, D]")
    return x.new_empty((indptr.shape[0] - 1, x.shape[1], x.shape[2]))


@torch.library.register_fake("fgp::_gather_attention_backward")
def _attention_backward_fake(grad, x, logit, index, indptr, out, t_indptr, t_index, t_perm):
    return torch.empty_like(x), torch.empty_like(logit)


@torch.library.register_fake("fgp::dot_attention")
def _dot_attention_fake(q, k, v, index, indptr, scale, t_indptr=None, t_index=None, t_perm=None, p=0.0, seed=0):
    torch._check(q.dim() == 3, lambda: "q must be [M, H, D]")
    return torch.empty_like(q)


@torch.library.register_fake("fgp::_dot_attention_backward")
def _dot_attention_backward_fake(grad, q, k, v, index, indptr, out, scale, t_indptr, t_index, t_perm, p=0.0,
                                 seed=0):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


# ---- CUDA fallbacks ---------------------------------------------------------------------------
if not CUDA_KERNELS:
    torch.library.register_kernel(
        "fgp::gather_attention", "cuda",
        lambda x, logit, index, indptr, t_indptr=None, t_index=None, t_perm=None: _ref.gather_attention(
            x, logit, index, indptr),
    )
    torch.library.register_kernel("fgp::_gather_attention_backward", "cuda", _ref.gather_attention_backward)
    torch.library.register_kernel(
        "fgp::dot_attention", "cuda",
        lambda q, k, v, index, indptr, scale, t_indptr=None, t_index=None, t_perm=None, p=0.0, seed=0:
        _ref.dot_attention(q, k, v, index, indptr, scale, p, seed),
    )
    torch.library.register_kernel("fgp::_dot_attention_backward", "cuda", _ref.dot_attention_backward)
