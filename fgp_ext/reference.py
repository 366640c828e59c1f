"""Plain-PyTorch reference implementations of every ``torch.ops.fgp`` op.

They define the ops' semantics for the tests, serve as the composite fallback for CUDA tensors when
no CUDA kernels were compiled, and are the "batched PyTorch" and "per-graph loop" peers of the
benchmarks. Readability first: no custom kernels, no tricks.
"""
from __future__ import annotations

from collections import deque
from typing import Sequence

import torch


def csr_row_ids(indptr: torch.Tensor, num_entries: int | None = None) -> torch.Tensor:
    """The CSR row of every entry (``int64 [E]``)."""
    counts = indptr.diff()
    rows = torch.arange(counts.numel(), device=indptr.device)
    return torch.repeat_interleave(rows, counts, output_size=num_entries)


def _check_indptr(indptr: torch.Tensor, num_entries: int, name: str = "indptr") -> None:
    if indptr.dtype != torch.int64 or indptr.dim() != 1 or indptr.numel() < 1:
        raise RuntimeError(f"{name} must be a 1-D int64 tensor with at least one element")
    if int(indptr[0]) != 0 or int(indptr[-1]) != num_entries:
        raise RuntimeError(f"{name} must start at 0 and end at the number of entries ({num_entries})")
    if indptr.numel() > 1 and not bool((indptr.diff() >= 0).all()):
        raise RuntimeError(f"{name} must be non-decreasing")


def _check_index(index: torch.Tensor, num_cols: int, name: str = "index") -> None:
    if index.dtype != torch.int64 or index.dim() != 1:
        raise RuntimeError(f"{name} must be a 1-D int64 tensor")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_cols):
        raise RuntimeError(f"{name} out of range: values must lie in [0, {num_cols})")


def segment_sum_csr(src: torch.Tensor, indptr: torch.Tensor) -> torch.Tensor:
    """``out[i] = src[indptr[i]:indptr[i+1]].sum(0)``."""
    _check_indptr(indptr, src.shape[0])
    out = src.new_zeros((indptr.numel() - 1, *src.shape[1:]))
    return out.index_add_(0, csr_row_ids(indptr, src.shape[0]), src)


def gather_segment_sum(x, index, indptr, weight=None):
    """``out[i] = sum_{e in row i} weight[e] * x[index[e]]``."""
    _check_indptr(indptr, index.numel())
    _check_index(index, x.shape[0])
    msg = x.index_select(0, index)
    if weight is not None:
        msg = msg * weight.reshape(-1, *([1] * (x.dim() - 1)))
    return segment_sum_csr(msg, indptr)


def edge_dot(a, b, index, indptr):
    """``out[e] = <a[row(e)], b[index[e]]>``."""
    _check_indptr(indptr, index.numel())
    _check_index(index, b.shape[0])
    rows = csr_row_ids(indptr, index.numel())
    a2, b2 = a.flatten(1) if a.dim() > 1 else a[:, None], b.flatten(1) if b.dim() > 1 else b[:, None]
    return (a2.index_select(0, rows) * b2.index_select(0, index)).sum(-1)


def csr_transpose(index, indptr, num_cols):
    """Stable transpose: ``(t_indptr, t_index (row ids), t_perm (original entry ids))``."""
    _check_indptr(indptr, index.numel())
    _check_index(index, num_cols)
    perm = torch.sort(index, stable=True).indices
    rows = csr_row_ids(indptr, index.numel())
    counts = torch.bincount(index, minlength=num_cols)
    t_indptr = torch.zeros(num_cols + 1, dtype=torch.int64, device=index.device)
    t_indptr[1:] = torch.cumsum(counts, 0)
    return t_indptr, rows.index_select(0, perm), perm


def _graph_of_nodes(node_ptr: torch.Tensor, num_nodes: int) -> torch.Tensor:
    return csr_row_ids(node_ptr, num_nodes)


def _check_graph_batch(indptr, index, node_ptr):
    num_nodes = indptr.numel() - 1
    _check_indptr(indptr, index.numel())
    _check_indptr(node_ptr, num_nodes, "node_ptr")
    _check_index(index, num_nodes)
    graph = _graph_of_nodes(node_ptr, num_nodes)
    dst = csr_row_ids(indptr, index.numel())
    bad = (graph.index_select(0, index) != graph.index_select(0, dst)).nonzero()
    if bad.numel():
        e = int(bad[0])
        g = int(graph[dst[e]])
        raise RuntimeError(f"graph {g} has an edge (edge id {e}) from node {int(index[e])}, which lies outside "
                           "the graph's node range")
    return graph, dst


