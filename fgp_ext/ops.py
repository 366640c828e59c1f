"""Thin, documented wrappers over the compiled ``torch.ops.fgp`` ops, plus their autograd formulas
and fake (meta) kernels, so they work under ``torch.autograd``, ``torch.library.opcheck`` and
``torch.compile(fullgraph=True)``.

Conventions shared by every op:

* CSR by destination: row ``i`` of a CSR ``(indptr, index)`` holds the entries
  ``index[indptr[i]:indptr[i+1]]``; for a graph these are node ``i``'s predecessors (edge sources).
* Index tensors are ``int64``; features are ``float32`` or ``float64``.
* Every reduction sums in entry order inside one worker: results are bitwise reproducible across
  runs and thread counts (no atomics).

When the package was built without CUDA kernels (a CPU-only torch), CUDA tensors still work: the
ops fall back to the plain-PyTorch implementations of :mod:`fgp_ext.reference`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from fgp_ext import _C
from fgp_ext import reference as _ref

#: True when the compiled module carries CUDA kernels (built against a CUDA torch).
CUDA_KERNELS: bool = bool(_C.cuda_kernels)

_ops = torch.ops.fgp


class CSR(NamedTuple):
    """A compressed-sparse-row structure: ``indptr`` [rows+1], ``index`` [E] and, for a transpose,
    ``perm`` [E] mapping each entry back to its position in the original CSR."""

    indptr: torch.Tensor
    index: torch.Tensor
    perm: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------
# Public wrappers
# ----------------------------------------------------------------------------------------------
def segment_sum_csr(src: torch.Tensor, indptr: torch.Tensor) -> torch.Tensor:
    """Sum consecutive rows of ``src`` [E, ...] per segment: ``out[i] = src[indptr[i]:indptr[i+1]].sum(0)``.

    Returns ``[len(indptr) - 1, ...]``; empty segments give zeros. Differentiable in ``src``.
    """
    return _ops.segment_sum_csr(src, indptr)


def gather_segment_sum(
    x: torch.Tensor,
    index: torch.Tensor,
    indptr: torch.Tensor,
    weight: torch.Tensor | None = None,
    transpose: CSR | None = None,
) -> torch.Tensor:
    """The message-passing step ``out[i] = sum_{e in row i} weight[e] * x[index[e]]``.

    Args:
        x: node features ``[M, ...]`` (float32/float64).
        index: ``int64 [E]``, the gathered row of ``x`` for each entry (an edge's source).
        indptr: ``int64 [N+1]``, CSR row pointers (rows are the output nodes, edge destinations).
        weight: optional ``[E]`` per-entry weights (same dtype as ``x``); differentiable.
        transpose: optional :func:`csr_transpose` of ``(index, indptr)``; used only by the backward
            pass. Pass the batch's precomputed transpose to avoid rebuilding it on every call.

    Returns ``[N, ...]``. Differentiable in ``x`` and ``weight``.
    """
    t_indptr = t_index = t_perm = None
    if transpose is not None:
        t_indptr, t_index, t_perm = transpose.indptr, transpose.index, transpose.perm
    return _ops.gather_segment_sum(x, index, indptr, weight, t_indptr, t_index, t_perm)


def edge_dot(a: torch.Tensor, b: torch.Tensor, index: torch.Tensor, indptr: torch.Tensor) -> torch.Tensor:
    """Per-entry dot products ``out[e] = <a[row(e)], b[index[e]]>`` for a CSR ``(indptr, index)``.

    ``a`` has one row per CSR row, ``b`` one per column. The weight gradient of
    :func:`gather_segment_sum`; also dot-product attention scores on edges. Differentiable.
    """
    return _ops.edge_dot(a, b, index, indptr)


def csr_transpose(index: torch.Tensor, indptr: torch.Tensor, num_cols: int) -> CSR:
    """Transpose a CSR with ``num_cols`` columns: returns ``CSR(indptr, index, perm)`` where
    column ``c``'s rows are ``index[indptr[c]:indptr[c+1]]`` in original entry order (stable), and
    ``perm`` gives each transposed entry's original position. For a graph in CSR by destination this
    is the CSR by source (successor lists)."""
    t_indptr, t_index, t_perm = _ops.csr_transpose(index, indptr, int(num_cols))
    return CSR(t_indptr, t_index, t_perm)


def topo_levels(indptr: torch.Tensor, index: torch.Tensor, node_ptr: torch.Tensor | None = None) -> torch.Tensor:
    """Topological generation of every node of a batch of DAGs (CSR by destination).

    ``level[v]`` is 0 for nodes without predecessors and otherwise ``1 + max`` over predecessors
    (the longest path from a source). ``node_ptr`` ``int64 [B+1]`` delimits the graphs (graph ``g``
    owns nodes ``node_ptr[g]:node_ptr[g+1]``; default: one graph). Edges must stay inside their
    graph. Raises ``RuntimeError`` naming the graph on a cycle.
    """
    if node_ptr is None:
        node_ptr = torch.tensor([0, indptr.numel() - 1], dtype=torch.int64, device=indptr.device)
    return _ops.topo_levels(indptr, index, node_ptr)


def flow_surrogate(
    op: torch.Tensor,
    indptr: torch.Tensor,
    index: torch.Tensor,
    node_ptr: torch.Tensor,
    is_source: torch.Tensor,
    r: torch.Tensor,
    P: torch.Tensor,
    W: torch.Tensor,
    alpha: float = 0.5,
    schedule: str = "auto",
    transpose: CSR | None = None,
) -> torch.Tensor:
    """The FGP flow surrogate ``[B, k]`` of every graph of a batch (FGP.md §2), no learning.

    Args:
        op: ``int64 [N]`` op id of every node (rows of ``P``).
        indptr, index: CSR by destination of the whole batch (predecessor lists).
        node_ptr: ``int64 [B+1]`` graph boundaries.
        is_source: ``bool [N]``: nodes that start at ``r`` and are summed into the readout.
        r: ``[k]`` the random input vector; ``P``: ``[F, k]`` op embeddings; ``W``: ``[2k, k]``.
            Their dtype (float32/float64) is the output's. See :func:`fgp_ext.surrogate.flow_params`
            for the authors' random draws.
        alpha: mixing weight of ``f(o, m) = alpha*m + (1-alpha)*relu([o, m] @ W)``.
        schedule: ``"graph"`` (one task per graph, for many small DAGs), ``"level"`` (level-synchronous
            over the batch, for few large DAGs) or ``"auto"`` (per graph when there are at least as
            many graphs as threads). All give bitwise-identical results.
        transpose: optional successor CSR, :func:`csr_transpose` of ``(index, indptr)`` (an
            :class:`~fgp_ext.graph.ArchBatch` holds it as ``out_csr``); built when omitted.
    """
    t_indptr = t_index = None
    if transpose is not None:
        t_indptr, t_index = transpose.indptr, transpose.index
    return _ops.flow_surrogate(op, indptr, index, node_ptr, is_source, r, P, W, float(alpha), schedule, t_indptr,
                               t_index)


class LevelSchedule(NamedTuple):
    """A batch's nodes in topological generations (see :func:`level_schedule`).

    ``order[i]`` is the node at position ``i`` (nodes sorted by ``(level, id)``), ``rank`` its
    inverse; positions ``level_ptr[l]:level_ptr[l+1]`` hold level ``l``. ``csr`` is the CSR by
    destination in positions (row ``i`` = node ``order[i]``, entries = positions of its
    predecessors), ``entry_perm`` maps each of its entries to the original CSR entry.
    ``group_perm`` lists each level's entries stably sorted by predecessor, ``group_ptr`` delimits
    one group per distinct (level, predecessor), ``group_src`` is the group's predecessor position
    and ``group_level_ptr`` the groups of each level (for atomic-free gradient scatters).
    """

    order: torch.Tensor
    rank: torch.Tensor
    level_ptr: torch.Tensor
    csr: CSR
    entry_perm: torch.Tensor
    group_level_ptr: torch.Tensor
    group_perm: torch.Tensor
    group_ptr: torch.Tensor
    group_src: torch.Tensor

    @property
    def num_levels(self) -> int:
        return self.level_ptr.numel() - 1


def level_schedule(indptr: torch.Tensor, index: torch.Tensor, level: torch.Tensor) -> LevelSchedule:
    """The level schedule of a batch of DAGs given as a CSR by destination and its levels
    (:func:`topo_levels`): nodes ordered by generation, with per-level position ranges, and the
    predecessor CSR in those positions, so that the entries of all nodes of level ``l`` form one
    contiguous slice pointing only at earlier positions. A propagation step over level ``l`` then
    reads finished rows and writes its own: no masks, no in-place writes.

    For the reversed graph, pass the CSR by source and the levels of the reversed graph.
    Raises when ``level`` is not a topological levelling of the CSR (a predecessor not below its
    node).
    """
    order, rank, level_ptr, sched_indptr, sched_index, entry_perm, *groups = _ops.level_schedule(indptr, index, level)
    return LevelSchedule(order, rank, level_ptr, CSR(sched_indptr, sched_index), entry_perm, *groups)


def flow_pairs(indptr: torch.Tensor, index: torch.Tensor, node_ptr: torch.Tensor, topo: torch.Tensor) -> CSR:
    """Flow-related node pairs of every DAG of a batch as a CSR: row ``v`` lists, ascending, each
    node ``u`` of ``v``'s graph with ``u == v``, ``u`` reaching ``v`` or ``v`` reaching ``u``.

    ``topo`` is a per-graph topological order: graph ``g``'s nodes at positions
    ``node_ptr[g]:node_ptr[g+1]``, predecessors first (e.g. ``argsort`` of ``(graph, level)``).
    The relation is symmetric, so the result is its own transpose: ``perm[q]`` is the position of
    the mirrored pair of entry ``q`` (pass the CSR as ``transpose=`` of :func:`gather_attention`).
    Bitset closure in C++, O(n^2/64) per graph of n nodes; graphs above 16,384 nodes are refused.
    """
    pair_indptr, pair_index, pair_perm = _ops.flow_pairs(indptr, index, node_ptr, topo)
    return CSR(pair_indptr, pair_index, pair_perm)


def gather_attention(
    x: torch.Tensor,
    logit: torch.Tensor,
    index: torch.Tensor,
    indptr: torch.Tensor,
    transpose: CSR | None = None,
) -> torch.Tensor:
    """Fused attention aggregation: segment softmax + gather + segment sum, multi-head.

    ``out[r, h] = sum_{e in row r} alpha[e, h] * x[index[e], h]`` with
    ``alpha[:, h] = softmax(logit[:, h])`` over the entries of row ``r``.

    Args:
        x: ``[M, H, D]`` values (heads ``H`` of width ``D``), or ``[M, D]`` with ``logit [E]`` for one
            head.
        logit: ``[E, H]`` (or ``[E]``) attention scores of the CSR entries.
        index, indptr: the CSR (entry ``e`` reads row ``index[e]`` of ``x``).
        transpose: optional :func:`csr_transpose` of ``(index, indptr)``, read by the backward pass.

    Returns ``[R, H, D]`` (or ``[R, D]``); rows without entries are zero. Differentiable in ``x``
    and ``logit``; the backward recomputes the softmax and never uses atomics.
    """
    single = logit.dim() == 1
    if single:
        x, logit = x.unsqueeze(1), logit.unsqueeze(1)
    t = (None, None, None) if transpose is None else (transpose.indptr, transpose.index, transpose.perm)
    out = _ops.gather_attention(x, logit, index, indptr, *t)
    return out.squeeze(1) if single else out


def dot_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pairs: CSR, scale: float | None = None,
                  dropout: float = 0.0, seed: int | None = None) -> torch.Tensor:
    """Sparse multi-head dot-product attention over allowed (query, key) pairs, fused.

    ``out[r, h] = sum_{e in row r} softmax_e(scale * <q[r, h], k[index[e], h]>) * v[index[e], h]``
    for ``q [M, H, D]``, ``k, v [C, H, D]`` and ``pairs`` a CSR (``indptr [M+1]``, ``index [E]``) of
    the keys each query may attend to; ``pairs.perm`` (optional) is its transpose permutation when
    the relation is symmetric (as :attr:`fgp_ext.graph.ArchBatch.flow_pairs`), else the transpose
    is built for the backward. ``scale`` defaults to ``1 / sqrt(D)``. Rows without pairs give zeros.
    Neither the gathered queries/keys nor the scores are materialised; differentiable in q, k, v.

    ``dropout`` in ``[0, 1)`` drops attention weights after the softmax (kept ones scaled by
    ``1 / (1 - dropout)``), inside the same kernel: the mask is :func:`dropout`'s counter-based hash
    of ``seed`` and the weight's position ``e * H + h`` in the ``[E, H]`` weights, so it is the same
    on every device, recomputed in the backward and never stored. ``seed`` defaults to a draw from
    torch's generator, as :func:`dropout`. Callers pass ``dropout`` in training only.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"attention dropout must be in [0, 1), got {dropout}")
    if float(dropout) > 0.0 and seed is None:
        seed = _draw_seed()
    t = (None, None, None)
    if pairs.perm is not None:
        t = (pairs.indptr, pairs.index, pairs.perm)
    return _ops.dot_attention(q, k, v, pairs.index, pairs.indptr, scale, *t, float(dropout),
                              0 if seed is None else int(seed))


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
            the backward only. A symmetric CSR (e.g. :attr:`ArchBatch.undirected_csr`) is its own
            transpose: pass it again. Default: built by :func:`csr_transpose` in the backward.

    Returns ``[N, F]``. Differentiable in the three inputs; neither the forward nor the backward
    stores per-entry tensors (the backward recomputes the gates), and no atomics are used.
    """
    t = (None, None) if transpose is None else (transpose.indptr, transpose.index)
    return _ops.gated_aggregate(gate_dst, gate_src, value, csr.index, csr.indptr, float(eps), *t)


def _draw_seed() -> int:
    """The seed of a counter-based dropout mask, drawn from torch's default generator (so that
    ``torch.manual_seed`` makes :func:`dropout` and :func:`dot_attention`'s masks repeat)."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


def dropout(x: torch.Tensor, p: float, training: bool = True, seed: int | None = None) -> torch.Tensor:
    """Dropout with a counter-based mask: element ``i`` is kept with probability ``1 - p`` by a hash
    of ``(seed, i)`` and scaled by ``1 / (1 - p)``.

    The mask is a pure function of ``seed`` (drawn from torch's default generator when ``None``, so
    ``torch.manual_seed`` makes runs repeat): the same on the CPU at any thread count and on CUDA,
    never stored (the backward reapplies it from the seed), and cheap to draw. Identity when
    ``training`` is false or ``p == 0``. Differentiable in ``x``.
    """
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or float(p) == 0.0:
        return x
    if seed is None:
        seed = _draw_seed()
    return _ops.dropout(x, float(p), int(seed))


def flow_pass(h0: torch.Tensor, plan, att_dst: torch.Tensor, att_src: torch.Tensor, att_bias: torch.Tensor,
              w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """One whole flow pass of a flow-aware encoder, fused in C++ (one call whatever the depth).

    ``h0 [N, F]`` holds the node states in the positions of ``plan`` (a
    :class:`fgp_ext.levels.LevelPlan`; ``h.index_select(0, plan.order)``). For every generation
    ``l`` and node ``v`` of it, over its predecessors ``u`` (already updated in this pass)::

        logit_u = att_dst . h0[v] + (att_src . h[u] + att_bias)
        m_v     = sum_u softmax(logit)_u * h[u]          # 0 in the first generation
        h[v]    = GRUCell(h0[v], m_v)    # input h0[v], hidden state m_v (torch.nn.GRUCell equations:
                                         # w_ih, w_hh [3F, F]; b_ih, b_hh [3F])

    Returns ``[N, F]`` in positions. Differentiable in ``h0`` and every weight; the backward walks
    the generations in reverse from intermediates saved by the forward, and sums gradients per
    distinct predecessor (no atomics).
    """
    return _ops.flow_pass(h0, plan.level_ptr, plan.indptr, plan.index, plan.group_level_ptr, plan.group_perm,
                          plan.group_ptr, plan.group_src, att_dst.reshape(-1), att_src.reshape(-1),
                          att_bias.reshape(1), w_ih, w_hh, b_ih, b_hh)


# ----------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------
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


def _attention_setup(ctx, inputs, output):
    x, logit, index, indptr, t_indptr, t_index, t_perm = inputs
    ctx.save_for_backward(x, logit, index, indptr, output, t_indptr, t_index, t_perm)


def _attention_backward(ctx, grad):
    x, logit, index, indptr, out, t_indptr, t_index, t_perm = ctx.saved_tensors
    if t_indptr is None or t_index is None or t_perm is None:
        t_indptr, t_index, t_perm = _ops.csr_transpose(index, indptr, x.shape[0])
    grad_x, grad_logit = _ops.gather_attention_backward(grad.contiguous(), x, logit, index, indptr, out, t_indptr,
                                                        t_index, t_perm)
    return (grad_x if ctx.needs_input_grad[0] else None, grad_logit if ctx.needs_input_grad[1] else None,
            None, None, None, None, None)


torch.library.register_autograd("fgp::gather_attention", _attention_backward, setup_context=_attention_setup)


def _gated_setup(ctx, inputs, output):
    gate_dst, gate_src, value, index, indptr, eps, t_indptr, t_index = inputs
    ctx.save_for_backward(gate_dst, gate_src, value, index, indptr, output, t_indptr, t_index)
    ctx.eps = eps


def _gated_backward(ctx, grad):
    gate_dst, gate_src, value, index, indptr, out, t_indptr, t_index = ctx.saved_tensors
    if t_indptr is None or t_index is None:
        t_indptr, t_index, _ = _ops.csr_transpose(index, indptr, gate_src.shape[0])
    grads = _ops.gated_aggregate_backward(grad.contiguous(), gate_dst, gate_src, value, index, indptr, out, ctx.eps,
                                          t_indptr, t_index)
    return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:3])), None, None, None, None, None)


