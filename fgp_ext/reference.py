"""Plain-PyTorch reference implementations of every ``torch.ops.fgp`` op.

They define the ops' semantics for the tests, serve as the composite fallback for CUDA tensors when
no CUDA kernels were compiled, and are the "batched PyTorch" and "per-graph loop" peers of the
benchmarks. Readability first: no custom kernels, no tricks.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Sequence

import torch

from fgp_ext.sparse import csr_row_ids


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


# ----------------------------------------------------------------------------------------------
# Flow-aware encoders: level schedule, flow-related pairs, attention aggregation
# ----------------------------------------------------------------------------------------------
def level_schedule(indptr, index, level):
    """Nodes sorted by ``(level, id)`` and the CSR re-expressed in those positions:
    ``(order, rank, level_ptr, sched_indptr, sched_index, entry_perm)`` (see :func:`fgp_ext.ops.level_schedule`)."""
    n = indptr.numel() - 1
    _check_indptr(indptr, index.numel())
    _check_index(index, n)
    if level.numel() != n:
        raise RuntimeError("level must have one entry per node")
    order = torch.sort(level, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=level.device)
    num_levels = int(level.max()) + 1 if n else 0
    level_ptr = torch.zeros(num_levels + 1, dtype=torch.int64, device=level.device)
    if n:
        level_ptr[1:] = torch.cumsum(torch.bincount(level, minlength=num_levels), 0)
    sched_index, entry_perm = [], []
    for v in order.tolist():
        for e in range(int(indptr[v]), int(indptr[v + 1])):
            u = int(index[e])
            if int(level[u]) >= int(level[v]):
                raise RuntimeError(f"level is not a topological levelling at entry {e}")
            sched_index.append(int(rank[u]))
            entry_perm.append(e)
    sched_indptr = torch.zeros(n + 1, dtype=torch.int64, device=level.device)
    if n:
        sched_indptr[1:] = torch.cumsum(indptr.diff().index_select(0, order), 0)
    # groups: per level, entries stably sorted by predecessor position; one group per distinct one
    group_perm, group_ptr, group_src, group_level_ptr = [], [], [], [0]
    for lv in range(num_levels):
        es, et = int(sched_indptr[int(level_ptr[lv])]), int(sched_indptr[int(level_ptr[lv + 1])])
        entries = sorted(range(es, et), key=lambda q: sched_index[q])
        for q in entries:
            if not group_src or len(group_ptr) == group_level_ptr[-1] or sched_index[q] != group_src[-1]:
                group_ptr.append(len(group_perm))
                group_src.append(sched_index[q])
            group_perm.append(q)
        group_level_ptr.append(len(group_ptr))
    group_ptr.append(len(group_perm))
    as_t = lambda v: torch.tensor(v, dtype=torch.int64, device=level.device)  # noqa: E731
    return (order, rank, level_ptr, sched_indptr, as_t(sched_index), as_t(entry_perm), as_t(group_level_ptr),
            as_t(group_perm), as_t(group_ptr), as_t(group_src))


def flow_pairs(indptr, index, node_ptr, topo=None):
    """Flow-related pairs by explicit reachability (one Python DFS per node): row ``v`` lists the
    nodes ``u`` of its graph with ``u == v``, ``u`` reaches ``v`` or ``v`` reaches ``u``, ascending.
    Returns ``(pair_indptr, pair_index, pair_perm)``; ``topo`` is accepted and ignored."""
    n = indptr.numel() - 1
    succ = [[] for _ in range(n)]
    for v in range(n):
        for e in range(int(indptr[v]), int(indptr[v + 1])):
            succ[int(index[e])].append(v)
    reach = []
    for s in range(n):
        seen, stack = {s}, [s]
        while stack:
            for w in succ[stack.pop()]:
                if w not in seen:
                    seen.add(w)
                    stack.append(w)
        reach.append(seen)
    rows = [sorted({u for u in range(n) if u == v or v in reach[u] or u in reach[v]}) for v in range(n)]
    pair_indptr = torch.zeros(n + 1, dtype=torch.int64)
    pair_indptr[1:] = torch.cumsum(torch.tensor([len(r) for r in rows], dtype=torch.int64), 0)
    pair_index = torch.tensor([u for r in rows for u in r], dtype=torch.int64)
    pos = {(v, u): int(pair_indptr[v]) + j for v, r in enumerate(rows) for j, u in enumerate(r)}
    pair_perm = torch.tensor([pos[(u, v)] for v, r in enumerate(rows) for u in r], dtype=torch.int64)
    dev = indptr.device
    return pair_indptr.to(dev), pair_index.to(dev), pair_perm.to(dev)


def segment_softmax(logit, indptr):
    """Softmax of ``logit [E, ...]`` over the entries of every CSR row."""
    rows = csr_row_ids(indptr, logit.shape[0])
    shape = (indptr.numel() - 1, *logit.shape[1:])
    row_max = logit.new_full(shape, float("-inf")).scatter_reduce(
        0, rows.view(-1, *([1] * (logit.dim() - 1))).expand_as(logit), logit, "amax")
    ex = torch.exp(logit - row_max.index_select(0, rows))
    return ex / segment_sum_csr(ex, indptr).index_select(0, rows)


def gather_attention(x, logit, index, indptr):
    """``out[r, h] = sum_{e in row r} softmax_row(logit)[e, h] * x[index[e], h]`` for ``x [M, H, D]``,
    ``logit [E, H]``."""
    _check_indptr(indptr, index.numel())
    _check_index(index, x.shape[0])
    alpha = segment_softmax(logit, indptr)
    return segment_sum_csr(alpha.unsqueeze(-1) * x.index_select(0, index), indptr)


def dot_attention(q, k, v, index, indptr, scale, p=0.0, seed=0):
    """``out[r, h] = sum_e softmax_e(scale <q[r, h], k[index[e], h]>) v[index[e], h]``, plainly;
    ``p > 0`` applies :func:`dropout` (``seed``) to the ``[E, H]`` softmax weights first."""
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"attention dropout must be in [0, 1), got {p}")
    rows = csr_row_ids(indptr, index.numel())
    logit = (q.index_select(0, rows) * k.index_select(0, index)).sum(-1) * scale
    if float(p) == 0.0:
        return gather_attention(v, logit, index, indptr)
    _check_indptr(indptr, index.numel())
    weight = dropout(segment_softmax(logit, indptr), p, seed)
    return segment_sum_csr(weight.unsqueeze(-1) * v.index_select(0, index), indptr)


def dot_attention_backward(grad, q, k, v, index, indptr, out, scale, t_indptr=None, t_index=None, t_perm=None,
                           p=0.0, seed=0):
    """``(dq, dk, dv)`` of :func:`dot_attention` by autograd through the reference."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
        return tuple(torch.autograd.grad(dot_attention(*leaves, index, indptr, scale, p, seed), leaves, grad))


