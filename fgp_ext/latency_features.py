"""Architecture features of any graph search space for the few-shot latency predictor
(:mod:`fgp_ext.latency_model`), where no network can be built: the file's op graph and its cheap
numeric columns (params, FLOPs, MACs, resolution...) carry the architecture.

Features of one architecture (an :class:`~fgp_ext.data.arch.ArchGraph` read from a JSONL/JSON/CSV
file, op names through its space's vocabulary):

* the count of every op of the vocabulary;
* the same counts per position: each node's depth (longest path from a source) divided by the
  graph's depth puts it in one of ``buckets`` equal bins, so that an op early in a chain (large
  feature maps) and the same op late (small maps, many channels) are different features;
* the number of nodes, of edges, and the depth;
* each cheap column of the file, its logarithm where every training value is > 0.

Each feature is z-scored with the training file's mean and standard deviation (a constant feature
stays 0). :class:`GraphFeatureSchema` records all of it (the space's name, vocabulary, cheap columns
and their transform, the scaling), so a model never reads a file of another space silently: an op
outside the vocabulary, another space or a missing cheap column is a one-line
:class:`LatencyModelError`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["GraphFeatureSchema", "LatencyModelError", "graph_depths", "default_cheap_columns"]


class LatencyModelError(ValueError):
    """A bad latency model file, architecture or measurement (one line, no traceback)."""


def graph_depths(ops_len: int, edges: np.ndarray) -> np.ndarray:
    """Depth of every node of a DAG: the number of edges on the longest path from a node without
    predecessors, ``int64 [n]``."""
    n = int(ops_len)
    depth = np.zeros(n, dtype=np.int64)
    if edges.shape[1] == 0:
        return depth
    src, dst = edges[0], edges[1]
    indeg = np.bincount(dst, minlength=n)
    out: list[list[int]] = [[] for _ in range(n)]
    for s, d in zip(src.tolist(), dst.tolist()):
        out[s].append(d)
    stack = [i for i in range(n) if indeg[i] == 0]
    indeg = indeg.copy()
    while stack:
        u = stack.pop()
        for v in out[u]:
            if depth[u] + 1 > depth[v]:
                depth[v] = depth[u] + 1
            indeg[v] -= 1
            if indeg[v] == 0:
                stack.append(v)
    return depth


def default_cheap_columns(dataset) -> list[str]:
    """The columns that are features by default: every numeric column that is not a ``lat_*``
    column and has a finite value for every architecture."""
    out = []
    for c in dataset.target_names:
        if c.startswith("lat_"):
            continue
        y = dataset.targets(c)
        if y.size and np.isfinite(y).all():
            out.append(c)
    return out


def _space_name(dataset) -> str:
    return str(getattr(getattr(dataset, "space", None), "name", None))


class GraphFeatureSchema:
    """What a graph-space latency model reads from a file: ``space`` (name), ``vocab`` (op names),
    ``cheap`` (column names) with ``cheap_log`` (log-transformed or not), ``buckets`` (position
    bins) and the z-scoring ``mean`` / ``std`` of the raw features. Build with :meth:`fit`."""

    def __init__(self, *, space: str, vocab: Sequence[str], cheap: Sequence[str],
                 cheap_log: Sequence[bool], buckets: int, mean, std):
        self.space = str(space)
        self.vocab = [str(v) for v in vocab]
        self.cheap = [str(c) for c in cheap]
        self.cheap_log = [bool(b) for b in cheap_log]
        self.buckets = int(buckets)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        if len(self.cheap_log) != len(self.cheap) or self.mean.shape != (self.dim,) or self.std.shape != (self.dim,):
            raise LatencyModelError("inconsistent feature schema (sizes do not match)")

    @property
    def dim(self) -> int:
        """The number of features."""
        return len(self.vocab) * (1 + self.buckets) + 3 + len(self.cheap)

    @property
    def cheap_slice(self) -> slice:
        """Where the cheap columns' features are (the last ``len(cheap)``)."""
        return slice(self.dim - len(self.cheap), self.dim)

    @classmethod
    def fit(cls, dataset, cheap: Sequence[str] | None = None, buckets: int = 2) -> "GraphFeatureSchema":
        """The schema of ``dataset`` (its space, vocabulary and ``cheap`` columns, default
        :func:`default_cheap_columns`), scaled to its architectures."""
        if buckets < 1:
            raise LatencyModelError(f"buckets must be >= 1, got {buckets}")
        vocab = list(getattr(dataset.space, "vocab", None) or [])
        if not vocab:
            raise LatencyModelError("the data's search space has no op vocabulary")
        cheap = default_cheap_columns(dataset) if cheap is None else list(cheap)
        logs = []
        for c in cheap:
            if c.startswith("lat_"):
                raise LatencyModelError(f"column {c!r} is a latency column, not a cheap feature")
            if c not in dataset.target_names:
                raise LatencyModelError(f"unknown column {c!r}; columns: {dataset.target_names}")
            y = dataset.targets(c)
            if not np.isfinite(y).all():
                i = int(np.flatnonzero(~np.isfinite(y))[0])
                raise LatencyModelError(f"cheap column {c!r} has no finite value for architecture {i}; a "
                                        f"feature column needs a value for every architecture")
            logs.append(bool((y > 0).all()))
        dim = len(vocab) * (1 + buckets) + 3 + len(cheap)
        s = cls(space=_space_name(dataset), vocab=vocab, cheap=cheap, cheap_log=logs, buckets=buckets,
                mean=np.zeros(dim), std=np.ones(dim))
        raw = s.raw(dataset)
        s.mean = raw.mean(0)
        sd = raw.std(0)
        s.std = np.where(sd > 1e-12, sd, 1.0)
        return s

    # -- checks ------------------------------------------------------------------------------------
    def check(self, dataset, what: str = "the data") -> np.ndarray:
        """``remap[file op id] = model op id`` for ``dataset``; ``LatencyModelError`` (one line)
        when it is another space, holds an op outside the vocabulary or lacks a cheap column."""
        space = _space_name(dataset)
        if space != self.space:
            raise LatencyModelError(f"{what} holds architectures of space {space!r}; this latency model was "
                                    f"trained on space {self.space!r} (ops {', '.join(self.vocab)})")
        names = list(getattr(dataset.space, "vocab", None) or [])
        index = {op: i for i, op in enumerate(self.vocab)}
        used = np.zeros(len(names), dtype=bool)
        for g in dataset.graphs:
            used[g.ops] = True
        unknown = [names[i] for i in np.flatnonzero(used) if names[i] not in index]
        if unknown:
            raise LatencyModelError(f"{what} holds op(s) {unknown[:5]} outside the space this latency model "
                                    f"was trained on ({self.space!r}, ops {', '.join(self.vocab)}): another space?")
        missing = [c for c in self.cheap if c not in dataset.target_names]
        if missing:
            raise LatencyModelError(f"{what} lacks the column(s) {missing} this latency model reads as features "
                                    f"(trained with {', '.join(self.cheap)}): another space or another file format?")
        return np.array([index.get(op, -1) for op in names], dtype=np.int64)

    # -- features ----------------------------------------------------------------------------------
    def raw(self, dataset, what: str = "the data") -> np.ndarray:
        """Unscaled features of every architecture of ``dataset``, ``float64 [N, dim]``."""
        remap = self.check(dataset, what)
        V, B = len(self.vocab), self.buckets
        n = len(dataset)
        F = np.zeros((n, self.dim))
        for i, g in enumerate(dataset.graphs):
            ops = remap[g.ops]
            d = graph_depths(g.num_nodes, g.edges)
            top = max(int(d.max()), 1)
            b = np.minimum((d * B) // (top + 1), B - 1) if top else np.zeros_like(d)
            F[i, :V] = np.bincount(ops, minlength=V)
            F[i, V:V * (1 + B)] = np.bincount(b * V + ops, minlength=V * B)
            F[i, V * (1 + B):V * (1 + B) + 3] = (g.num_nodes, g.num_edges, int(d.max()))
        for j, (c, lg) in enumerate(zip(self.cheap, self.cheap_log)):
            y = dataset.targets(c)
            bad = np.flatnonzero(~np.isfinite(y) | ((y <= 0) if lg else False))
            if bad.size:
                i = int(bad[0])
                name = dataset.names[i] if dataset.names[i] else f"architecture {i}"
                raise LatencyModelError(f"{what}: {name} has {c} = {y[i]}; the model reads {c} as a feature and "
                                        f"needs {'a value > 0' if lg else 'a finite value'} for every architecture")
            F[:, V * (1 + B) + 3 + j] = np.log(y) if lg else y
        return F

    def __call__(self, dataset, what: str = "the data") -> np.ndarray:
        """Scaled features of every architecture of ``dataset``, ``float64 [N, dim]``."""
        return (self.raw(dataset, what) - self.mean) / self.std

    # -- files -------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        """The schema as JSON-able data (the scaling as lists)."""
        return {"space": self.space, "vocab": self.vocab, "cheap": self.cheap, "cheap_log": self.cheap_log,
                "buckets": self.buckets, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, d) -> "GraphFeatureSchema":
        """Inverse of :meth:`to_json`; ``LatencyModelError`` for anything malformed."""
        try:
            return cls(space=d["space"], vocab=d["vocab"], cheap=d["cheap"], cheap_log=d["cheap_log"],
                       buckets=d["buckets"], mean=d["mean"], std=d["std"])
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, LatencyModelError):
                raise
            raise LatencyModelError(f"malformed feature schema ({type(e).__name__})") from None