torch.library.register_autograd("fgp::gated_aggregate", _gated_backward, setup_context=_gated_setup)


def _dropout_setup(ctx, inputs, output):
    _, ctx.p, ctx.seed = inputs


def _dropout_backward(ctx, grad):
    return _ops.dropout(grad.contiguous(), ctx.p, ctx.seed), None, None  # the same mask, from the seed


torch.library.register_autograd("fgp::dropout", _dropout_backward, setup_context=_dropout_setup)


def _dot_attention_setup(ctx, inputs, output):
    q, k, v, index, indptr, scale, t_indptr, t_index, t_perm, p, seed = inputs
    ctx.save_for_backward(q, k, v, index, indptr, output, t_indptr, t_index, t_perm)
    ctx.scale, ctx.p, ctx.seed = scale, p, seed


def _dot_attention_backward(ctx, grad):
    q, k, v, index, indptr, out, t_indptr, t_index, t_perm = ctx.saved_tensors
    if t_indptr is None or t_index is None or t_perm is None:
        t_indptr, t_index, t_perm = _ops.csr_transpose(index, indptr, k.shape[0])
    dq, dk, dv = _ops.dot_attention_backward(grad.contiguous(), q, k, v, index, indptr, out, ctx.scale, t_indptr,
                                             t_index, t_perm, ctx.p, ctx.seed)  # the same mask, from the seed
    return dq, dk, dv, None, None, None, None, None, None, None, None


