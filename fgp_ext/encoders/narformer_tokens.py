"""NAR-Former's tokenizer: one token per node holding its operation and its place in the graph.

After NAR-Former (Yi et al., CVPR 2023). The nodes of an architecture are laid out in a
topological order (its *sequence*); node ``v`` at sequence position ``p_v`` becomes the token::

    [ sin(op_v) | sin(p_v) | sum over predecessors u of sin(p_u) ]      (sin(-1) for a source)

where ``sin(x)`` is the sinusoidal code of a number (:func:`sinusoidal`). The token thus carries
the operation, the node's own position and the positions its data comes from: the whole topology
can be read back from the token sequence, so a transformer over the tokens needs no attention
mask or graph structure.

The canonical sequence (:func:`topological_rank` without keys) is Kahn's algorithm picking the
lowest-numbered ready node, which is the node order itself whenever that order is already
topological (NAS-Bench-201 strings, NAS-Bench-101 upper-triangular matrices) and a fixed
topological order otherwise (our DARTS layout numbers intermediate sums after the edges that read
them). With random keys the same algorithm draws another valid topological order
(:func:`random_topological_rank`): the *information-flow-consistent* reorderings of NAR-Former's
augmentation, which leave every node's inputs and outputs, and so the architecture, unchanged.

Everything here is vectorised over the batch: Kahn's algorithm runs one step per sequence position
on a dense ``[B, n, n]`` adjacency (``n`` = the largest graph), never a Python loop over graphs.
"""
from __future__ import annotations

import math

import torch

__all__ = ["sinusoidal", "topological_rank", "random_topological_rank", "tokenize", "token_dim",
           "local_index"]


def sinusoidal(x: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """``[..., dim]`` sinusoidal code of the numbers ``x`` (any shape): the transformer's position
    code, ``sin(x * w_j)`` in the first half and ``cos(x * w_j)`` in the second, with frequencies
    ``w_j = base ** (-j / (dim / 2))``, ``j = 0 .. dim/2 - 1``. ``dim`` must be even and >= 2."""
    dim = int(dim)
    if dim < 2 or dim % 2:
        raise ValueError(f"a sinusoidal code needs an even dim >= 2, got {dim}")
    half = dim // 2
    freq = torch.exp(-math.log(float(base)) * torch.arange(half, dtype=torch.float32, device=x.device) / half)
    arg = x.to(torch.float32).unsqueeze(-1) * freq
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


def token_dim(op_dim: int, pos_dim: int, src_dim: int, include_op: bool = True) -> int:
    """Width of a token made by :func:`tokenize` with these code widths."""
    return (int(op_dim) if include_op else 0) + int(pos_dim) + int(src_dim)


def local_index(batch) -> torch.Tensor:
    """``int64 [N]``: every node's index within its own graph."""
    return torch.arange(batch.num_nodes, device=batch.op.device) - batch.node_ptr.index_select(0, batch.graph)


def topological_rank(batch, keys: torch.Tensor | None = None) -> torch.Tensor:
    """``int64 [N]``: the sequence position of every node (within its graph) in a topological order.

    Kahn's algorithm on every graph of ``batch`` at once: at each step, every graph places, among
    its nodes whose predecessors are all placed, the one with the smallest key. ``keys`` (``[N]``,
    any real numbers) default to the node's index in its graph, which keeps an already-topological
    node order as it is. ``ValueError`` for a graph with a cycle.
    """
    n_nodes = batch.num_nodes
    dev = batch.op.device
    if n_nodes == 0:
        return torch.zeros(0, dtype=torch.int64, device=dev)
    local = local_index(batch)
    b = batch.num_graphs
    nmax = int(batch.node_ptr.diff().max())
    slot = batch.graph * nmax + local
    key = local.to(torch.float64) if keys is None else torch.as_tensor(keys, device=dev).to(torch.float64)
    if key.shape != (n_nodes,):
        raise ValueError(f"keys must have one value per node ({n_nodes}), got shape {list(key.shape)}")
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=dev)
    key_pad = inf.expand(b * nmax).clone().index_copy_(0, slot, key).view(b, nmax)
    valid = torch.zeros(b * nmax, dtype=torch.bool, device=dev).index_fill_(0, slot, True).view(b, nmax)
    src, dst = batch.in_csr.index, batch.in_rows
    adj = torch.zeros(b, nmax, nmax, dtype=torch.int64, device=dev)
    adj.index_put_((batch.graph.index_select(0, src), local.index_select(0, src), local.index_select(0, dst)),
                   torch.ones_like(src), accumulate=True)
    indeg = adj.sum(1)                                                  # [B, n] predecessors not yet placed
    placed = ~valid
    rank_pad = torch.full((b, nmax), -1, dtype=torch.int64, device=dev)
    rows = torch.arange(b, device=dev)
    for step in range(nmax):
        ready = ~placed & (indeg == 0)
        has = ready.any(1)
        if not bool(has.any()):
            break
        pick = torch.where(ready, key_pad, inf).argmin(1)               # [B]
        rows_h, pick_h = rows[has], pick[has]
        rank_pad[rows_h, pick_h] = step
        placed[rows_h, pick_h] = True
        indeg[has] -= adj[rows_h, pick_h]
    rank = rank_pad.view(-1).index_select(0, slot)
    if bool((rank < 0).any()):
        g = int(batch.graph[rank < 0][0])
        raise ValueError(f"graph {g} of the batch has a cycle: it has no topological order")
    return rank


def random_topological_rank(batch, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random topological order of every graph (sequence positions, as :func:`topological_rank`):
    Kahn's algorithm with uniform random keys, drawn from ``generator`` (default: torch's global
    generator). Every topological order of a graph can be drawn; the graph and its reachability are
    untouched, only the sequence positions change."""
    keys = torch.rand(batch.num_nodes, generator=generator, dtype=torch.float64)
    return topological_rank(batch, keys.to(batch.op.device))


def tokenize(batch, rank: torch.Tensor | None = None, op_dim: int = 32, pos_dim: int = 32, src_dim: int = 32,
             include_op: bool = True) -> torch.Tensor:
    """``[N, token_dim]`` NAR-Former tokens of the nodes of ``batch`` (module docstring):
    ``[sinusoidal(op, op_dim) | sinusoidal(p_v, pos_dim) | sum_u sinusoidal(p_u, src_dim)]`` with
    ``p`` the sequence positions ``rank`` (default: :func:`topological_rank`); a node without
    predecessors gets ``sinusoidal(-1, src_dim)`` as its source code. ``include_op=False`` leaves
    the op code out (for encoders that read node features instead of op ids)."""
    rank = topological_rank(batch) if rank is None else rank
    if rank.shape != (batch.num_nodes,):
        raise ValueError(f"rank must have one position per node ({batch.num_nodes}), got {list(rank.shape)}")
    pos = rank.to(torch.float32)
    src = batch.in_csr.index
    source_code = torch.zeros(batch.num_nodes, int(src_dim), device=pos.device).index_add_(
        0, batch.in_rows, sinusoidal(pos.index_select(0, src), src_dim))
    no_pred = batch.in_csr.indptr.diff() == 0
    source_code[no_pred] = sinusoidal(torch.tensor(-1.0, device=pos.device), src_dim)
    parts = [sinusoidal(pos, pos_dim), source_code]
    if include_op:
        parts.insert(0, sinusoidal(batch.op.to(torch.float32), op_dim))
    return torch.cat(parts, dim=-1)
