"""The graph structure every op of :mod:`fgp_ext.ops` takes (:class:`CSR`) and the conversions into
it. Torch only: no compiled code, nothing else of the package.

The one convention: a graph is a CSR **by destination**. Row ``v`` holds the entries
``index[indptr[v]:indptr[v+1]]``, the sources of the edges that end at ``v`` (its predecessors),
in the order those edges had in the edge list (stable). A PyG ``edge_index`` (row 0 = sources,
row 1 = destinations, messages flowing source to target) converts with :func:`csr_from_edge_index`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["CSR", "as_csr", "csr_from_edge_index", "csr_row_ids"]


class CSR(NamedTuple):
    """A compressed-sparse-row structure.

    * ``indptr`` ``int64 [rows + 1]`` and ``index`` ``int64 [E]``: row ``i`` holds
      ``index[indptr[i]:indptr[i+1]]``.
    * ``perm`` ``int64 [E]`` (optional): for each entry, its position in the structure it was built
      from: the edge's position in the edge list for :func:`csr_from_edge_index`, the entry of the
      original CSR for a transpose (:func:`fgp_ext.ops.csr_transpose`).
    * ``transpose`` (optional): the transposed CSR (by source, with its ``perm``), when it is
      already known. Backward passes of the ops need it; when it is absent they build it, so
      carrying it saves one transpose per call (:meth:`with_transpose` adds it once).
    """

    indptr: torch.Tensor
    index: torch.Tensor
    perm: torch.Tensor | None = None
    transpose: "CSR | None" = None

    @property
    def num_rows(self) -> int:
        return self.indptr.numel() - 1

    @property
    def num_entries(self) -> int:
        return self.index.numel()

    def rows(self) -> torch.Tensor:
        """``int64 [E]``: the row of every entry (the destination node of every edge)."""
        return csr_row_ids(self.indptr, self.index.numel())

    def with_transpose(self, num_cols: int | None = None) -> "CSR":
        """This CSR carrying its transpose (unless it already does): row ``c`` of the transpose
        lists the rows holding ``c`` in entry order, ``perm`` each transposed entry's position here
        (what :func:`fgp_ext.ops.csr_transpose` returns). ``num_cols``: the transpose's number of
        rows; default: this CSR's number of rows (a graph's nodes)."""
        if self.transpose is not None:
            return self
        cols = self.num_rows if num_cols is None else int(num_cols)
        # the entries read as an edge list (entry order = edge order) reversed: its CSR by
        # destination is the transpose, stable, with perm = the entry positions
        return self._replace(transpose=csr_from_edge_index(torch.stack([self.rows(), self.index]), cols))

    def to(self, device) -> "CSR":
        """A copy on ``device`` (its transpose too)."""
        return CSR(self.indptr.to(device), self.index.to(device),
                   None if self.perm is None else self.perm.to(device),
                   None if self.transpose is None else self.transpose.to(device))


def csr_row_ids(indptr: torch.Tensor, num_entries: int | None = None) -> torch.Tensor:
    """The row of every entry of a CSR with row pointer ``indptr`` (``int64 [E]``)."""
    counts = indptr.diff()
    rows = torch.arange(counts.numel(), device=indptr.device)
    return torch.repeat_interleave(rows, counts, output_size=num_entries)


def csr_from_edge_index(edge_index: torch.Tensor, num_nodes: int) -> CSR:
    """The CSR by destination of a graph given as a PyG-style edge index.

    ``edge_index``: ``int64 [2, E]``, ``edge_index[0]`` the source and ``edge_index[1]`` the
    destination of every edge. Row ``v`` of the result lists the sources of the edges ending at
    ``v`` in edge-list order (a stable sort), and ``perm[e]`` is the edge-list position of entry
    ``e``, so per-edge data ``w [E]`` reads ``w[perm]`` in CSR order. Any graph works (cycles,
    self-loops, repeated edges); the DAG-only ops check acyclicity themselves.
    """
    edge_index = torch.as_tensor(edge_index)
    if edge_index.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"edge_index must be an integer tensor, got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {list(edge_index.shape)}")
    n = int(num_nodes)
    if n < 0:
        raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
    edge_index = edge_index.to(torch.int64)
    if edge_index.numel():
        lo, hi = int(edge_index.min()), int(edge_index.max())
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            pos = (edge_index == bad).nonzero()[0].tolist()
            raise IndexError(f"edge_index[{pos[0]}, {pos[1]}] = {bad} is not a node id of a graph of {n} nodes")
    src, dst = edge_index[0], edge_index[1]
    order = torch.sort(dst, stable=True).indices
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=edge_index.device)
    torch.cumsum(torch.bincount(dst, minlength=n), 0, out=indptr[1:])
    return CSR(indptr, src.index_select(0, order), order)


def as_csr(graph, op_name: str, argument: str = "csr") -> CSR:
    """``graph`` if it is a :class:`CSR`, else a ``TypeError`` that says how to build one: the ops
    take the graph as one object since 0.3, and a tensor in its place is the old
    ``(index, indptr)`` calling style."""
    if isinstance(graph, CSR):
        return graph
    raise TypeError(f"{op_name}: {argument} must be a fgp_ext.sparse.CSR (the graph by destination), got "
                    f"{type(graph).__name__}; build one with CSR(indptr, index) or "
                    f"fgp_ext.sparse.csr_from_edge_index(edge_index, num_nodes)")