torch.library.register_autograd("fgp::dot_attention", _dot_attention_backward, setup_context=_dot_attention_setup)


# fgp::flow_pass has its autograd formula in C++ (csrc/ops/flow_pass_autograd.h).


# ----------------------------------------------------------------------------------------------
# Fake kernels (shapes only), for torch.compile / meta tensors
# ----------------------------------------------------------------------------------------------
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


@torch.library.register_fake("fgp::topo_levels")
def _topo_levels_fake(indptr, index, node_ptr):
    return index.new_empty((indptr.shape[0] - 1,))


@torch.library.register_fake("fgp::flow_surrogate")
def _flow_surrogate_fake(op, indptr, index, node_ptr, is_source, r, P, W, alpha, schedule="auto", t_indptr=None,
                         t_index=None):
    return r.new_empty((node_ptr.shape[0] - 1, r.shape[0]))


@torch.library.register_fake("fgp::select_graphs")
def _select_graphs_fake(args):
    ctx = torch.library.get_ctx()
    n, e = ctx.new_dynamic_size(), ctx.new_dynamic_size()
    node_ptr, ids, is_source = args[0], args[1], args[4]
    new = node_ptr.new_empty
    return [new((ids.shape[0] + 1,)), new((n,)), new((n,)), new((n,)), is_source.new_empty((n,)), new((n + 1,)),
            new((e,)), new((e,)), new((n + 1,)), new((e,)), new((e,))]