def topo_levels(indptr, index, node_ptr):
    """Longest-path levels by vectorised relaxation (at most N rounds); a cycle is an error naming the graph."""
    graph, dst = _check_graph_batch(indptr, index, node_ptr)
    n = indptr.numel() - 1
    level = torch.zeros(n, dtype=torch.int64, device=index.device)
    for _ in range(n + 1):
        cand = torch.zeros_like(level).scatter_reduce_(0, dst, level.index_select(0, index) + 1, "amax")
        if torch.equal(cand, level):
            return level
        level = cand
    # Still changing after N+1 rounds: a path longer than N exists, so some graph has a cycle.
    g = int(graph[(level > n - 1).nonzero()[0]]) if bool((level > n - 1).any()) else int(graph[0])
    raise RuntimeError(f"graph {g} is not a DAG: it contains a cycle")


def flow_surrogate_batched(op, indptr, index, node_ptr, is_source, r, P, W, alpha=0.5, schedule="auto"):
    """Batched level-by-level FGP surrogate in plain PyTorch (the "batched PyTorch" peer).

    One pass over topological generations for the whole batch: per level, gather the messages of
    the level's edges, sum them per destination, apply ``f``. ``schedule`` is accepted and ignored.
    """
    graph, dst = _check_graph_batch(indptr, index, node_ptr)
    level = topo_levels(indptr, index, node_ptr)
    k = r.numel()
    h = torch.where(is_source.unsqueeze(1), r.unsqueeze(0), torch.zeros((), dtype=r.dtype, device=r.device))
    h = h.expand(op.numel(), k).clone()
    o = P.index_select(0, op)
    depth = int(level.max()) + 1 if level.numel() else 0

    def update(nodes, msg_src, msg_dst):
        pos = torch.full((op.numel(),), -1, dtype=torch.int64, device=op.device)
        pos[nodes] = torch.arange(nodes.numel(), device=op.device)
        m = h.new_zeros((nodes.numel(), k)).index_add_(0, pos[msg_dst], h.index_select(0, msg_src))
        z = torch.cat([o.index_select(0, nodes), m], dim=1) @ W
        h[nodes] = alpha * m + (1 - alpha) * torch.relu(z)

    edge_dst_level = level.index_select(0, dst)
    edge_src_level = level.index_select(0, index)
    out_degree = torch.bincount(index, minlength=op.numel())
    for lv in range(1, depth):
        nodes = (level == lv).nonzero().flatten()
        sel = (edge_dst_level == lv).nonzero().flatten()
        update(nodes, index[sel], dst[sel])
    for lv in range(depth - 1, -1, -1):
        nodes = ((level == lv) & (out_degree > 0)).nonzero().flatten()
        if nodes.numel() == 0:
            continue
        sel = (edge_src_level == lv).nonzero().flatten()
        update(nodes, dst[sel], index[sel])
    out = r.new_zeros((node_ptr.numel() - 1, k))
    src_nodes = is_source.nonzero().flatten()
    return out.index_add_(0, graph[src_nodes], h[src_nodes])


def flow_surrogate_per_graph(
    ops: Sequence[Sequence[int]],
    edges: Sequence[Sequence[tuple[int, int]]],
    sources: Sequence[Sequence[int]],
    r: torch.Tensor,
    P: torch.Tensor,
    W: torch.Tensor,
    alpha: float = 0.5,
) -> torch.Tensor:
    """The surrogate one graph at a time, node by node, exactly as FGP.md §2 reads (the authors'
    style: a Python loop per graph). Slow by design: the ground truth and the benchmark baseline."""
    k = r.numel()
    out = []
    for g_ops, g_edges, g_sources in zip(ops, edges, sources):
        n = len(g_ops)
        preds = [[] for _ in range(n)]
        succs = [[] for _ in range(n)]
        for s, d in g_edges:
            preds[d].append(s)
            succs[s].append(d)
        indeg = [len(p) for p in preds]
        queue = deque(v for v in range(n) if indeg[v] == 0)
        order = []
        while queue:
            u = queue.popleft()
            order.append(u)
            for w in succs[u]:
                indeg[w] -= 1
                if indeg[w] == 0:
                    queue.append(w)
        if len(order) != n:
            raise RuntimeError("graph is not a DAG: it contains a cycle")
        h = [r.clone() if v in g_sources else torch.zeros(k, dtype=r.dtype) for v in range(n)]

        def f(v, m):
            o = P[g_ops[v]]
            return alpha * m + (1 - alpha) * torch.relu(torch.cat([o, m]) @ W)

        for v in order:
            if preds[v]:
                h[v] = f(v, torch.stack([h[p] for p in preds[v]]).sum(0))
        for u in reversed(order):
            if succs[u]:
                h[u] = f(u, torch.stack([h[s] for s in succs[u]]).sum(0))
        out.append(sum((h[s] for s in g_sources), torch.zeros(k, dtype=r.dtype)))
    return torch.stack(out) if out else r.new_zeros((0, k))
