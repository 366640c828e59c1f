"""Ops on batches of DAGs: topological generations, the FGP flow surrogate, mini-batch selection,
level schedules and flow-related pairs (wrappers, fake kernels and CUDA fallbacks together; none of
them is differentiable).

A batch is one CSR by destination (row ``v`` lists ``v``'s predecessors) with ``node_ptr [B+1]``
delimiting the graphs."""
from __future__ import annotations

from typing import NamedTuple

import torch

from fgp_ext import reference as _ref
from fgp_ext.ops._library import CUDA_KERNELS, ops as _ops
from fgp_ext.sparse import CSR, as_csr

__all__ = ["topo_levels", "flow_surrogate", "select_graphs", "LevelSchedule", "level_schedule", "flow_pairs"]


def topo_levels(csr: CSR, node_ptr: torch.Tensor | None = None) -> torch.Tensor:
    """Topological generation of every node of a batch of DAGs given as one CSR by destination.

    ``level[v]`` is 0 for nodes without predecessors and otherwise ``1 + max`` over predecessors
    (the longest path from a source). ``node_ptr`` ``int64 [B+1]`` delimits the graphs (graph ``g``
    owns nodes ``node_ptr[g]:node_ptr[g+1]``; default: one graph). Edges must stay inside their
    graph. Raises ``RuntimeError`` naming the graph on a cycle.
    """
    csr = as_csr(csr, "topo_levels")
    if node_ptr is None:
        node_ptr = torch.tensor([0, csr.num_rows], dtype=torch.int64, device=csr.indptr.device)
    return _ops.topo_levels(csr.indptr, csr.index, node_ptr)


