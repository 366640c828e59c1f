"""One architecture as an op-on-node DAG (:class:`ArchGraph`): numpy only.

Kept free of torch and of the compiled extension so that the search spaces and file loaders of
:mod:`fgp_ext.data` import without them; :mod:`fgp_ext.graph` turns lists of these into
kernel-ready :class:`~fgp_ext.graph.ArchBatch` tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ArchGraph"]


@dataclass(frozen=True, eq=False)
class ArchGraph:
    """One architecture: ``ops[i]`` is the vocabulary id of node ``i``; ``edges`` is ``int64 [2, E]``
    with ``edges[0]`` the source and ``edges[1]`` the destination of each edge.

    ``sources`` lists the nodes that receive the random vector and are read out by the flow
    surrogate (the cell's input node(s)); ``None`` means "every node without predecessors".
    ``targets`` holds any numeric labels (accuracy, latency, a zero-cost proxy...) by name.
    """

    ops: np.ndarray
    edges: np.ndarray
    sources: tuple[int, ...] | None = None
    targets: dict[str, float] = field(default_factory=dict)
    name: str | None = None

    def __post_init__(self):
        ops = np.asarray(self.ops, dtype=np.int64).reshape(-1)
        edges = np.asarray(self.edges, dtype=np.int64)
        if edges.size == 0:
            edges = np.zeros((2, 0), dtype=np.int64)
        if edges.ndim != 2 or edges.shape[0] != 2:
            raise ValueError(f"edges must have shape [2, E], got {list(edges.shape)}")
        n = ops.shape[0]
        if n == 0:
            raise ValueError("an architecture needs at least one node")
        if edges.size and (edges.min() < 0 or edges.max() >= n):
            raise ValueError(f"edge endpoint out of range for a graph of {n} nodes")
        if (ops < 0).any():
            raise ValueError("op ids must be non-negative")
        if self.sources is not None:
            src = tuple(int(s) for s in self.sources)
            if any(s < 0 or s >= n for s in src):
                raise ValueError(f"source node out of range for a graph of {n} nodes")
            object.__setattr__(self, "sources", src)
        object.__setattr__(self, "ops", ops)
        object.__setattr__(self, "edges", edges)

    @property
    def num_nodes(self) -> int:
        return int(self.ops.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edges.shape[1])
