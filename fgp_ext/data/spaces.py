"""Search spaces: convert architecture descriptions into op-on-node DAGs (:class:`ArchGraph`).

Every space object has a ``name``, a vocabulary ``vocab`` (list of op names; the op id of a node is
its position in this list), ``num_ops``, the default flow-surrogate parameters ``surrogate_k`` /
``surrogate_std`` (FGP.md §2) and a ``to_graph(record)`` method. Spaces never import torch.

NAS-Bench-201 (:class:`NB201Space`)
    Cell string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (cell edges 0->1 | 0->2 1->2 | 0->3 1->3
    2->3, in that order). Op-on-node graph with 8 nodes: node 0 = input, nodes 1..6 = the six
    edge-ops in string order, node 7 = output. Edge-op (a->b) feeds every edge-op (b->c); the input
    feeds the three edge-ops leaving cell node 0; the three edge-ops entering cell node 3 feed the
    output. ``none`` nodes are kept. All NB201 graphs share the edge set :data:`NB201_EDGES`
    (10 edges), so a batch of cells is fully described by an ``[N, 8]`` op-id matrix
    (:func:`nb201_batch_ops`).

NAS-Bench-101 (:class:`NB101Space`)
    Upper-triangular adjacency matrix (at most 7 nodes; node 0 = input, last node = output) and one
    op per node. Nodes that are not on an input->output path are pruned (the standard NAS-Bench-101
    rule), the remaining nodes keep their relative order.

DARTS / NAS-Bench-301 (:class:`DartsSpace`)
    A genotype ``{"normal": [[op, input], ...8], "reduce": [[op, input], ...8]}``; pairs ``2i`` and
    ``2i+1`` belong to intermediate node ``i`` (0..3); ``input`` 0 and 1 are the cell inputs
    c_{k-2} and c_{k-1}, ``input`` j >= 2 is intermediate node j-2. Op-on-node conversion of one
    cell (15 nodes, 20 edges)::

        local 0        c_{k-2} input node
        local 1        c_{k-1} input node
        local 2..9     one node per (op, input) pair, in genotype order (pair p -> node 2+p)
        local 10..13   one "add" node per intermediate node (the sum of its two pairs)
        local 14       the cell output (concatenation of the four intermediates)

        input j in {0,1}  -> pair node        (pair p reads cell input j)
        add node 10+j-2   -> pair node        (pair p reads intermediate j-2, j >= 2)
        pair node 2+p     -> add node 10+p//2
        add nodes 10..13  -> output node 14   (DARTS concatenates all four intermediates)

    The two cells are combined into ONE graph of 30 nodes: the normal cell is nodes 0..14 and the
    reduce cell nodes 15..29, as two disconnected components (nothing shared, no edge between
    them). ``sources = (0, 1, 15, 16)``: the four cell inputs. Why: FGP.md §2 defines the surrogate
    of a two-input cell as the sum of both inputs' final vectors; with two disconnected components
    the flow computation never mixes the cells, so the surrogate is exactly
    ``surrogate(normal cell) + surrogate(reduce cell)`` and every encoder sees both cells at once
    with a single mean-pooled graph embedding. Inventing a macro-architecture edge between the
    cells (e.g. normal output -> reduce input) would make the reduce cell's flow depend on how the
    cells are stacked, which the genotype does not say.

    Structural tokens are cell-specific so that the encoder and the surrogate can tell the cells
    (and the two cell inputs) apart: swapping the normal and reduce genotypes, or the roles of
    c_{k-2} and c_{k-1}, changes the graph. The vocabulary (16 ids) is::

        0 normal_input0  1 normal_input1  2 normal_add  3 normal_output
        4 reduce_input0  5 reduce_input1  6 reduce_add  7 reduce_output
        8 none  9 max_pool_3x3  10 avg_pool_3x3  11 skip_connect
        12 sep_conv_3x3  13 sep_conv_5x5  14 dil_conv_3x3  15 dil_conv_5x5

    (``none`` never appears in derived DARTS genotypes but is a DARTS primitive, so it is accepted.)

Generic (:class:`GenericSpace`)
    Users give op names and edges (or an adjacency matrix with ``matrix[i][j] != 0`` meaning an
    edge i->j). The vocabulary either grows as new op names are seen (``vocab=None``) or is frozen
    (unknown op -> ``ValueError``). Graphs must be acyclic; a cycle is reported with its nodes.
    The file loaders (:mod:`fgp_ext.data.formats`) give a file read without a fixed vocabulary the
    sorted list of its op names (:meth:`GenericSpace.sorted_vocabulary`), so that op ids do not
    depend on line order; a fixed one (``vocabulary=`` or :meth:`SearchSpace.with_vocabulary`,
    e.g. a checkpoint's) maps every file through the same ids.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from fgp_ext.data.arch import ArchGraph

__all__ = [
    "SearchSpace",
    "NB201Space",
    "NB101Space",
    "DartsSpace",
    "GenericSpace",
    "NB201_VOCAB",
    "NB201_OPS",
    "NB201_EDGES",
    "NB201_CELL_EDGES",
    "NB101_VOCAB",
    "sample_nb101",
    "DARTS_OPS",
    "DARTS_VOCAB",
    "nb201_from_string",
    "nb201_from_ops",
    "nb201_to_string",
    "nb201_batch_ops",
    "nb101_from_matrix",
    "darts_from_genotype",
    "find_cycle",
    "check_acyclic",
    "get_space",
    "space_with_vocabulary",
]

# ----------------------------------------------------------------------------------------------
# helpers


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def find_cycle(num_nodes: int, edges: np.ndarray) -> list[int] | None:
    """Return the nodes of one directed cycle (``[v0, v1, ..., v0]``) or ``None`` if acyclic.

    ``edges`` is ``int [2, E]`` (row 0 sources, row 1 destinations), endpoints in range.
    """
    edges = np.asarray(edges, dtype=np.int64).reshape(2, -1)
    src, dst = edges[0], edges[1]
    indeg = np.bincount(dst, minlength=num_nodes)
    order = np.argsort(src, kind="stable")
    succ_ptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=num_nodes))])
    succ = dst[order]
    # Kahn's algorithm.
    indeg = indeg.copy()
    stack = [v for v in range(num_nodes) if indeg[v] == 0]
    seen = 0
    while stack:
        v = stack.pop()
        seen += 1
        for w in succ[succ_ptr[v]:succ_ptr[v + 1]]:
            indeg[w] -= 1
            if indeg[w] == 0:
                stack.append(int(w))
    if seen == num_nodes:
        return None
    # Every left-over node has a left-over predecessor: walk predecessors until a node repeats.
    left = indeg > 0
    pred_of: dict[int, int] = {}
    for s, d in zip(src.tolist(), dst.tolist()):
        if left[s] and left[d] and d not in pred_of:
            pred_of[d] = s
    v = int(np.flatnonzero(left)[0])
    path: list[int] = []
    pos: dict[int, int] = {}
    while v not in pos:
        pos[v] = len(path)
        path.append(v)
        v = pred_of[v]
    cycle = path[pos[v]:][::-1]  # walked backwards along predecessors: reverse to follow edges
    return cycle + [cycle[0]]


def check_acyclic(num_nodes: int, edges: np.ndarray, op_names: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` naming the nodes of a cycle if the graph is not a DAG."""
    cyc = find_cycle(num_nodes, edges)
    if cyc is None:
        return
    if op_names is not None:
        desc = " -> ".join(f"{v} ({op_names[v]})" for v in cyc)
    else:
        desc = " -> ".join(str(v) for v in cyc)
    raise ValueError(f"the architecture graph has a cycle: {desc}")


