"""A FlowerFormer-style flow-aware graph transformer on the level schedule.

Per layer (FGP.md §3, after FlowerFormer, CVPR 2024):

1. **Flow encode**: a forward pass over topological generations, each node aggregating its
   predecessors' states (already updated in this pass) by attention
   (``logit = a_dst . h_v + a_src . h_u``, softmax over the predecessors) and combining with a
   GRU cell whose input is the node's state and whose hidden state is the message
   (``h_v <- GRU(h_v, message)``; first-generation nodes get a zero message); then the same
   backwards on the reversed graph (successors, generations counted from the sinks) with its own
   weights. Residual + LayerNorm.
2. **Flow-aware global attention**: multi-head attention restricted to flow-related pairs
   (``u`` reaches ``v``, ``v`` reaches ``u``, or ``u = v``). Residual + LayerNorm.
3. **Feed-forward** block. Residual + LayerNorm.

Graph embedding: mean of the node states (the shared :class:`Encoder` interface).

Differences from the authors' implementation (read for understanding; none of its code is used):
their backward pass revisits the forward generations in reverse, updating a node once per
generation of its successors, so its final state only aggregates the successors of the *earliest*
such generation; and edges carry a learned edge-type embedding. Here the reversed pass uses, by
default, the generations of the reversed graph (each node updated once, from all its successors);
``reverse_successors="earliest"`` gives theirs (the successor CSR pruned to the earliest forward
generation, :meth:`fgp_ext.graph.ArchBatch.earliest_successor_csr`, then the same kernels). Edges
carry nothing (the op-on-node spaces have a single edge type, so the embedding would be a learned
constant). On NAS-Bench-201 the two reversed passes are the same function: no node of the 15,625
cells has successors in two generations (on the NB101 / NB301 data files, 367 of 500 and 725 of
725 graphs have such nodes). The GRU wiring (state as
input, message as hidden state, sources through the cell) follows theirs: our earlier wiring
(message as input, sources kept) scored 0.016 lower supervised on NB201 (results/flow_encoder.md).
The model is "FlowerFormer-style", not a reproduction.

The layer itself defaults to a plain transformer stack (flow block, then attention on its output,
layer norm). The original's layer is GraphGPS-shaped, and four options select it: ``layout=
"parallel"`` (flow block and attention both read the layer input; their normed residuals are
summed), ``norm="batch"``, ``flow_relu=True`` (a ReLU on the flow passes' output) and
``attention_dropout`` (0.5 on NB201, with dropout 0 elsewhere). ``results/flow_encoder.md``
compares the two on NB201.

The passes run on :mod:`fgp_ext.levels` (one step per generation on contiguous slices, recomputed
in the backward) and the attention on the fused :func:`fgp_ext.ops.gather_attention`, so the cost
is that of a plain GNN over the same edges, not ``depth x`` the batch. Edges carry no features in
the op-on-node spaces, so the attention scores use the two endpoint states only.
:class:`MaskedFlowBackend` computes the same model the way the original code
does (per-generation boolean masks over all edges, dense padded attention) and is the peer of the
tests and benchmarks.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fgp_ext import ops, reference
from fgp_ext.encoders.base import Dropout, Encoder
from fgp_ext.graph import check_reverse_successors
from fgp_ext.levels import Level, LevelPlan, propagate
from fgp_ext.sparse import CSR


class FlowStep(nn.Module):
    """One generation of a flow pass: attention over the predecessors (none in the first
    generation: a zero message), then a GRU cell with the node's state as input and the message as
    hidden state."""

    def __init__(self, dim: int):
        super().__init__()
        self.att_dst = nn.Linear(dim, 1, bias=False)
        self.att_src = nn.Linear(dim, 1)
        self.gru = nn.GRUCell(dim, dim)

    def fused(self, h_pos: torch.Tensor, plan: LevelPlan) -> torch.Tensor:
        """The whole pass over ``plan`` in one C++ op (:func:`fgp_ext.ops.flow_pass`), positions in
        and out; the same function as :func:`fgp_ext.levels.propagate` with this module as step."""
        g = self.gru
        return ops.flow_pass(h_pos, plan, self.att_dst.weight, self.att_src.weight, self.att_src.bias,
                             g.weight_ih, g.weight_hh, g.bias_ih, g.bias_hh)

    def forward(self, xs: torch.Tensor, hv: torch.Tensor, level: Level) -> torch.Tensor:
        logit = self.att_dst(hv).index_select(0, level.rows) + self.att_src(xs)          # [E_l, 1]
        msg = ops.gather_attention(xs.unsqueeze(1), logit, CSR(level.indptr, level.entries),
                                   transpose=level.transpose).squeeze(1)                   # [R_l, F]
        return self.gru(hv, msg)  # as FlowerFormer: the node's state is the input, the message the hidden state


class FlowPass(nn.Module):
    """FlowerFormer's flow encoding as a layer on ``(x, csr)``: a forward pass over the topological
    generations of a DAG (every node attends over its predecessors' new states, then a GRU updates
    it), then, with ``bidirectional=True``, the same over the reversed graph with its own weights.
    Each pass is one fused C++ op (:func:`fgp_ext.ops.flow_pass`).

    ``csr`` is the graph (or a batch of graphs) by destination, e.g.
    :func:`~fgp_ext.sparse.csr_from_edge_index` of a PyG ``edge_index``; ``node_ptr`` (optional,
    ``int64 [B+1]``, PyG's ``ptr``) delimits the graphs so that a cycle is reported with its
    graph. The level schedules are rebuilt on every call (two C++ ops, linear in the edges); pass
    ``plans=FlowPass.plans(csr, node_ptr)`` to reuse them.
    """

    def __init__(self, dim: int, bidirectional: bool = True):
        super().__init__()
        self.forward_step = FlowStep(dim)
        self.backward_step = FlowStep(dim) if bidirectional else None

    @staticmethod
    def plans(csr: CSR, node_ptr: torch.Tensor | None = None) -> tuple[LevelPlan, LevelPlan]:
        """The forward and reversed level plans of a DAG (batch) given by destination."""
        csr = csr.with_transpose()
        forward = LevelPlan(ops.level_schedule(csr, ops.topo_levels(csr, node_ptr)))
        reverse = csr.transpose
        backward = LevelPlan(ops.level_schedule(reverse, ops.topo_levels(reverse, node_ptr)))
        return forward, backward

    def forward(self, x: torch.Tensor, csr: CSR | None = None, node_ptr: torch.Tensor | None = None,
                plans: tuple[LevelPlan, LevelPlan] | None = None) -> torch.Tensor:
        if plans is None:
            if csr is None:
                raise ValueError("FlowPass needs the graph: a csr or precomputed plans")
            plans = self.plans(csr, node_ptr)
        forward_plan, backward_plan = plans
        h = self.forward_step.fused(x.index_select(0, forward_plan.order), forward_plan).index_select(
            0, forward_plan.rank)
        if self.backward_step is not None:
            h = self.backward_step.fused(h.index_select(0, backward_plan.order), backward_plan).index_select(
                0, backward_plan.rank)
        return h


class LevelBackend:
    """How a :class:`FlowerFormer` runs its passes and attention on one batch: level schedule and
    fused ops (built once per batch and cached on it). ``fused=False`` runs the passes through the
    generic :func:`fgp_ext.levels.propagate` (one Python step per generation) instead of the fused
    :func:`fgp_ext.ops.flow_pass`. ``reverse_successors``: which successors the reversed pass
    aggregates (see :class:`FlowerFormer`)."""

    def __init__(self, batch, fused: bool = True, reverse_successors: str = "all"):
        self.fused = bool(fused)
        self.reverse_successors = check_reverse_successors(reverse_successors)
        self.forward_plan = LevelPlan(batch.schedule())
        self.backward_plan = LevelPlan(batch.schedule(reverse=True, successors=self.reverse_successors))
        self._batch = batch  # its flow pairs are built (and cached) on the first attend() only

    @classmethod
    def of(cls, batch, reverse_successors: str = "all") -> "LevelBackend":
        cache = batch.__dict__.setdefault("_row_cache", {})
        key = ("level_backend", check_reverse_successors(reverse_successors))
        if key not in cache:
            cache[key] = cls(batch, reverse_successors=reverse_successors)
        return cache[key]

    def flow(self, step: FlowStep, h: torch.Tensor, reverse: bool) -> torch.Tensor:
        plan = self.backward_plan if reverse else self.forward_plan
        if self.fused:
            return step.fused(h.index_select(0, plan.order), plan).index_select(0, plan.rank)
        return propagate(step, h, plan)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        """``[N, H, D]`` attention over flow-related pairs (``q, k, v``: ``[N, H, D]``), fused
        (:func:`fgp_ext.ops.dot_attention`); ``dropout`` drops attention weights after the softmax
        (the original's ``attn_dropout``) inside the same kernel."""
        return ops.dot_attention(q, k, v, self._batch.flow_pairs, dropout=dropout)


class MaskedFlowBackend:
    """The FlowerFormer computation written the way the original code is: per-generation boolean
    masks over *all* edges (a dense ``[depth, E]`` edge mask and ``[depth, N]`` node mask per
    direction, built at collate time); every generation step computes attention scores for all
    edges (masked), scatters messages over the whole batch, runs the GRU on the rows its node mask
    selects and writes them back; the flow-aware attention is dense padded ``[B, H, n, n]``
    attention with a reachability mask (transitive closure by repeated boolean matrix products).

    Same weights, same function as :class:`LevelBackend`; it is the
    reference of the tests and the "masked" peer of the benchmarks
    (``model.node_embeddings(batch, backend=MaskedFlowBackend(batch))``).

    ``reverse_successors="earliest"`` runs the reversed pass as the original code does, not through
    a pruned graph: sinks first (zero message), then the *forward* generations from the last to the
    first, each step updating the predecessors of that generation from their successors in it; a
    node fed into several generations is updated several times, from the same input state, and
    keeps its last update.
    """

    def __init__(self, batch, reverse_successors: str = "all"):
        self.reverse_successors = check_reverse_successors(reverse_successors)
        n, dev = batch.num_nodes, batch.op.device
        src, dst = batch.in_csr.index, batch.in_rows
        self.num_nodes = n
        level = batch.level
        rev_level = reference.topo_levels(batch.out_csr.indptr, batch.out_csr.index, batch.node_ptr)

        def masks(lv, edge_dst):
            depth = int(lv.max()) + 1 if n else 0
            steps = torch.arange(depth, device=dev)[:, None]
            return lv.index_select(0, edge_dst)[None, :] == steps, lv[None, :] == steps

        # forward pass: messages src -> dst; backward pass: dst -> src, generations from the sinks
        self.passes = {False: (src, dst, *masks(level, dst)), True: (dst, src, *masks(rev_level, src))}
        if reverse_successors == "earliest":
            # the original's reversed pass: a sink step, then forward generations depth-1 .. 1
            fwd_edge, _ = masks(level, dst)
            steps = torch.arange(fwd_edge.shape[0] - 1, 0, -1, device=dev)
            edge_mask = torch.cat([torch.zeros(1, src.numel(), dtype=torch.bool, device=dev),
                                   fwd_edge.index_select(0, steps)])
            node_mask = torch.zeros(edge_mask.shape[0], n, dtype=torch.bool, device=dev)
            node_mask[0] = batch.out_csr.indptr.diff() == 0
            hit = edge_mask.nonzero()  # (step, edge): the edge's source is updated at that step
            node_mask[hit[:, 0], src.index_select(0, hit[:, 1])] = True
            self.passes[True] = (dst, src, edge_mask, node_mask)
        # dense padded layout for the attention
        graph = batch.graph
        pos = torch.arange(n, device=dev) - batch.node_ptr.index_select(0, graph)
        b = batch.num_graphs
        nmax = int(batch.node_ptr.diff().max()) if b else 0
        self.slot = graph * nmax + pos
        self.shape = (b, nmax)
        adj = torch.zeros(b, nmax, nmax, device=dev)
        adj[graph.index_select(0, src), pos.index_select(0, src), pos.index_select(0, dst)] = 1.0
        reach = (adj + torch.eye(nmax, device=dev)).clamp_max(1.0)
        for _ in range(max(1, math.ceil(math.log2(max(nmax, 2))))):
            reach = (reach @ reach).clamp_max(1.0)
        self.mask = (reach + reach.transpose(1, 2)) > 0                       # [B, n, n], diagonal set

    def flow(self, step, h, reverse: bool):
        src, dst, edge_mask, node_mask = self.passes[bool(reverse)]
        n = self.num_nodes
        h_in = h  # the pass's input states: the GRU input and the attention query of every update
        for lv in range(edge_mask.shape[0]):
            em = edge_mask[lv]
            logit = (step.att_dst(h_in).index_select(0, dst) + step.att_src(h).index_select(0, src)).squeeze(-1)
            logit = torch.where(em, logit, torch.zeros_like(logit))
            row_max = logit.new_full((n,), float("-inf")).scatter_reduce(
                0, dst, logit.masked_fill(~em, float("-inf")), "amax")
            row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max).detach()
            ex = torch.where(em, torch.exp(logit - row_max.index_select(0, dst)), torch.zeros_like(logit))
            den = ex.new_zeros(n).index_add(0, dst, ex)
            alpha = ex / den.index_select(0, dst).clamp_min(torch.finfo(ex.dtype).tiny)
            msg = h.new_zeros(h.shape).index_add(0, dst, alpha[:, None] * h.index_select(0, src))
            # as the original: the GRU runs on the generation's rows only (boolean selection), and
            # the rows are written back into the whole-batch state
            rows = torch.nonzero(node_mask[lv]).reshape(-1)
            # (GRU input: the node's state; hidden state: the message, zero in the first generation)
            h = h.index_put((rows,), step.gru(h_in.index_select(0, rows), msg.index_select(0, rows)))
        return h

    def attend(self, q, k, v, dropout: float = 0.0):
        """Dense padded attention over the flow-related pairs; ``dropout`` drops attention weights
        (its mask is drawn over the padded ``[B, H, n, n]`` layout, so it is not the level
        backend's mask for the same seed, only the same distribution)."""
        b, nmax = self.shape
        heads, d = q.shape[1], q.shape[2]

        def pad(t):
            return t.new_zeros(b * nmax, heads, d).index_copy(0, self.slot, t).view(b, nmax, heads, d)

        scores = torch.einsum("bihd,bjhd->bhij", pad(q), pad(k)) / math.sqrt(d)
        scores = scores.masked_fill(~self.mask[:, None], float("-inf"))
        weight = torch.softmax(scores, dim=-1)
        if dropout > 0.0:
            weight = ops.dropout(weight, dropout)
        out = torch.einsum("bhij,bjhd->bihd", weight, pad(v))
        return out.reshape(b * nmax, heads, d).index_select(0, self.slot)


#: The authors' NB201 FlowerFormer (their ``cfgs/nb201/FLOWERFormer.yaml``) as constructor
#: arguments: ``FlowerFormer(num_ops, **ORIGINAL_NB201)``; ``fgp run --flowerformer-original``.
#: On NB201 (9 runs, FlowerFormer's fine-tuning recipe) it scores 0.774 supervised-only and 0.830 /
#: 0.837 with FGP (fresh / proxy head), against 0.762 and 0.824 / 0.826 for our default layer at
#: 3 x 128 (``results/flow_encoder.md``).
ORIGINAL_NB201 = {"hidden": 64, "layers": 9, "heads": 8, "dropout": 0.0, "layout": "parallel", "norm": "batch",
                  "flow_relu": True, "attention_dropout": 0.5}

LAYOUTS = ("sequential", "parallel")
NORMS = ("layer", "batch")


def _norm(kind: str, dim: int) -> nn.Module:
    # BatchNorm1d normalises each channel over all nodes of the batch (the original's choice);
    # LayerNorm each node over its channels
    return nn.BatchNorm1d(dim) if kind == "batch" else nn.LayerNorm(dim)


class FlowerFormerLayer(nn.Module):
    """Flow encode (forward + backward pass), flow-aware attention, feed-forward; each with a
    residual connection, dropout and a norm.

    ``layout="sequential"``: ``h = norm(h + flow(h))``, then ``h = norm(h + attention(h))``.
    ``layout="parallel"`` (the original's GraphGPS-style layer): both blocks read the layer input,
    ``h = norm(h + flow(h)) + norm(h + attention(h))``. The feed-forward block follows either way.
    ``norm``: ``"layer"`` or ``"batch"``. ``flow_relu``: a ReLU on the output of the flow passes
    (the original applies one). ``attention_dropout``: dropout on the attention weights."""

    def __init__(self, dim: int, heads: int, dropout: float, attention: bool = True, layout: str = "sequential",
                 norm: str = "layer", flow_relu: bool = False, attention_dropout: float = 0.0):
        super().__init__()
        self.heads = int(heads)
        self.layout = layout
        self.flow_relu = bool(flow_relu)
        self.attention_dropout = float(attention_dropout)
        self.forward_step = FlowStep(dim)
        self.backward_step = FlowStep(dim)
        self.norm_flow = _norm(norm, dim)
        self.attention = bool(attention)
        if self.attention:
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.norm_attention = _norm(norm, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.norm_ffn = _norm(norm, dim)
        self.drop = Dropout(dropout)

    def _attend(self, h: torch.Tensor, backend) -> torch.Tensor:
        n, d = h.shape
        q, k, v = self.qkv(h).view(n, 3, self.heads, d // self.heads).unbind(1)
        p = self.attention_dropout if self.training else 0.0
        out = backend.attend(q, k, v, dropout=p) if p > 0.0 else backend.attend(q, k, v)
        return self.norm_attention(h + self.drop(self.proj(out.reshape(n, d))))

    def forward(self, h: torch.Tensor, backend) -> torch.Tensor:
        flow = backend.flow(self.backward_step, backend.flow(self.forward_step, h, reverse=False), reverse=True)
        if self.flow_relu:
            flow = torch.relu(flow)
        local = self.norm_flow(h + self.drop(flow))
        if not self.attention:
            h = local
        elif self.layout == "parallel":
            h = local + self._attend(h, backend)
        else:
            h = self._attend(local, backend)
        return self.norm_ffn(h + self.drop(self.ffn(h)))


class FlowerFormer(Encoder):
    """Flow-aware graph transformer (FlowerFormer-style), ``out_dim = hidden``.

    Args:
        num_ops: op vocabulary size.
        hidden: state width (divisible by ``heads``).
        layers: number of :class:`FlowerFormerLayer`.
        heads: attention heads of the flow-aware attention.
        dropout: dropout after each block (not inside the flow passes, which are recomputed).
        attention: ``False`` drops the global attention block (flow passes + feed-forward only),
            e.g. for DAGs too large for the quadratic flow-pair relation.
        layout: ``"sequential"`` (default: flow, then attention on its output) or ``"parallel"``
            (the original's: flow and attention both on the layer input, their normed residuals
            summed); see :class:`FlowerFormerLayer`.
        norm: ``"layer"`` (default) or ``"batch"`` (the original's; statistics over the batch's
            nodes, running averages in eval mode).
        flow_relu: a ReLU on the flow passes' output before the residual (the original's).
        attention_dropout: dropout on the attention weights in training (the original uses 0.5 on
            NB201), fused into :func:`fgp_ext.ops.dot_attention`.
        reverse_successors: what a node aggregates in the reversed pass: ``"all"`` its successors
            (generations of the reversed graph), or ``"earliest"`` only its successors of the
            earliest forward generation, as the original code computes it (it revisits the forward
            generations backwards and keeps a node's last update). The two differ only on DAGs where
            a node feeds several forward generations (NB101, DARTS cells; never on NB201).
    """

    name = "flowerformer"

    def __init__(self, num_ops: int, hidden: int = 128, layers: int = 3, heads: int = 4, dropout: float = 0.1,
                 attention: bool = True, reverse_successors: str = "all", layout: str = "sequential",
                 norm: str = "layer", flow_relu: bool = False, attention_dropout: float = 0.0,
                 node_features: int | None = None, node_encoder: nn.Module | None = None):
        super().__init__(num_ops, hidden, dropout, node_features, node_encoder)
        self.reverse_successors = check_reverse_successors(reverse_successors)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if not 0.0 <= float(attention_dropout) < 1.0:
            raise ValueError(f"attention_dropout must be in [0, 1), got {attention_dropout}")
        self.layout, self.norm = layout, norm
        self.flow_relu = bool(flow_relu)
        self.attention_dropout = float(attention_dropout)
        if int(layers) < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if int(heads) < 1 or self.hidden % int(heads):
            raise ValueError(f"heads must be >= 1 and divide hidden ({self.hidden}), got {heads}")
        self.layers = int(layers)
        self.heads = int(heads)
        self.attention = bool(attention)
        self._build_node_encoder()
        self.blocks = nn.ModuleList(FlowerFormerLayer(self.hidden, self.heads, self.dropout, self.attention,
                                                      self.layout, self.norm, self.flow_relu,
                                                      self.attention_dropout)
                                    for _ in range(self.layers))
        self.out_dim = self.hidden

    @property
    def config(self) -> dict:
        return {**super().config, "layers": self.layers, "heads": self.heads, "attention": self.attention,
                "reverse_successors": self.reverse_successors, "layout": self.layout, "norm": self.norm,
                "flow_relu": self.flow_relu, "attention_dropout": self.attention_dropout}

    def node_embeddings(self, batch, backend=None) -> torch.Tensor:
        """``[N, hidden]`` node states. ``backend`` defaults to the level schedule
        (:class:`LevelBackend`); :class:`MaskedFlowBackend` computes the same
        function with per-generation masks (the reference and benchmark peer). A backend built for
        the other ``reverse_successors`` is refused."""
        backend = LevelBackend.of(batch, self.reverse_successors) if backend is None else backend
        theirs = getattr(backend, "reverse_successors", "all")
        if theirs != self.reverse_successors:
            raise ValueError(f"backend aggregates reverse_successors={theirs!r}, the model "
                             f"{self.reverse_successors!r}")
        h = self.initial_states(batch)
        for block in self.blocks:
            h = block(h, backend)
        return h