@torch.library.register_fake("fgp::level_schedule")
def _level_schedule_fake(indptr, index, level):
    n = indptr.shape[0] - 1
    ctx = torch.library.get_ctx()
    # data-dependent sizes, each used as a plain size somewhere so the output binds it
    level_ptr_size, num_groups = ctx.new_dynamic_size(min=1), ctx.new_dynamic_size()
    e = index.shape
    return [index.new_empty((n,)), index.new_empty((n,)), index.new_empty((level_ptr_size,)),
            index.new_empty((n + 1,)), index.new_empty(e), index.new_empty(e), index.new_empty((level_ptr_size,)),
            index.new_empty(e), index.new_empty((num_groups + 1,)), index.new_empty((num_groups,))]


@torch.library.register_fake("fgp::flow_pairs")
def _flow_pairs_fake(indptr, index, node_ptr, topo):
    num_pairs = torch.library.get_ctx().new_dynamic_size()
    return index.new_empty((indptr.shape[0],)), index.new_empty((num_pairs,)), index.new_empty((num_pairs,))


@torch.library.register_fake("fgp::flow_pass")
def _flow_pass_fake(h0, *args):
    return torch.empty_like(h0)


@torch.library.register_fake("fgp::flow_pass_train")
def _flow_pass_train_fake(args):
    h0, index = args[0], args[3]
    n, f = h0.shape
    return [torch.empty_like(h0), h0.new_empty((n, f)), h0.new_empty((n, 2 * f)), h0.new_empty((n, f)),
            h0.new_empty((n, f)), h0.new_empty(index.shape)]