def _as_matrix(matrix, what: str = "matrix") -> np.ndarray:
    """Validate a square 2-D adjacency matrix given as nested lists or an array."""
    if isinstance(matrix, np.ndarray):
        m = matrix
    else:
        if not isinstance(matrix, Sequence) or isinstance(matrix, (str, bytes)):
            raise ValueError(f"{what} must be a list of rows, got {type(matrix).__name__}")
        rows = list(matrix)
        for i, row in enumerate(rows):
            if not isinstance(row, (Sequence, np.ndarray)) or isinstance(row, (str, bytes)):
                raise ValueError(f"{what} row {i} is not a list")
        lengths = {len(r) for r in rows}
        if len(lengths) > 1:
            raise ValueError(
                f"{what} is ragged: row lengths {[len(r) for r in rows]} are not all equal"
            )
        try:
            m = np.array(rows, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what} has non-numeric entries") from e
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{what} must be square, got shape {list(m.shape)}")
    if m.dtype == object or not np.issubdtype(m.dtype, np.number) and m.dtype != bool:
        raise ValueError(f"{what} has non-numeric entries")
    if np.issubdtype(m.dtype, np.floating) and not np.isfinite(m).all():
        raise ValueError(f"{what} has non-finite entries")
    return m


def _op_list(ops, what: str = "ops") -> list[str]:
    if isinstance(ops, (str, bytes)) or not isinstance(ops, (Sequence, np.ndarray)):
        raise ValueError(f"{what} must be a list of op names, got {type(ops).__name__}")
    out = list(ops)
    for i, o in enumerate(out):
        if not isinstance(o, str):
            raise ValueError(f"{what}[{i}] must be an op name (str), got {o!r}")
    return out


# ----------------------------------------------------------------------------------------------
# base class


