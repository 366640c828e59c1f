"""A minimal in-memory dataset of architectures: graphs + search space + named numeric targets."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fgp_ext.data.arch import ArchGraph

__all__ = ["Dataset"]


class Dataset:
    """Architectures of one search space with their numeric targets.

    Parameters
    ----------
    graphs:
        The architectures (:class:`~fgp_ext.graph.ArchGraph`).
    space:
        The :class:`~fgp_ext.data.spaces.SearchSpace` whose vocabulary the op ids refer to.
    targets:
        ``{name: array-like [N]}`` numeric labels (NaN = missing). If omitted, collected from the
        graphs' own ``targets`` dicts (union of names, NaN where a graph lacks one).
    index:
        Integer id of every architecture in its benchmark (e.g. the official NAS-Bench-201 index);
        defaults to ``0..N-1``.

    Indexing: ``ds[i]`` is a graph; ``ds[slice]``, ``ds[int array]``, ``ds[bool mask]`` and
    ``ds.subset(indices)`` return a new :class:`Dataset` (targets and index follow).
    """

    def __init__(self, graphs: Sequence[ArchGraph], space, targets: Mapping | None = None,
                 index=None):
        self.graphs: list[ArchGraph] = list(graphs)
        self.space = space
        n = len(self.graphs)
        for i, g in enumerate(self.graphs):
            if not isinstance(g, ArchGraph):
                raise TypeError(f"graphs[{i}] is a {type(g).__name__}, not an ArchGraph")
        if targets is None:
            names: dict[str, None] = {}
            for g in self.graphs:
                names.update(dict.fromkeys(g.targets))
            targets = {k: np.array([g.targets.get(k, np.nan) for g in self.graphs],
                                   dtype=np.float64) for k in names}
        self._targets: dict[str, np.ndarray] = {}
        for k, v in targets.items():
            a = np.asarray(v, dtype=np.float64).reshape(-1)
            if a.shape[0] != n:
                raise ValueError(f"target {k!r} has {a.shape[0]} values for {n} graphs")
            a.setflags(write=False)
            self._targets[str(k)] = a
        if index is None:
            idx = np.arange(n, dtype=np.int64)
        else:
            idx = np.asarray(index, dtype=np.int64).reshape(-1)
            if idx.shape[0] != n:
                raise ValueError(f"index has {idx.shape[0]} values for {n} graphs")
        idx.setflags(write=False)
        self.index: np.ndarray = idx

    # -- targets ---------------------------------------------------------------------------------
    @property
    def target_names(self) -> list[str]:
        """Names of the numeric targets, in file order."""
        return list(self._targets)

    def targets(self, name: str) -> np.ndarray:
        """Target ``name`` as ``float64 [N]`` (NaN where missing); ``KeyError`` if unknown."""
        try:
            return self._targets[name].copy()
        except KeyError:
            raise KeyError(f"unknown target {name!r}; available: {self.target_names}") from None

    @property
    def names(self) -> list[str | None]:
        """The ``name`` of every graph (``None`` where absent)."""
        return [g.name for g in self.graphs]

    # -- container protocol ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.graphs)

    def __iter__(self):
        return iter(self.graphs)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            n = len(self.graphs)
            if not -n <= key < n:
                raise IndexError(f"index {key} out of range for a dataset of {n} graphs")
            return self.graphs[int(key)]
        if isinstance(key, slice):
            return self.subset(np.arange(len(self.graphs))[key])
        return self.subset(key)

    def subset(self, indices) -> "Dataset":
        """A new dataset with the graphs at ``indices`` (int array-like or bool mask)."""
        idx = np.asarray(indices)
        n = len(self.graphs)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean mask of shape {list(idx.shape)} for {n} graphs")
            idx = np.flatnonzero(idx)
        elif idx.size == 0:
            idx = idx.astype(np.int64)
        elif not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"indices must be integers or a boolean mask, got {idx.dtype}")
        idx = idx.reshape(-1).astype(np.int64)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for a dataset of {n} graphs")
        idx = np.where(idx < 0, idx + n, idx)
        return Dataset([self.graphs[i] for i in idx.tolist()], self.space,
                       {k: v[idx] for k, v in self._targets.items()}, self.index[idx])

    def remap_ops(self, space, remap) -> "Dataset":
        """A new dataset of the same graphs whose op ids are renumbered into ``space``'s
        vocabulary: ``remap[old_id] = new_id`` (targets, index and file attributes follow)."""
        import dataclasses

        remap = np.asarray(remap, dtype=np.int64)
        graphs = [dataclasses.replace(g, ops=remap[g.ops], targets=dict(g.targets)) for g in self.graphs]
        ds = Dataset(graphs, space, self._targets, self.index)
        for attr in ("nonfinite", "source"):
            if hasattr(self, attr):
                setattr(ds, attr, getattr(self, attr))
        return ds

    def __repr__(self) -> str:
        space = getattr(self.space, "name", self.space)
        return f"Dataset({len(self)} graphs, space={space!r}, targets={self.target_names})"