@torch.library.register_fake("fgp::flow_pass_backward")
def _flow_pass_backward_fake(grad, saved, args):
    return [torch.empty_like(args[0]), *(torch.empty_like(p) for p in args[8:])]


@torch.library.register_fake("fgp::dot_attention")
def _dot_attention_fake(q, k, v, index, indptr, scale, t_indptr=None, t_index=None, t_perm=None, p=0.0, seed=0):
    torch._check(q.dim() == 3, lambda: "q must be [M, H, D]")
    return torch.empty_like(q)


@torch.library.register_fake("fgp::dot_attention_backward")
def _dot_attention_backward_fake(grad, q, k, v, index, indptr, out, scale, t_indptr, t_index, t_perm, p=0.0,
                                 seed=0):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


@torch.library.register_fake("fgp::gather_attention")
def _attention_fake(x, logit, index, indptr, t_indptr=None, t_index=None, t_perm=None):
    torch._check(x.dim() == 3, lambda: "x must be [M, H, D]")
    return x.new_empty((indptr.shape[0] - 1, x.shape[1], x.shape[2]))


@torch.library.register_fake("fgp::gated_aggregate")
def _gated_fake(gate_dst, gate_src, value, index, indptr, eps=1e-6, t_indptr=None, t_index=None):
    torch._check(gate_dst.dim() == 2, lambda: "gate_dst must be [N, F]")
    return gate_dst.new_empty(gate_dst.shape)  # contiguous, as the kernels return