class SearchSpace:
    """Base class of a search space: a vocabulary plus a conversion ``to_graph(record)``.

    Attributes: ``name``, ``vocab`` (op names, id = position), ``num_ops``, ``surrogate_k``,
    ``surrogate_std``, ``surrogate_alpha``, ``structure_keys`` (record keys that describe the
    structure; a loader treats every other numeric key of a record as a target).
    """

    name: str = "space"
    surrogate_k: int = 8
    surrogate_std: float = 0.1
    surrogate_alpha: float = 0.5
    structure_keys: frozenset[str] = frozenset()

    def __init__(self, vocab: Sequence[str]):
        self._vocab = list(vocab)
        self._index = {op: i for i, op in enumerate(self._vocab)}
        if len(self._index) != len(self._vocab):
            raise ValueError(f"{self.name}: vocabulary has duplicate op names")

    @property
    def vocab(self) -> list[str]:
        """The op names; the op id of a node is the index of its name in this list (a copy)."""
        return list(self._vocab)

    @property
    def num_ops(self) -> int:
        """Vocabulary size (the one-hot feature dimension ``F``)."""
        return len(self._vocab)

    @property
    def surrogate_params(self) -> dict:
        """Default flow-surrogate parameters for this space: ``{"k", "std", "alpha"}``."""
        return {"k": self.surrogate_k, "std": self.surrogate_std, "alpha": self.surrogate_alpha}

    def op_id(self, op: str) -> int:
        """Vocabulary id of ``op``; ``ValueError`` for an unknown op."""
        try:
            return self._index[op]
        except (KeyError, TypeError):
            raise ValueError(
                f"unknown op {op!r} for search space {self.name!r}; known ops: {self._vocab}"
            ) from None

    def op_ids(self, ops: Iterable[str]) -> np.ndarray:
        """Vocabulary ids of a list of op names (``int64``)."""
        return np.array([self.op_id(o) for o in ops], dtype=np.int64)

    def op_names(self, ids: Iterable[int]) -> list[str]:
        """Op names of a list of ids."""
        return [self._vocab[int(i)] for i in ids]

    def with_vocabulary(self, vocabulary: Sequence[str]) -> "SearchSpace":
        """This space reading op names through ``vocabulary`` (e.g. the one a checkpoint was
        trained with). The fixed spaces (NB201, NB101, DARTS) accept only their own vocabulary
        (``ValueError`` naming the difference otherwise) and return themselves."""
        vocabulary = _op_list(vocabulary, "vocabulary")
        if vocabulary != self._vocab:
            missing = [o for o in vocabulary if o not in self._index]
            extra = [o for o in self._vocab if o not in set(vocabulary)]
            detail = (f"ops not in {self.name}: {missing}" if missing else
                      f"{self.name} ops it lacks: {extra}" if extra else "another order")
            raise ValueError(f"the op vocabulary {vocabulary} is not the fixed vocabulary of search "
                             f"space {self.name!r} ({detail})")
        return self

    def to_graph(self, record, *, targets: Mapping[str, float] | None = None,
                 name: str | None = None) -> ArchGraph:  # pragma: no cover - abstract
        """Convert one architecture record into an :class:`ArchGraph`."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, num_ops={self.num_ops})"


# ----------------------------------------------------------------------------------------------
# NAS-Bench-201

NB201_VOCAB: list[str] = [
    "input", "output", "none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3",
]
#: The five candidate operations of a NB201 cell edge (vocabulary ids 2..6).
NB201_OPS: list[str] = NB201_VOCAB[2:]
#: Cell edges (from, to) in string order.
NB201_CELL_EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


def _nb201_edges() -> np.ndarray:
    edges = []
    for i, (a, b) in enumerate(NB201_CELL_EDGES):
        if a == 0:
            edges.append((0, i + 1))  # input feeds the edge-ops leaving cell node 0
        for j, (c, _d) in enumerate(NB201_CELL_EDGES):
            if c == b:
                edges.append((i + 1, j + 1))  # (a->b) feeds (b->d)
        if b == 3:
            edges.append((i + 1, 7))  # edge-ops entering cell node 3 feed the output
    return _readonly(np.array(sorted(edges), dtype=np.int64).T.copy())


#: Edge set ``int64 [2, 10]`` shared by every NB201 op-on-node graph (read-only).
NB201_EDGES: np.ndarray = _nb201_edges()
_NB201_OP_INDEX = {op: i + 2 for i, op in enumerate(NB201_OPS)}


def _nb201_parse(arch_str) -> list[int]:
    """Parse and validate an NB201 cell string; return the six edge-op ids (vocabulary ids)."""
    if not isinstance(arch_str, str):
        raise ValueError(f"NB201 cell must be a string, got {type(arch_str).__name__}")
    s = arch_str.strip()
    groups = s.split("+")
    if len(groups) != 3:
        raise ValueError(
            f"malformed NB201 cell string {arch_str!r}: expected 3 '+'-separated node groups, "
            f"got {len(groups)}"
        )
    ids: list[int] = []
    for node, group in enumerate(groups, start=1):
        if len(group) < 2 or group[0] != "|" or group[-1] != "|":
            raise ValueError(
                f"malformed NB201 cell string {arch_str!r}: node {node} group {group!r} must be "
                f"enclosed in '|'"
            )
        tokens = group[1:-1].split("|")
        if len(tokens) != node:
            raise ValueError(
                f"malformed NB201 cell string {arch_str!r}: node {node} must have {node} "
                f"incoming edge(s), got {len(tokens)}"
            )
        for src, tok in enumerate(tokens):
            op, sep, frm = tok.partition("~")
            if not sep:
                raise ValueError(
                    f"malformed NB201 cell string {arch_str!r}: token {tok!r} is not 'op~input'"
                )
            if frm != str(src):
                raise ValueError(
                    f"malformed NB201 cell string {arch_str!r}: token {tok!r} of node {node} "
                    f"must come from node {src}"
                )
            try:
                ids.append(_NB201_OP_INDEX[op])
            except KeyError:
                raise ValueError(
                    f"malformed NB201 cell string {arch_str!r}: unknown op {op!r} "
                    f"(known: {NB201_OPS})"
                ) from None
    return ids


def nb201_from_ops(op_ids, *, targets: Mapping[str, float] | None = None,
                   name: str | None = None) -> ArchGraph:
    """Build the 8-node NB201 graph from the six edge-op vocabulary ids (2..6), or from a full
    ``[8]`` op-id row (input, six edge-ops, output)."""
    ids = np.asarray(op_ids, dtype=np.int64).reshape(-1)
    if ids.shape[0] == 6:
        ids = np.concatenate([[0], ids, [1]])
    if ids.shape[0] != 8:
        raise ValueError(f"NB201 needs 6 edge-op ids (or 8 node ids), got {ids.shape[0]}")
    if ids[0] != 0 or ids[7] != 1 or ((ids[1:7] < 2) | (ids[1:7] > 6)).any():
        raise ValueError(f"invalid NB201 op ids {ids.tolist()}: edge-op ids must be in 2..6")
    return ArchGraph(ops=ids, edges=NB201_EDGES, sources=(0,),
                     targets=dict(targets) if targets else {}, name=name)


def nb201_from_string(arch_str: str, *, targets: Mapping[str, float] | None = None,
                      name: str | None = None) -> ArchGraph:
    """Convert an NB201 cell string into its 8-node op-on-node :class:`ArchGraph`.

    Node 0 = input, nodes 1..6 = the edge-ops in string order, node 7 = output; edges
    :data:`NB201_EDGES`; ``sources=(0,)``. Raises ``ValueError`` naming the problem for a
    malformed string (wrong number of node groups or edges, bad ``op~input`` token, unknown op).
    """
    return nb201_from_ops(_nb201_parse(arch_str), targets=targets, name=name)


def nb201_to_string(op_ids) -> str:
    """Inverse of :func:`nb201_from_string` for six edge-op ids (or an 8-node op-id row)."""
    ids = np.asarray(op_ids, dtype=np.int64).reshape(-1)
    if ids.shape[0] == 8:
        ids = ids[1:7]
    if ids.shape[0] != 6 or ((ids < 2) | (ids > 6)).any():
        raise ValueError(f"expected 6 NB201 edge-op ids in 2..6, got {ids.tolist()}")
    names = [NB201_VOCAB[i] for i in ids]
    return "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*names)


def nb201_batch_ops(arch_strs) -> np.ndarray:
    """Op ids ``int64 [N, 8]`` (input, six edge-ops, output) of many NB201 cell strings.

    Every NB201 graph has the edges :data:`NB201_EDGES`, so this matrix describes the whole batch.
    Only the distinct strings are parsed (there are at most 15,625), then the result is gathered,
    so converting the full benchmark costs a few milliseconds. Malformed strings raise
    ``ValueError`` (with the position of the first bad string).
    """
    arr = np.asarray(arch_strs, dtype=object).reshape(-1)
    out = np.empty((arr.shape[0], 8), dtype=np.int64)
    out[:, 0] = 0
    out[:, 7] = 1
    if arr.shape[0] == 0:
        return out
    for i, s in enumerate(arr):  # cheap type check; np.unique needs comparable items
        if not isinstance(s, str):
            raise ValueError(f"NB201 cell at position {i} is not a string: {s!r}")
    uniq, inverse = np.unique(arr.astype(str), return_inverse=True)
    table = np.empty((uniq.shape[0], 6), dtype=np.int64)
    for u, s in enumerate(uniq):
        try:
            table[u] = _nb201_parse(str(s))
        except ValueError as e:
            pos = int(np.flatnonzero(inverse.reshape(-1) == u)[0])
            raise ValueError(f"NB201 cell at position {pos}: {e}") from None
    out[:, 1:7] = table[inverse.reshape(-1)]
    return out


class NB201Space(SearchSpace):
    """NAS-Bench-201: 8-node op-on-node cells, vocabulary :data:`NB201_VOCAB` (7 ops).

    ``to_graph`` accepts a cell string or a mapping with an ``"arch_str"`` key.
    """

    name = "nb201"
    surrogate_k = 7
    surrogate_std = 0.1
    structure_keys = frozenset({"arch_str"})

    def __init__(self):
        super().__init__(NB201_VOCAB)

    def to_graph(self, record, *, targets=None, name=None) -> ArchGraph:
        if isinstance(record, Mapping):
            if "arch_str" not in record:
                raise ValueError("NB201 record needs an 'arch_str' field")
            record = record["arch_str"]
        return nb201_from_string(record, targets=targets, name=name)


# ----------------------------------------------------------------------------------------------
# NAS-Bench-101

NB101_VOCAB: list[str] = ["input", "output", "conv1x1-bn-relu", "conv3x3-bn-relu", "maxpool3x3"]
NB101_MAX_NODES = 7


def _reach(adj: np.ndarray, start: int) -> np.ndarray:
    """Boolean mask of nodes reachable from ``start`` following ``adj`` (bool [n, n])."""
    seen = np.zeros(adj.shape[0], dtype=bool)
    seen[start] = True
    frontier = seen.copy()
    while frontier.any():
        nxt = adj[frontier].any(axis=0) & ~seen
        seen |= nxt
        frontier = nxt
    return seen


def nb101_from_matrix(matrix, ops: Sequence[str], *, prune: bool = True,
                      targets: Mapping[str, float] | None = None,
                      name: str | None = None) -> ArchGraph:
    """Convert a NAS-Bench-101 cell (adjacency ``matrix`` + ``ops``) into a pruned :class:`ArchGraph`.

    ``matrix`` is square, strictly upper-triangular (``matrix[i][j] != 0`` = edge i->j, i < j),
    at most 7 nodes; ``ops[0] == "input"``, ``ops[-1] == "output"``, other ops from
    :data:`NB101_VOCAB`. Nodes not on an input->output path are removed (kept nodes keep their
    order); ``prune=False`` keeps them (the matrix is converted as is). ``sources=(0,)``. ``ValueError`` if the matrix is ragged, not square, not
    upper-triangular, too large, if ``ops`` does not match, an op is unknown, or the output is not
    reachable from the input.
    """
    m = _as_matrix(matrix, "NB101 matrix")
    ops = _op_list(ops, "NB101 ops")
    n = m.shape[0]
    if n < 2:
        raise ValueError(f"NB101 cell needs at least 2 nodes (input, output), got {n}")
    if n > NB101_MAX_NODES:
        raise ValueError(
            f"NB101 cell has {n} nodes, at most {NB101_MAX_NODES} allowed "
            f"(use GenericSpace for larger graphs)"
        )
    if len(ops) != n:
        raise ValueError(f"NB101 ops has {len(ops)} entries for a {n}x{n} matrix")
    adj = m != 0
    low = np.argwhere(np.tril(adj))
    if low.size:
        i, j = low[0]
        raise ValueError(
            f"NB101 matrix must be strictly upper-triangular: entry [{i}][{j}] is nonzero"
        )
    ids = []
    for i, o in enumerate(ops):
        if o not in NB101_VOCAB:
            raise ValueError(f"unknown NB101 op {o!r} at node {i}; known ops: {NB101_VOCAB}")
        ids.append(NB101_VOCAB.index(o))
    if ops[0] != "input" or ops[-1] != "output":
        raise ValueError(
            f"NB101 ops must start with 'input' and end with 'output', got {ops[0]!r} ... "
            f"{ops[-1]!r}"
        )
    for i in range(1, n - 1):
        if ops[i] in ("input", "output"):
            raise ValueError(f"NB101 op {ops[i]!r} is only allowed at the first/last node (node {i})")
    fwd = _reach(adj, 0)
    if not fwd[n - 1]:
        raise ValueError("NB101 cell is invalid: the output node is not reachable from the input")
    if prune:
        keep = np.flatnonzero(fwd & _reach(adj.T, n - 1))
    else:
        keep = np.arange(n)
    sub = adj[np.ix_(keep, keep)]
    src, dst = np.nonzero(sub)
    return ArchGraph(ops=np.asarray(ids, dtype=np.int64)[keep], edges=np.stack([src, dst]),
                     sources=(0,), targets=dict(targets) if targets else {}, name=name)


NB101_MAX_EDGES = 9


def sample_nb101(n: int, seed: int = 0, *, edge_prob: float = 0.35, max_tries: int | None = None):
    """``n`` distinct random NAS-Bench-101 cells (structures only, no labels) as a :class:`Dataset`,
    for pre-training on more unlabelled cells than are labelled.

    Each draw: 7 nodes, every upper-triangular edge with probability ``edge_prob``, the 5 inner nodes'
    ops uniform over conv1x1 / conv3x3 / maxpool; kept when it is a valid NAS-Bench-101 spec (the
    output reachable from the input, at most 9 edges after pruning) and its pruned cell is new (exact duplicates of the
    pruned matrix and ops are dropped; isomorphic cells are not merged). Deterministic in ``seed``.
    """
    from fgp_ext.data.dataset import Dataset

    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 < float(edge_prob) <= 1.0:
        raise ValueError(f"edge_prob must be in (0, 1], got {edge_prob}")
    rng = np.random.default_rng(int(seed))
    v = NB101_MAX_NODES
    iu = np.triu_indices(v, 1)
    inner = NB101_VOCAB[2:]
    seen: set[bytes] = set()
    graphs: list[ArchGraph] = []
    tries, limit = 0, (max_tries if max_tries is not None else 200 * max(n, 1))
    while len(graphs) < n:
        if tries >= limit:
            raise RuntimeError(f"sample_nb101: only {len(graphs)} distinct cells after {tries} draws "
                               f"(raise edge_prob or max_tries)")
        tries += 1
        adj = np.zeros((v, v), dtype=np.int64)
        adj[iu] = rng.random(iu[0].size) < edge_prob
        if not _reach(adj != 0, 0)[v - 1]:
            continue
        ops = ["input", *(inner[k] for k in rng.integers(0, len(inner), v - 2)), "output"]
        g = nb101_from_matrix(adj, ops)
        if g.num_edges > NB101_MAX_EDGES:  # counted after pruning, as NAS-Bench-101's ModelSpec does
            continue
        key = g.ops.tobytes() + b"|" + np.ascontiguousarray(g.edges).tobytes()
        if key in seen:
            continue
        seen.add(key)
        graphs.append(g)
    return Dataset(graphs, NB101Space())


class NB101Space(SearchSpace):
    """NAS-Bench-101: pruned adjacency-matrix cells, vocabulary :data:`NB101_VOCAB` (5 ops).

    ``to_graph`` accepts a mapping with ``"matrix"`` and ``"ops"`` or a ``(matrix, ops)`` pair.
    ``NB101Space(prune=False)`` keeps nodes that are not on an input->output path.
    """

    name = "nb101"
    surrogate_k = 4
    surrogate_std = 1.0
    structure_keys = frozenset({"matrix", "ops"})

    def __init__(self, prune: bool = True):
        super().__init__(NB101_VOCAB)
        #: drop nodes that are not on an input->output path (the NAS-Bench-101 rule)
        self.prune = bool(prune)

    def to_graph(self, record, *, targets=None, name=None) -> ArchGraph:
        if isinstance(record, Mapping):
            missing = [k for k in ("matrix", "ops") if k not in record]
            if missing:
                raise ValueError(f"NB101 record is missing field(s) {missing}")
            matrix, ops = record["matrix"], record["ops"]
        elif isinstance(record, (tuple, list)) and len(record) == 2:
            matrix, ops = record
        else:
            raise ValueError("NB101 record must be {'matrix': ..., 'ops': ...} or (matrix, ops)")
        return nb101_from_matrix(matrix, ops, prune=self.prune, targets=targets, name=name)


# ----------------------------------------------------------------------------------------------
# DARTS / NAS-Bench-301

DARTS_OPS: list[str] = [
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
]
_DARTS_STRUCT = ["input0", "input1", "add", "output"]
DARTS_VOCAB: list[str] = (
    [f"normal_{t}" for t in _DARTS_STRUCT] + [f"reduce_{t}" for t in _DARTS_STRUCT] + DARTS_OPS
)
_DARTS_OP_INDEX = {op: i for i, op in enumerate(DARTS_VOCAB) if i >= 8}
DARTS_CELL_NODES = 15
DARTS_STEPS = 4


def _darts_cell(pairs, cell: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Op ids and local edges of one DARTS cell (layout in the module docstring)."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, (Sequence, np.ndarray)):
        raise ValueError(f"DARTS {cell} cell must be a list of [op, input] pairs")
    pairs = list(pairs)
    if len(pairs) != 2 * DARTS_STEPS:
        raise ValueError(f"DARTS {cell} cell must have {2 * DARTS_STEPS} [op, input] pairs, "
                         f"got {len(pairs)}")
    base = 0 if cell == "normal" else 4
    ops = [base + 0, base + 1] + [0] * 8 + [base + 2] * 4 + [base + 3]
    edges: list[tuple[int, int]] = []
    for p, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (Sequence, np.ndarray)) \
                or len(pair) != 2:
            raise ValueError(f"DARTS {cell} cell pair {p} must be [op, input], got {pair!r}")
        op, inp = pair
        if not isinstance(op, str) or op not in _DARTS_OP_INDEX:
            raise ValueError(f"unknown DARTS op {op!r} in {cell} cell pair {p}; "
                             f"known ops: {DARTS_OPS}")
        if isinstance(inp, bool) or not isinstance(inp, (int, np.integer)):
            raise ValueError(f"DARTS {cell} cell pair {p}: input must be an integer, got {inp!r}")
        step = p // 2
        if not 0 <= inp <= step + 1:
            raise ValueError(
                f"DARTS {cell} cell pair {p} (intermediate node {step}): input {inp} out of "
                f"range 0..{step + 1}"
            )
        ops[2 + p] = _DARTS_OP_INDEX[op]
        edges.append((int(inp) if inp < 2 else 10 + int(inp) - 2, 2 + p))
        edges.append((2 + p, 10 + step))
    edges.extend((10 + s, 14) for s in range(DARTS_STEPS))
    return ops, edges


def _genotype_cells(genotype) -> tuple:
    if isinstance(genotype, Mapping):
        get = genotype.get
        has = genotype.__contains__
    else:  # e.g. a DARTS ``Genotype`` namedtuple
        def get(k, default=None):
            return getattr(genotype, k, default)

        def has(k):
            return hasattr(genotype, k)
    missing = [k for k in ("normal", "reduce") if not has(k)]
    if missing:
        raise ValueError(f"DARTS genotype is missing cell(s) {missing}")
    for key in ("normal_concat", "reduce_concat"):
        concat = get(key, None)
        if concat is not None and list(concat) != [2, 3, 4, 5]:
            raise ValueError(f"DARTS genotype {key}={list(concat)} is not supported "
                             f"(only the standard [2, 3, 4, 5])")
    return get("normal"), get("reduce")


def darts_from_genotype(genotype, *, targets: Mapping[str, float] | None = None,
                        name: str | None = None) -> ArchGraph:
    """Convert a DARTS genotype into one 30-node :class:`ArchGraph` (normal cell + reduce cell).

    ``genotype`` is a mapping (or object) with ``normal`` and ``reduce`` lists of 8 ``[op, input]``
    pairs. See the module docstring for the node layout; ``sources=(0, 1, 15, 16)``.
    """
    normal, reduce = _genotype_cells(genotype)
    ops_n, e_n = _darts_cell(normal, "normal")
    ops_r, e_r = _darts_cell(reduce, "reduce")
    off = DARTS_CELL_NODES
    edges = e_n + [(a + off, b + off) for a, b in e_r]
    return ArchGraph(ops=np.asarray(ops_n + ops_r, dtype=np.int64),
                     edges=np.asarray(edges, dtype=np.int64).T,
                     sources=(0, 1, off, off + 1),
                     targets=dict(targets) if targets else {}, name=name)


class DartsSpace(SearchSpace):
    """DARTS / NAS-Bench-301: both cells of a genotype as one 30-node graph, vocabulary
    :data:`DARTS_VOCAB` (16 ids). ``to_graph`` accepts a genotype or a mapping with a
    ``"genotype"`` key."""

    name = "nb301"
    surrogate_k = 12
    surrogate_std = 0.1
    structure_keys = frozenset({"genotype"})

    def __init__(self):
        super().__init__(DARTS_VOCAB)

    def to_graph(self, record, *, targets=None, name=None) -> ArchGraph:
        if isinstance(record, Mapping) and "genotype" in record:
            record = record["genotype"]
        return darts_from_genotype(record, targets=targets, name=name)


# ----------------------------------------------------------------------------------------------
# generic


class GenericSpace(SearchSpace):
    """Any search space: op names + edges or adjacency matrix.

    ``GenericSpace(vocab=None)`` grows the vocabulary as new op names are seen (ids in order of
    first appearance); ``GenericSpace(vocab=[...])`` freezes it (unknown op -> ``ValueError``).
    Default surrogate parameters: ``k=8``, ``std=0.1`` (override with the keyword arguments).
    ``sources`` of the produced graphs: as given, else ``None`` (every node without predecessors).
    """

    structure_keys = frozenset({"ops", "edges", "matrix", "sources"})

    def __init__(self, vocab: Sequence[str] | None = None, *, name: str = "generic",
                 k: int = 8, std: float = 0.1, alpha: float = 0.5):
        super().__init__([] if vocab is None else _op_list(vocab, "vocab"))
        self.frozen = vocab is not None
        self.name = name
        self.surrogate_k = int(k)
        self.surrogate_std = float(std)
        self.surrogate_alpha = float(alpha)

    def op_id(self, op: str) -> int:
        i = self._index.get(op) if isinstance(op, str) else None
        if i is not None:
            return i
        if self.frozen or not isinstance(op, str):
            return super().op_id(op)
        i = len(self._vocab)
        self._vocab.append(op)
        self._index[op] = i
        return i

    def with_vocabulary(self, vocabulary: Sequence[str]) -> "GenericSpace":
        """A new frozen :class:`GenericSpace` of the same name and surrogate parameters whose op
        ids are positions in ``vocabulary`` (an op outside it is a ``ValueError`` naming it)."""
        return GenericSpace(vocabulary, name=self.name, k=self.surrogate_k, std=self.surrogate_std,
                            alpha=self.surrogate_alpha)

    def sorted_vocabulary(self) -> tuple["GenericSpace", np.ndarray]:
        """``(space, remap)``: a copy whose vocabulary is this one's op names in sorted order (and
        as frozen as this one), and ``remap[old_id] = new_id``. Loaders use it so that the op ids
        of a file do not depend on the order of its lines."""
        order = sorted(self._vocab)
        sp = GenericSpace(order, name=self.name, k=self.surrogate_k, std=self.surrogate_std,
                          alpha=self.surrogate_alpha)
        sp.frozen = self.frozen
        new_index = {op: i for i, op in enumerate(order)}
        remap = np.array([new_index[op] for op in self._vocab], dtype=np.int64)
        return sp, remap

    def freeze(self) -> "GenericSpace":
        """Stop growing the vocabulary (unknown ops become errors). Returns ``self``."""
        self.frozen = True
        return self

    def _ids(self, ops: list[str]) -> np.ndarray:
        if self.frozen:
            unknown = [(i, o) for i, o in enumerate(ops) if o not in self._index]
            if unknown:
                i, o = unknown[0]
                raise ValueError(f"unknown op {o!r} at node {i}; known ops: {self._vocab}")
        return self.op_ids(ops)

    def from_edges(self, ops: Sequence[str], edges, *, sources: Sequence[int] | None = None,
                   targets: Mapping[str, float] | None = None, name: str | None = None
                   ) -> ArchGraph:
        """Build a graph from op names and a list of ``[src, dst]`` edges (or an ``[E, 2]`` array).

        ``ValueError`` for an empty op list, malformed or out-of-range edges, self-loops,
        duplicate edges, cycles (naming the cycle's nodes) and unknown ops (frozen vocabulary).
        """
        ops = _op_list(ops)
        n = len(ops)
        if n == 0:
            raise ValueError("an architecture needs at least one node (ops is empty)")
        if isinstance(edges, np.ndarray):
            e = edges
        else:
            if isinstance(edges, (str, bytes)) or not isinstance(edges, Iterable):
                raise ValueError("edges must be a list of [src, dst] pairs")
            e = list(edges)
            for i, pair in enumerate(e):
                if isinstance(pair, (str, bytes)) or not isinstance(pair, (Sequence, np.ndarray)) \
                        or len(pair) != 2:
                    raise ValueError(f"edge {i} must be a [src, dst] pair, got {pair!r}")
                for v in pair:
                    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                        raise ValueError(f"edge {i} endpoints must be integers, got {pair!r}")
            e = np.asarray(e, dtype=np.int64).reshape(-1, 2)
        if e.size == 0:
            e = np.zeros((0, 2), dtype=np.int64)
        if e.ndim != 2 or e.shape[1] != 2:
            raise ValueError(f"edges must have shape [E, 2], got {list(e.shape)}")
        if not np.issubdtype(e.dtype, np.integer):
            raise ValueError("edge endpoints must be integers")
        e = e.astype(np.int64)
        bad = np.flatnonzero((e < 0).any(axis=1) | (e >= n).any(axis=1))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"edge {i} {e[i].tolist()} is out of range for {n} nodes")
        loops = np.flatnonzero(e[:, 0] == e[:, 1])
        if loops.size:
            v = int(e[loops[0], 0])
            raise ValueError(f"the architecture graph has a cycle: self-loop on node {v} "
                             f"({ops[v]})")
        if e.shape[0] > 1:
            key = e[:, 0] * n + e[:, 1]
            u, cnt = np.unique(key, return_counts=True)
            if (cnt > 1).any():
                d = int(u[np.argmax(cnt > 1)])
                raise ValueError(f"duplicate edge [{d // n}, {d % n}]")
        check_acyclic(n, e.T, ops)
        ids = self._ids(ops)
        return ArchGraph(ops=ids, edges=e.T.copy(),
                         sources=None if sources is None else tuple(sources),
                         targets=dict(targets) if targets else {}, name=name)

    def from_matrix(self, ops: Sequence[str], matrix, *, sources: Sequence[int] | None = None,
                    targets: Mapping[str, float] | None = None, name: str | None = None
                    ) -> ArchGraph:
        """Build a graph from op names and an adjacency matrix (``matrix[i][j] != 0``: edge i->j).

        The matrix need not be triangular, but the graph must be acyclic. ``ValueError`` for
        ragged/non-square matrices, size mismatch with ``ops``, cycles and unknown ops.
        """
        ops = _op_list(ops)
        m = _as_matrix(matrix)
        if m.shape[0] != len(ops):
            raise ValueError(f"matrix is {m.shape[0]}x{m.shape[1]} but there are {len(ops)} ops")
        src, dst = np.nonzero(m)
        return self.from_edges(ops, np.stack([src, dst], axis=1), sources=sources,
                               targets=targets, name=name)

    def to_graph(self, record, *, targets=None, name=None) -> ArchGraph:
        """``record``: mapping with ``"ops"`` and exactly one of ``"edges"`` / ``"matrix"``
        (optional ``"sources"``)."""
        if not isinstance(record, Mapping):
            raise ValueError("generic record must be a mapping with 'ops' and 'edges' or 'matrix'")
        if "ops" not in record:
            raise ValueError("record is missing the 'ops' field")
        has_e, has_m = "edges" in record, "matrix" in record
        if has_e == has_m:
            raise ValueError("record needs exactly one of 'edges' or 'matrix'"
                             + (" (got both)" if has_e else ""))
        sources = record.get("sources")
        if sources is not None:
            if isinstance(sources, (str, bytes)) or not isinstance(sources, Sequence) or any(
                    isinstance(s, bool) or not isinstance(s, int) for s in sources):
                raise ValueError("'sources' must be a list of node indices")
            n = len(record["ops"]) if isinstance(record["ops"], Sequence) else 0
            bad = [s for s in sources if not 0 <= s < n]
            if bad:
                raise ValueError(f"source node(s) {bad} out of range for {n} nodes")
        if has_e:
            return self.from_edges(record["ops"], record["edges"], sources=sources,
                                   targets=targets, name=name)
        return self.from_matrix(record["ops"], record["matrix"], sources=sources,
                                targets=targets, name=name)


# ----------------------------------------------------------------------------------------------
# registry

_ALIASES = {
    "nb201": "nb201", "nasbench201": "nb201", "nas-bench-201": "nb201", "nats-tss": "nb201",
    "nb101": "nb101", "nasbench101": "nb101", "nas-bench-101": "nb101",
    "nb301": "nb301", "nasbench301": "nb301", "nas-bench-301": "nb301", "darts": "nb301",
    "generic": "generic",
}


def space_with_vocabulary(name: str, vocabulary: Sequence[str]) -> SearchSpace:
    """The space called ``name`` reading op names through ``vocabulary`` (what a checkpoint
    records): a known space (``nb201``...) checked against its fixed vocabulary, any other name a
    frozen :class:`GenericSpace` of that name. ``ValueError`` when the two disagree."""
    try:
        base = get_space(name)
    except ValueError:
        base = GenericSpace(name=str(name))
    if isinstance(base, GenericSpace):
        base.name = str(name)
    return base.with_vocabulary(vocabulary)


def get_space(space) -> SearchSpace:
    """Return a search space from a name (``"nb101"``, ``"nb201"``, ``"nb301"``/``"darts"``,
    ``"generic"``: a new growing-vocabulary space) or pass a :class:`SearchSpace` through."""
    if isinstance(space, SearchSpace):
        return space
    if not isinstance(space, str):
        raise ValueError(f"space must be a name or a SearchSpace, got {type(space).__name__}")
    key = _ALIASES.get(space.strip().lower().replace("_", "-"))
    if key is None:
        key = _ALIASES.get(space.strip().lower().replace("_", "").replace("-", ""))
    if key is None:
        raise ValueError(f"unknown search space {space!r}; known: nb101, nb201, nb301 (darts), "
                         f"generic")
    return {"nb201": NB201Space, "nb101": NB101Space, "nb301": DartsSpace,
            "generic": GenericSpace}[key]()