def gather_attention_backward(grad, x, logit, index, indptr, out=None, t_indptr=None, t_index=None, t_perm=None):
    """``(d loss/d x, d loss/d logit)`` of :func:`gather_attention` by autograd through the
    reference (the transposed CSR and ``out`` are accepted for signature parity and unused)."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        lr = logit.detach().requires_grad_(True)
        gx, gl = torch.autograd.grad(gather_attention(xr, lr, index, indptr), [xr, lr], grad)
    return gx, gl


def gated_aggregate(gate_dst, gate_src, value, index, indptr, eps=1e-6):
    """``out[v] = sum_e g_e * value[u_e] / (sum_e g_e + eps)``, ``g_e = sigmoid(gate_dst[v] +
    gate_src[u_e])``, plainly (GatedGCN's aggregation as PyTorch ops; autograd differentiates it)."""
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    _check_indptr(indptr, index.numel())
    _check_index(index, gate_src.shape[0])
    rows = csr_row_ids(indptr, index.numel())
    gate = torch.sigmoid(gate_dst.index_select(0, rows) + gate_src.index_select(0, index))
    num = segment_sum_csr(gate * value.index_select(0, index), indptr)
    return num / (segment_sum_csr(gate, indptr) + eps)


def gated_aggregate_backward(grad, gate_dst, gate_src, value, index, indptr, out=None, eps=1e-6, t_indptr=None,
                             t_index=None):
    """``(d gate_dst, d gate_src, d value)`` of :func:`gated_aggregate` by autograd through the
    reference (``out`` and the transposed CSR are accepted for signature parity and unused)."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in (gate_dst, gate_src, value)]
        return tuple(torch.autograd.grad(gated_aggregate(*leaves, index, indptr, eps), leaves, grad))


_M32 = 0xFFFFFFFF


def _mul32(a: torch.Tensor, c: int) -> torch.Tensor:
    """``(a * c) mod 2^32`` for int64 ``a`` in ``[0, 2^32)`` without int64 overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (a * lo + (((a * hi) & 0xFFFF) << 16)) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def dropout(x, p, seed):
    """The compiled dropout's mask and scaling, plainly: with ``key = splitmix64(seed)``, element
    ``i`` is kept iff the top 24 bits of ``hash32(hash32(hi(i) ^ hi(key)) ^ lo(i) ^ lo(key))`` are
    ``>= ceil(p * 2^24)``; kept values are scaled by ``1 / (1 - p)``."""
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not -(1 << 63) <= int(seed) < (1 << 63):
        raise ValueError(f"seed must be a 64-bit signed integer, got {seed}")
    m64 = (1 << 64) - 1
    key = (int(seed) + 0x9E3779B97F4A7C15) & m64  # the C++ dropout_key (splitmix64's finaliser)
    key = ((key ^ (key >> 30)) * 0xBF58476D1CE4E5B9) & m64
    key = ((key ^ (key >> 27)) * 0x94D049BB133111EB) & m64
    useed = key ^ (key >> 31)
    i = torch.arange(x.numel(), device=x.device, dtype=torch.int64)
    bits = _hash32(_hash32((i >> 32) ^ (useed >> 32)) ^ (i & _M32) ^ (useed & _M32)) >> 8
    keep = (bits >= math.ceil(float(p) * 16777216.0)).reshape(x.shape)
    scale = torch.tensor(1.0 / (1.0 - float(p)) if p < 1 else 0.0, dtype=x.dtype, device=x.device)
    return torch.where(keep, x * scale, torch.zeros_like(x))


def flow_pass(h0, level_ptr, indptr, index, group_level_ptr, group_perm, group_ptr, group_src, att_dst, att_src,
              att_bias, w_ih, w_hh, b_ih, b_hh):
    """One flow pass over a level schedule, plainly: for every level ``l`` (positions
    ``level_ptr[l]:level_ptr[l+1]``), attention over the predecessors' current states (a zero
    message without predecessors), then ``torch.nn.GRUCell`` equations with the node's own state as
    input and the message as hidden state; differentiable by autograd. The ``group_*`` arguments
    (the fused op's gradient bookkeeping) are accepted and unused."""
    h = h0.clone()
    lp = level_ptr.tolist()
    for lv in range(len(lp) - 1):
        s, t = lp[lv], lp[lv + 1]
        if t == s:
            continue
        es, et = int(indptr[s]), int(indptr[t])
        local_ptr = indptr[s:t + 1] - es
        rows = csr_row_ids(local_ptr, et - es)
        xs = h.index_select(0, index[es:et])
        hv = h0[s:t]
        logit = (hv @ att_dst).index_select(0, rows) + (xs @ att_src + att_bias)
        alpha = segment_softmax(logit, local_ptr)
        msg = segment_sum_csr(alpha[:, None] * xs, local_ptr)
        new = torch._VF.gru_cell(hv, msg, w_ih, w_hh, b_ih, b_hh)
        h = torch.cat([h[:s], new, h[t:]])
    return h


def flow_pass_forward(h0, *args):
    """:func:`flow_pass` shaped like ``fgp::_flow_pass_forward``: ``(h, msg, rz, n, gh_n, logit)``
    with empty placeholders for the fused kernel's saved intermediates (the reference backward
    recomputes instead)."""
    h = flow_pass(h0, *args)
    return (h, *(h.new_zeros(0) for _ in range(5)))


def flow_pass_backward(grad, h, msg, rz, n, gh_n, logit, h0, *args):
    """Gradients of :func:`flow_pass` shaped like ``fgp::_flow_pass_backward`` (``(grad_h0,
    grad_att_dst, grad_att_src, grad_att_bias, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)``), by
    autograd through the reference; the saved intermediates are accepted and unused."""
    schedule, params = args[:7], args[7:]
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in (h0, *params)]
        out = flow_pass(leaves[0], *schedule, *leaves[1:])
        return tuple(torch.autograd.grad(out, leaves, grad))