@torch.library.register_fake("fgp::gated_aggregate_backward")
def _gated_backward_fake(grad, gate_dst, gate_src, value, index, indptr, out, eps, t_indptr, t_index):
    return gate_dst.new_empty(gate_dst.shape), gate_src.new_empty(gate_src.shape), value.new_empty(value.shape)


@torch.library.register_fake("fgp::dropout")
def _dropout_fake(x, p, seed):
    return x.new_empty(x.shape)  # contiguous, as the kernels return


@torch.library.register_fake("fgp::gather_attention_backward")
def _attention_backward_fake(grad, x, logit, index, indptr, out, t_indptr, t_index, t_perm):
    return torch.empty_like(x), torch.empty_like(logit)


# ----------------------------------------------------------------------------------------------
# CUDA without compiled CUDA kernels: composite plain-PyTorch fallbacks, never "no kernel".
# ----------------------------------------------------------------------------------------------
if not CUDA_KERNELS:
    torch.library.register_kernel("fgp::segment_sum_csr", "cuda", _ref.segment_sum_csr)
    torch.library.register_kernel(
        "fgp::gather_segment_sum",
        "cuda",
        lambda x, index, indptr, weight=None, t_indptr=None, t_index=None, t_perm=None: _ref.gather_segment_sum(
            x, index, indptr, weight
        ),
    )
    torch.library.register_kernel("fgp::edge_dot", "cuda", _ref.edge_dot)
    torch.library.register_kernel("fgp::csr_transpose", "cuda", _ref.csr_transpose)
    torch.library.register_kernel("fgp::topo_levels", "cuda", _ref.topo_levels)
    torch.library.register_kernel(
        "fgp::flow_surrogate",
        "cuda",
        lambda op, indptr, index, node_ptr, is_source, r, P, W, alpha, schedule="auto", t_indptr=None, t_index=None: (
            _ref.flow_surrogate_batched(op, indptr, index, node_ptr, is_source, r, P, W, alpha)
        ),
    )
    torch.library.register_kernel("fgp::level_schedule", "cuda", lambda *args: list(_ref.level_schedule(*args)))
    torch.library.register_kernel(
        "fgp::flow_pairs", "cuda",
        lambda indptr, index, node_ptr, topo: tuple(t.to(indptr.device) for t in _ops.flow_pairs(
            indptr.cpu(), index.cpu(), node_ptr.cpu(), topo.cpu())),
    )
    torch.library.register_kernel(
        "fgp::gather_attention", "cuda",
        lambda x, logit, index, indptr, t_indptr=None, t_index=None, t_perm=None: _ref.gather_attention(
            x, logit, index, indptr),
    )
    torch.library.register_kernel("fgp::gather_attention_backward", "cuda", _ref.gather_attention_backward)
    torch.library.register_kernel("fgp::flow_pass", "cuda", _ref.flow_pass)
    torch.library.register_kernel("fgp::flow_pass_train", "cuda", _ref.flow_pass_train)
    torch.library.register_kernel("fgp::flow_pass_backward", "cuda", _ref.flow_pass_backward)
    torch.library.register_kernel(
        "fgp::select_graphs", "cuda",
        lambda args: [t.to(args[0].device) for t in _ops.select_graphs([t.cpu() for t in args])],
    )
    torch.library.register_kernel(
        "fgp::dot_attention", "cuda",
        lambda q, k, v, index, indptr, scale, t_indptr=None, t_index=None, t_perm=None, p=0.0, seed=0:
        _ref.dot_attention(q, k, v, index, indptr, scale, p, seed),
    )
    torch.library.register_kernel("fgp::dot_attention_backward", "cuda", _ref.dot_attention_backward)
    torch.library.register_kernel(
        "fgp::gated_aggregate", "cuda",
        lambda gate_dst, gate_src, value, index, indptr, eps=1e-6, t_indptr=None, t_index=None: _ref.gated_aggregate(
            gate_dst, gate_src, value, index, indptr, eps),
    )
    torch.library.register_kernel("fgp::gated_aggregate_backward", "cuda", _ref.gated_aggregate_backward)
    torch.library.register_kernel("fgp::dropout", "cuda", _ref.dropout)