def flow_surrogate(
    op: torch.Tensor,
    csr: CSR,
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
        csr: the whole batch as one CSR by destination (predecessor lists).
        node_ptr: ``int64 [B+1]`` graph boundaries.
        is_source: ``bool [N]``: nodes that start at ``r`` and are summed into the readout.
        r: ``[k]`` the random input vector; ``P``: ``[F, k]`` op embeddings; ``W``: ``[2k, k]``.
            Their dtype (float32/float64) is the output's. See :func:`fgp_ext.surrogate.flow_params`
            for the authors' random draws.
        alpha: mixing weight of ``f(o, m) = alpha*m + (1-alpha)*relu([o, m] @ W)``.
        schedule: ``"graph"`` (one task per graph, for many small DAGs), ``"level"`` (level-synchronous
            over the batch, for few large DAGs) or ``"auto"`` (per graph when there are at least as
            many graphs as threads). All give bitwise-identical results.
        transpose: the successor CSR (:func:`~fgp_ext.ops.csr_transpose` of ``csr``); default
            ``csr.transpose`` (an :class:`~fgp_ext.graph.ArchBatch`'s ``in_csr`` carries it), else
            built inside.
    """
    csr = as_csr(csr, "flow_surrogate")
    transpose = csr.transpose if transpose is None else transpose
    t_indptr = t_index = None
    if transpose is not None:
        t_indptr, t_index = transpose.indptr, transpose.index
    return _ops.flow_surrogate(op, csr.indptr, csr.index, node_ptr, is_source, r, P, W, float(alpha), schedule, t_indptr,
                               t_index)


def select_graphs(node_ptr: torch.Tensor, ids: torch.Tensor, op: torch.Tensor, level: torch.Tensor,
                  is_source: torch.Tensor, in_csr: CSR, out_csr: CSR) -> tuple:
    """The sub-batch of graphs ``ids`` (in that order, repeats allowed) of a collated batch, every
    field copied and re-offset in one pass (what :meth:`fgp_ext.graph.ArchBatch.select` calls).

    ``in_csr``/``out_csr`` are the batch's predecessor and successor CSRs with their ``perm``.
    Returns ``(node_ptr, graph, op, level, is_source, in_csr, out_csr)`` of the sub-batch. Only the
    selected graphs are validated, so a step costs O(mini-batch), not O(dataset).
    """
    (new_ptr, graph, new_op, new_level, new_source, in_ptr, in_index, in_perm, out_ptr, out_index,
     out_perm) = _ops.select_graphs(node_ptr, ids, op, level, is_source, in_csr.indptr, in_csr.index, in_csr.perm,
                                    out_csr.indptr, out_csr.index, out_csr.perm)
    return (new_ptr, graph, new_op, new_level, new_source, CSR(in_ptr, in_index, in_perm),
            CSR(out_ptr, out_index, out_perm))


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


def level_schedule(csr: CSR, level: torch.Tensor) -> LevelSchedule:
    """The level schedule of a batch of DAGs given as a CSR by destination and its levels
    (:func:`topo_levels`): nodes ordered by generation, with per-level position ranges, and the
    predecessor CSR in those positions, so that the entries of all nodes of level ``l`` form one
    contiguous slice pointing only at earlier positions. A propagation step over level ``l`` then
    reads finished rows and writes its own: no masks, no in-place writes.

    For the reversed graph, pass the CSR by source and the levels of the reversed graph.
    Raises when ``level`` is not a topological levelling of the CSR (a predecessor not below its
    node).
    """
    csr = as_csr(csr, "level_schedule")
    order, rank, level_ptr, sched_indptr, sched_index, entry_perm, *groups = _ops.level_schedule(
        csr.indptr, csr.index, level)
    return LevelSchedule(order, rank, level_ptr, CSR(sched_indptr, sched_index), entry_perm, *groups)


def flow_pairs(csr: CSR, node_ptr: torch.Tensor, topo: torch.Tensor) -> CSR:
    """Flow-related node pairs of every DAG of a batch as a CSR: row ``v`` lists, ascending, each
    node ``u`` of ``v``'s graph with ``u == v``, ``u`` reaching ``v`` or ``v`` reaching ``u``.

    ``topo`` is a per-graph topological order: graph ``g``'s nodes at positions
    ``node_ptr[g]:node_ptr[g+1]``, predecessors first (e.g. ``argsort`` of ``(graph, level)``).
    The relation is symmetric, so the result is its own transpose: ``perm[q]`` is the position of
    the mirrored pair of entry ``q``, and ``transpose`` is the same structure, which the backward
    passes of :func:`~fgp_ext.ops.dot_attention` and :func:`~fgp_ext.ops.gather_attention` read. Bitset closure in C++, O(n^2/64) per graph of n nodes;
    graphs above 16,384 nodes are refused.
    """
    csr = as_csr(csr, "flow_pairs")
    pair_indptr, pair_index, pair_perm = _ops.flow_pairs(csr.indptr, csr.index, node_ptr, topo)
    return CSR(pair_indptr, pair_index, pair_perm, transpose=CSR(pair_indptr, pair_index, pair_perm))


# ---- fake kernels -----------------------------------------------------------------------------
@torch.library.register_fake("fgp::topo_levels")
def _topo_levels_fake(indptr, index, node_ptr):
    return index.new_empty((indptr.shape[0] - 1,))


@torch.library.register_fake("fgp::flow_surrogate")
def _flow_surrogate_fake(op, indptr, index, node_ptr, is_source, r, P, W, alpha, schedule="auto", t_indptr=None,
                         t_index=None):
    return r.new_empty((node_ptr.shape[0] - 1, r.shape[0]))


@torch.library.register_fake("fgp::select_graphs")
def _select_graphs_fake(node_ptr, ids, op, level, is_source, in_indptr, in_index, in_perm, out_indptr, out_index,
                        out_perm):
    ctx = torch.library.get_ctx()
    n, e = ctx.new_dynamic_size(), ctx.new_dynamic_size()
    new = node_ptr.new_empty
    return (new((ids.shape[0] + 1,)), new((n,)), new((n,)), new((n,)), is_source.new_empty((n,)), new((n + 1,)),
            new((e,)), new((e,)), new((n + 1,)), new((e,)), new((e,)))


@torch.library.register_fake("fgp::level_schedule")
def _level_schedule_fake(indptr, index, level):
    n = indptr.shape[0] - 1
    ctx = torch.library.get_ctx()
    # data-dependent sizes, each used as a plain size somewhere so the output binds it
    level_ptr_size, num_groups = ctx.new_dynamic_size(min=1), ctx.new_dynamic_size()
    e = index.shape
    return (index.new_empty((n,)), index.new_empty((n,)), index.new_empty((level_ptr_size,)),
            index.new_empty((n + 1,)), index.new_empty(e), index.new_empty(e), index.new_empty((level_ptr_size,)),
            index.new_empty(e), index.new_empty((num_groups + 1,)), index.new_empty((num_groups,)))


@torch.library.register_fake("fgp::flow_pairs")
def _flow_pairs_fake(indptr, index, node_ptr, topo):
    num_pairs = torch.library.get_ctx().new_dynamic_size()
    return index.new_empty((indptr.shape[0],)), index.new_empty((num_pairs,)), index.new_empty((num_pairs,))


# ---- CUDA fallbacks ---------------------------------------------------------------------------
def _on_cpu_then_back(op):
    """A CUDA fallback that runs the compiled CPU kernel on host copies and moves the results back."""
    def run(*args):
        device = next(a.device for a in args if isinstance(a, torch.Tensor))
        out = op(*(a.cpu() if isinstance(a, torch.Tensor) else a for a in args))
        return tuple(t.to(device) for t in out)
    return run


if not CUDA_KERNELS:
    torch.library.register_kernel("fgp::topo_levels", "cuda", _ref.topo_levels)
    torch.library.register_kernel(
        "fgp::flow_surrogate", "cuda",
        lambda op, indptr, index, node_ptr, is_source, r, P, W, alpha, schedule="auto", t_indptr=None, t_index=None: (
            _ref.flow_surrogate_batched(op, indptr, index, node_ptr, is_source, r, P, W, alpha)),
    )
    torch.library.register_kernel("fgp::level_schedule", "cuda", lambda *args: tuple(_ref.level_schedule(*args)))
    torch.library.register_kernel("fgp::flow_pairs", "cuda", _on_cpu_then_back(_ops.flow_pairs))
    torch.library.register_kernel("fgp::select_graphs", "cuda", _on_cpu_then_back(_ops.select_graphs))
