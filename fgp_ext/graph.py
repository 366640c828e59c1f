"""Architectures as graphs: :class:`ArchGraph` (one DAG, numpy) and :class:`ArchBatch` (a collated
batch, tensors).

An architecture is a DAG whose nodes carry operations (op-on-node). ``ArchGraph`` holds the op id of
every node and the edge list; ``ArchBatch`` (see :func:`collate`, :func:`batch_from_arrays`,
:meth:`ArchBatch.from_pyg`) concatenates many graphs and precomputes, once, everything the kernels
need (CSR by destination and by source, topological levels, source nodes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fgp_ext import ops
from fgp_ext.data.arch import ArchGraph
from fgp_ext.ops import LevelSchedule
from fgp_ext.sparse import CSR, csr_from_edge_index

__all__ = ["ArchGraph", "ArchBatch", "collate", "batch_from_arrays", "REVERSE_SUCCESSORS",
           "check_reverse_successors"]


REVERSE_SUCCESSORS = ("all", "earliest")


def check_reverse_successors(value: str, name: str = "reverse_successors") -> str:
    """``value`` if it names a reversed-pass mode of :data:`REVERSE_SUCCESSORS`, else ``ValueError``
    (``name``: the argument's name in the message)."""
    if value not in REVERSE_SUCCESSORS:
        raise ValueError(f"{name} must be 'all' or 'earliest', got {value!r}")
    return value


@dataclass(frozen=True, eq=False)
class ArchBatch:
    """A batch of graphs in kernel-ready form (all tensors on one device).

    Nodes of graph ``g`` are ``node_ptr[g]:node_ptr[g+1]``. ``in_csr`` is the CSR by destination
    (predecessors, edges sorted by destination, stable) and ``out_csr`` its transpose (successors,
    with ``perm`` mapping back to ``in_csr`` entries); both are built once here and reused by every
    op call and backward pass on this batch.
    """

    op: torch.Tensor          # int64 [N]
    node_ptr: torch.Tensor    # int64 [B+1]
    graph: torch.Tensor       # int64 [N], graph id of every node
    in_csr: CSR
    out_csr: CSR
    level: torch.Tensor       # int64 [N], topological generation
    is_source: torch.Tensor   # bool [N]
    x: torch.Tensor | None = None  # optional continuous node features [N, F] (PyG's ``x``)

    def __post_init__(self):
        # ``in_csr`` carries its transpose (``out_csr``, whose ``perm`` maps successor entries to
        # predecessor entries), so every op called on ``batch.in_csr`` finds the structure its
        # backward reads without rebuilding it (see fgp_ext.sparse.CSR). ``out_csr`` carries none:
        # an op's backward on it builds one when needed.
        if self.in_csr.transpose is None:
            object.__setattr__(self, "in_csr", self.in_csr._replace(transpose=self.out_csr._replace(transpose=None)))
        if self.x is not None and (self.x.dim() < 1 or self.x.shape[0] != self.op.shape[0]):
            raise ValueError(f"node features x must have one row per node ({self.op.shape[0]}), "
                             f"got shape {list(self.x.shape)}")

    @property
    def num_graphs(self) -> int:
        return self.node_ptr.numel() - 1

    @property
    def num_nodes(self) -> int:
        return self.op.numel()

    @property
    def num_edges(self) -> int:
        return self.in_csr.index.numel()

    @property
    def device(self):
        return self.op.device

    def to(self, device) -> "ArchBatch":
        """A copy of the batch on ``device``."""
        def mv(t):
            return None if t is None else t.to(device)

        return ArchBatch(
            op=mv(self.op), node_ptr=mv(self.node_ptr), graph=mv(self.graph),
            in_csr=self.in_csr.to(device), out_csr=self.out_csr.to(device),
            level=mv(self.level), is_source=mv(self.is_source), x=mv(self.x),
        )

    @classmethod
    def from_pyg(cls, data, op=None) -> "ArchBatch":
        """An :class:`ArchBatch` from a PyTorch Geometric ``Batch`` (or one ``Data``).

        Reads ``edge_index`` (row 0 sources, row 1 destinations: PyG's source-to-target flow), the
        graph boundaries from ``ptr`` (else the sorted ``batch`` vector, else one graph), op ids
        from ``op`` (an attribute name or a tensor; default the ``op`` attribute, or ``x`` when it
        is an integer column), continuous node features from a float ``x`` (kept as ``batch.x``,
        read by encoders built with ``node_features=F``) and ``is_source`` when present (default:
        nodes without predecessors). The graphs must be DAGs. The batch is built on the CPU; call
        :meth:`to` afterwards."""
        return _from_pyg(data, op)

    def to_pyg(self):
        """This batch as a PyTorch Geometric ``Batch`` (needs ``torch_geometric``): ``edge_index``
        in the original edge order, ``op``, ``is_source``, ``x`` when the batch has node features,
        ``batch``/``ptr`` from the graph boundaries; ``ArchBatch.from_pyg(b.to_pyg())`` rebuilds
        ``b``. One ``Data`` per graph is assembled in Python: meant for interoperability, not for a
        training loop."""
        return _to_pyg(self)

    def select(self, graph_ids) -> "ArchBatch":
        """The sub-batch of the graphs ``graph_ids`` (in that order; repeats allowed): nodes, both
        CSRs (with their ``perm``), levels and sources are gathered and re-offset, never recomputed
        (no per-graph Python).

        The result equals ``collate([graphs[i] for i in graph_ids])`` field by field when this batch
        was built by :func:`collate` / :func:`batch_from_arrays` (edges of each graph contiguous in
        the original edge list), which is what lets training pre-collate a dataset once and index
        it every step. One compiled op (``select_graphs``) copies and re-offsets every field.
        """
        ids = torch.as_tensor(graph_ids, dtype=torch.int64, device=self.node_ptr.device).reshape(-1)
        b = self.num_graphs
        if ids.numel() and (int(ids.min()) < -b or int(ids.max()) >= b):
            raise IndexError(f"graph id out of range for a batch of {b} graphs")
        ids = torch.where(ids < 0, ids + b, ids)
        if self.in_csr.perm is not None and self.out_csr.perm is not None:
            node_ptr, graph, op, level, is_source, in_csr, out_csr = ops.select_graphs(
                self.node_ptr, ids, self.op, self.level, self.is_source, self.in_csr, self.out_csr)
            x = None
            if self.x is not None:  # node features follow their nodes: old id of every new node
                old_nodes = (torch.arange(op.numel(), device=op.device)
                             + (self.node_ptr.index_select(0, ids) - node_ptr[:-1]).index_select(0, graph))
                x = self.x.index_select(0, old_nodes)
            return ArchBatch(op=op, node_ptr=node_ptr, graph=graph, in_csr=in_csr, out_csr=out_csr, level=level,
                             is_source=is_source, x=x)
        return self._select_tensors(ids)

    def _select_tensors(self, ids) -> "ArchBatch":
        """:meth:`select` with plain tensor ops (batches without CSR permutations)."""
        b = self.num_graphs

        dev = self.node_ptr.device
        sizes = self.node_ptr.diff().index_select(0, ids)
        new_ptr = torch.zeros(ids.numel() + 1, dtype=torch.int64, device=dev)
        torch.cumsum(sizes, 0, out=new_ptr[1:])
        n_new = int(new_ptr[-1])
        new_graph = torch.repeat_interleave(torch.arange(ids.numel(), device=dev), sizes, output_size=n_new)
        # old node id of every new node
        node_shift = self.node_ptr.index_select(0, ids) - new_ptr[:-1]           # old - new, per graph
        old_nodes = torch.arange(n_new, device=dev) + node_shift.index_select(0, new_graph)

        def sub_csr(csr, perm_base_old, perm_base_new):
            deg = csr.indptr.diff().index_select(0, old_nodes)
            indptr = torch.zeros(n_new + 1, dtype=torch.int64, device=dev)
            torch.cumsum(deg, 0, out=indptr[1:])
            e_new = int(indptr[-1])
            row = torch.repeat_interleave(torch.arange(n_new, device=dev), deg, output_size=e_new)
            pos = torch.arange(e_new, device=dev) + (csr.indptr[:-1].index_select(0, old_nodes)
                                                     - indptr[:-1]).index_select(0, row)
            g = new_graph.index_select(0, row)
            index = csr.index.index_select(0, pos) - node_shift.index_select(0, g)
            perm = None
            if csr.perm is not None:
                # entries of one graph are contiguous in the referenced order: re-offset per graph
                perm = csr.perm.index_select(0, pos) - perm_base_old.index_select(0, ids).index_select(0, g) \
                    + perm_base_new.index_select(0, g)
            return CSR(indptr, index, perm), indptr

        # first in_csr entry (= first edge, edges being grouped by graph) of every graph
        in_base_old = self.in_csr.indptr.index_select(0, self.node_ptr[:-1])
        in_deg_g = (self.in_csr.indptr.index_select(0, self.node_ptr[1:]) - in_base_old).index_select(0, ids)
        in_base_new = torch.zeros(ids.numel(), dtype=torch.int64, device=dev)
        if ids.numel() > 1:
            torch.cumsum(in_deg_g[:-1], 0, out=in_base_new[1:])
        in_csr, _ = sub_csr(self.in_csr, in_base_old, in_base_new)
        out_csr, _ = sub_csr(self.out_csr, in_base_old, in_base_new)
        return ArchBatch(op=self.op.index_select(0, old_nodes), node_ptr=new_ptr, graph=new_graph,
                         in_csr=in_csr, out_csr=out_csr, level=self.level.index_select(0, old_nodes),
                         is_source=self.is_source.index_select(0, old_nodes),
                         x=None if self.x is None else self.x.index_select(0, old_nodes))

    @property
    def in_rows(self) -> "torch.Tensor":
        """``int64 [E]``: the destination node (CSR row) of every ``in_csr`` entry (cached)."""
        return self._rows("in")

    @property
    def out_rows(self) -> "torch.Tensor":
        """``int64 [E]``: the source node (CSR row) of every ``out_csr`` entry (cached)."""
        return self._rows("out")

    @property
    def undirected_csr(self) -> "CSR":
        """The graph made undirected as one CSR (cached): row ``v`` lists ``v``'s predecessors (in
        ``in_csr`` order) followed by its successors (in ``out_csr`` order). For encoders that
        treat edges both ways (GatedGCN), one gather and one segment sum per layer instead of two."""
        return self._undirected()[0]

    @property
    def undirected_rows(self) -> "torch.Tensor":
        """``int64 [2E]``: the row (node) of every :attr:`undirected_csr` entry (cached)."""
        return self._undirected()[1]

    def schedule(self, reverse: bool = False, successors: str = "all") -> "LevelSchedule":
        """The level schedule (:func:`fgp_ext.ops.level_schedule`) of the batch (cached): nodes in
        topological generations with the predecessor CSR per level; with ``reverse=True`` the same
        for the reversed graph (generations counted from the sinks, successor CSR). Built in C++ once
        per batch; flow-aware encoders (:class:`~fgp_ext.encoders.FlowerFormer`) propagate along it.

        ``successors="earliest"`` (reverse only) keeps, for every node, only its successors of the
        earliest forward generation (:meth:`earliest_successor_csr`): the reversed pass of the
        original FlowerFormer code, which revisits the forward generations backwards and keeps a
        node's last update."""
        check_reverse_successors(successors, "successors")
        if successors == "earliest" and not reverse:
            raise ValueError("successors='earliest' applies to the reversed schedule (reverse=True) only")
        cache = self.__dict__.setdefault("_row_cache", {})
        key = ("schedule_rev" if successors == "all" else "schedule_rev_earliest") if reverse else "schedule"
        if key not in cache:
            if reverse:
                csr = self.out_csr if successors == "all" else self.earliest_successor_csr()
                level = ops.topo_levels(csr, self.node_ptr)
            else:
                csr, level = self.in_csr, self.level
            cache[key] = ops.level_schedule(csr, level)
        return cache[key]

    def earliest_successor_csr(self) -> "CSR":
        """The successor CSR (by source, like ``out_csr``) keeping only each node's successors of
        the smallest forward generation (``level``); entries keep their ``out_csr`` order and carry
        no ``perm``. On NAS-Bench-201 cells it equals ``out_csr``; on NB101 / DARTS cells a node
        often feeds several generations (e.g. the input straight into the output)."""
        csr = self.out_csr
        rows = self.out_rows
        succ_level = self.level.index_select(0, csr.index)
        lowest = torch.full((self.num_nodes,), torch.iinfo(succ_level.dtype).max, dtype=succ_level.dtype,
                            device=succ_level.device).scatter_reduce(0, rows, succ_level, "amin")
        keep = succ_level == lowest.index_select(0, rows)
        indptr = torch.zeros_like(csr.indptr)
        torch.cumsum(torch.zeros(self.num_nodes, dtype=torch.int64, device=rows.device).index_add_(
            0, rows, keep.to(torch.int64)), 0, out=indptr[1:])
        return CSR(indptr, csr.index[keep])

    @property
    def flow_pairs(self) -> "CSR":
        """Flow-related node pairs (cached, :func:`fgp_ext.ops.flow_pairs`): row ``v`` lists the nodes
        of its graph that reach ``v``, that ``v`` reaches, and ``v`` itself; its own transpose."""
        cache = self.__dict__.setdefault("_row_cache", {})
        if "flow_pairs" not in cache:
            depth = int(self.level.max()) + 1 if self.num_nodes else 1
            topo = torch.sort(self.graph * depth + self.level, stable=True).indices
            cache["flow_pairs"] = ops.flow_pairs(self.in_csr, self.node_ptr, topo)
        return cache["flow_pairs"]

    def _undirected(self):
        cache = self.__dict__.setdefault("_row_cache", {})
        if "undirected" not in cache:
            in_deg, out_deg = self.in_csr.indptr.diff(), self.out_csr.indptr.diff()
            indptr = torch.zeros_like(self.in_csr.indptr)
            torch.cumsum(in_deg + out_deg, 0, out=indptr[1:])
            e = torch.arange(self.num_edges, device=indptr.device)
            rin, rout = self.in_rows, self.out_rows
            pos_in = indptr.index_select(0, rin) + e - self.in_csr.indptr.index_select(0, rin)
            pos_out = (indptr.index_select(0, rout) + in_deg.index_select(0, rout) + e
                       - self.out_csr.indptr.index_select(0, rout))
            index = torch.empty(2 * self.num_edges, dtype=torch.int64, device=indptr.device)
            index[pos_in] = self.in_csr.index
            index[pos_out] = self.out_csr.index
            rows = torch.empty_like(index)
            rows[pos_in] = rin
            rows[pos_out] = rout
            # symmetric: the structure is its own transpose, which the ops' backward passes read
            cache["undirected"] = (CSR(indptr, index, transpose=CSR(indptr, index)), rows)
        return cache["undirected"]

    def _rows(self, which: str):
        cache = self.__dict__.setdefault("_row_cache", {})
        if which not in cache:
            indptr = (self.in_csr if which == "in" else self.out_csr).indptr
            cache[which] = torch.repeat_interleave(torch.arange(indptr.numel() - 1, device=indptr.device),
                                                   indptr.diff(), output_size=self.num_edges)
        return cache[which]


def collate(graphs) -> ArchBatch:
    """Collate :class:`ArchGraph` objects into one :class:`ArchBatch`.

    Vectorised over the whole list (one concatenation, one stable sort, then the compiled
    ``csr_transpose`` and ``topo_levels``); a cycle in any graph raises an error naming it.
    """
    graphs = list(graphs)
    sizes = np.fromiter((g.num_nodes for g in graphs), dtype=np.int64, count=len(graphs))
    esizes = np.fromiter((g.num_edges for g in graphs), dtype=np.int64, count=len(graphs))
    node_ptr = np.zeros(len(graphs) + 1, dtype=np.int64)
    np.cumsum(sizes, out=node_ptr[1:])
    n = int(node_ptr[-1])
    op = np.concatenate([g.ops for g in graphs]) if graphs else np.zeros(0, dtype=np.int64)
    if esizes.sum():
        edges = np.concatenate([g.edges for g in graphs], axis=1)
        edges = edges + np.repeat(node_ptr[:-1], esizes)[None, :]
    else:
        edges = np.zeros((2, 0), dtype=np.int64)
    # Sources: the declared ones, else every node without predecessors.
    is_source = np.zeros(n, dtype=bool)
    has_pred = np.zeros(n, dtype=bool)
    has_pred[edges[1]] = True
    declared = np.fromiter((g.sources is not None for g in graphs), dtype=bool, count=len(graphs))
    node_declared = np.repeat(declared, sizes)
    is_source[~node_declared & ~has_pred] = True
    if declared.any():
        idx = np.concatenate([np.asarray(g.sources, dtype=np.int64) + node_ptr[i]
                              for i, g in enumerate(graphs) if g.sources is not None] or [np.zeros(0, np.int64)])
        is_source[idx] = True
    return batch_from_arrays(torch.from_numpy(op), torch.from_numpy(edges), torch.from_numpy(node_ptr),
                             torch.from_numpy(is_source))


def batch_from_arrays(op, edges, node_ptr, is_source=None, x=None) -> ArchBatch:
    """Build an :class:`ArchBatch` from batch-level tensors: ``op [N]``, ``edges [2, E]`` (global
    node ids, row 0 the sources, row 1 the destinations), ``node_ptr [B+1]``, optionally
    ``is_source [N]`` (default: nodes without predecessors) and node features ``x [N, F]``.

    The graphs must be DAGs (their topological levels are computed here; a cycle is an error naming
    the graph). For any graph, :func:`fgp_ext.sparse.csr_from_edge_index` builds the CSR alone."""
    op = torch.as_tensor(op, dtype=torch.int64)
    edges = torch.as_tensor(edges, dtype=torch.int64).reshape(2, -1)
    node_ptr = torch.as_tensor(node_ptr, dtype=torch.int64)
    n = op.numel()
    if edges.numel() and (int(edges.min()) < 0 or int(edges.max()) >= n):
        raise ValueError(f"edge endpoint out of range for a batch of {n} nodes")
    in_csr = csr_from_edge_index(edges, n)
    out_csr = ops.csr_transpose(in_csr, n)
    level = ops.topo_levels(in_csr, node_ptr)
    if is_source is None:
        is_source = in_csr.indptr.diff() == 0
    graph = torch.repeat_interleave(torch.arange(node_ptr.numel() - 1), node_ptr.diff(), output_size=n)
    return ArchBatch(op=op, node_ptr=node_ptr, graph=graph, in_csr=in_csr, out_csr=out_csr, level=level,
                     is_source=torch.as_tensor(is_source, dtype=torch.bool), x=x)


def _require_pyg():
    try:
        import torch_geometric.data as pyg_data
    except ImportError as e:  # optional dependency: only the PyG bridge needs it
        raise ImportError("this needs PyTorch Geometric: pip install torch_geometric") from e
    return pyg_data


def _from_pyg(data, op=None) -> ArchBatch:
    n = int(data.num_nodes)
    edge_index = data.edge_index if getattr(data, "edge_index", None) is not None else torch.zeros(
        2, 0, dtype=torch.int64)
    ptr = getattr(data, "ptr", None)
    graph_of_node = getattr(data, "batch", None)
    if ptr is not None:
        node_ptr = torch.as_tensor(ptr, dtype=torch.int64).cpu()
    elif graph_of_node is not None:
        graph_of_node = torch.as_tensor(graph_of_node, dtype=torch.int64).cpu()
        if graph_of_node.numel() > 1 and bool((graph_of_node.diff() < 0).any()):
            raise ValueError("from_pyg: the batch vector must be sorted (nodes of each graph contiguous)")
        counts = torch.bincount(graph_of_node, minlength=int(graph_of_node.max()) + 1 if n else 0)
        node_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)])
    else:
        node_ptr = torch.tensor([0, n], dtype=torch.int64)
    features = getattr(data, "x", None)
    if op is None:
        op = getattr(data, "op", None)
    elif isinstance(op, str):
        op = getattr(data, op)
    if op is None and features is not None and not torch.is_floating_point(features) and features.dim() <= 2 \
            and (features.dim() == 1 or features.shape[1] == 1):
        op, features = features.reshape(-1), None  # integer x of one column: op ids (PyG's common layout)
    if op is None:
        if features is None:
            raise ValueError("from_pyg: the data has neither op ids (`op`, or an integer `x`) nor node "
                             "features (a float `x`)")
        op = torch.zeros(n, dtype=torch.int64)  # features only: encoders read x (node_features=F)
    op = torch.as_tensor(op).reshape(-1)
    if op.numel() != n or torch.is_floating_point(op):
        raise ValueError(f"from_pyg: op ids must be an integer vector of {n} entries, got "
                         f"{op.dtype} of shape {list(op.shape)}")
    is_source = getattr(data, "is_source", None)
    x = None if features is None else torch.as_tensor(features).cpu()
    if x is not None and x.dim() == 1:
        x = x.unsqueeze(-1)
    return batch_from_arrays(op.cpu(), torch.as_tensor(edge_index).cpu(), node_ptr,
                             None if is_source is None else torch.as_tensor(is_source).cpu(), x)


def _to_pyg(batch: ArchBatch):
    pyg_data = _require_pyg()
    rows = batch.in_rows
    perm = batch.in_csr.perm
    src, dst = batch.in_csr.index, rows
    if perm is not None:  # back to the original edge order, so from_pyg(to_pyg(b)) rebuilds b exactly
        src = torch.empty_like(src).index_copy_(0, perm, src)
        dst = torch.empty_like(dst).index_copy_(0, perm, dst)
    graph_of_edge = batch.graph.index_select(0, dst)
    data_list = []
    for g in range(batch.num_graphs):
        lo, hi = int(batch.node_ptr[g]), int(batch.node_ptr[g + 1])
        mine = (graph_of_edge == g).nonzero().reshape(-1)
        fields = {"edge_index": torch.stack([src.index_select(0, mine), dst.index_select(0, mine)]) - lo,
                  "op": batch.op[lo:hi], "is_source": batch.is_source[lo:hi], "num_nodes": hi - lo}
        if batch.x is not None:
            fields["x"] = batch.x[lo:hi]
        data_list.append(pyg_data.Data(**fields))
    return pyg_data.Batch.from_data_list(data_list)

