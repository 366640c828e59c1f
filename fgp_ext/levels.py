"""Generation-by-generation propagation over a batch of DAGs, without masks.

Flow-aware encoders (GATES, DAGNN, FlowerFormer) update a node only after all its predecessors
were updated in the same pass. Written the usual way, every generation step touches the whole
batch through boolean masks (``O(depth * E)`` work per pass) and writes rows in place. Here a
:class:`LevelPlan`, built once per batch from the C++ :func:`fgp_ext.ops.level_schedule`, gives every
generation its contiguous slice of node positions and predecessor entries, and :func:`propagate`
runs a user step on one generation at a time:

* forward: ``H[level l] = step(H[predecessors of level l], H0[level l], level)`` for l = 0, 1, ...
  (the first generation has no predecessors: its step sees zero entries), each step touching only
  its own rows and entries;
* backward: the generations in reverse, each step recomputed and differentiated on its own slice
  (``torch.autograd.grad``), the gradients of the predecessor rows accumulated without atomics
  (entries pre-grouped by source per level).

Total work is ``O(N + E)`` per pass whatever the depth; memory is one ``[N, F]`` buffer per pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fgp_ext import ops
from fgp_ext.ops import LevelSchedule
from fgp_ext.sparse import CSR, csr_row_ids


@dataclass(frozen=True)
class Level:
    """One generation of a :class:`LevelPlan`: node positions ``start:stop`` and what a step needs.

    * ``src``: ``int64 [E_l]`` position of the predecessor of every entry (entries grouped by node);
    * ``indptr``: ``int64 [R_l + 1]`` local CSR of the generation's nodes over its entries
      (entry ``e`` is row ``rows[e]``); ``entries``: ``arange(E_l)``, the identity gather index, and
      ``transpose``: the transposed local CSR, for :func:`fgp_ext.ops.gather_attention`;
    * ``group_perm``, ``group_ptr``, ``group_src``: entries grouped by predecessor, to sum the
      gradients of the gathered rows per distinct predecessor before the scatter.
    """

    start: int
    stop: int
    src: torch.Tensor
    indptr: torch.Tensor
    rows: torch.Tensor
    entries: torch.Tensor
    transpose: CSR
    group_perm: torch.Tensor
    group_ptr: torch.Tensor
    group_src: torch.Tensor


class LevelPlan:
    """Per-generation slices of a :class:`~fgp_ext.ops.LevelSchedule` (built once per batch and
    direction, vectorised; a short Python loop over generations slices views).

    ``order``/``rank`` convert node order to positions and back; ``levels`` lists every generation
    (the first one with no entries). The whole-batch tensors (``level_ptr``, ``indptr``,
    ``index`` in positions; entries grouped by (level, predecessor): ``group_perm``, ``group_ptr``,
    ``group_src``, ``group_level_ptr``) feed the fused :func:`fgp_ext.ops.flow_pass`.
    """

    def __init__(self, schedule: LevelSchedule):
        self.order, self.rank = schedule.order, schedule.rank
        self.level_ptr, self.indptr, self.index = schedule.level_ptr, schedule.csr.indptr, schedule.csr.index
        # entries grouped by (level, predecessor), computed by the C++ level_schedule
        self.group_level_ptr, self.group_perm = schedule.group_level_ptr, schedule.group_perm
        self.group_ptr, self.group_src = schedule.group_ptr, schedule.group_src
        self._levels = None

    @property
    def levels(self) -> list[Level]:
        """Per-generation slices for :func:`propagate` (built on first use; the fused
        :func:`fgp_ext.ops.flow_pass` reads the whole-batch tensors only)."""
        if self._levels is None:
            dev = self.index.device
            entry_ptr = self.indptr.index_select(0, self.level_ptr)
            rows = csr_row_ids(self.indptr, self.index.numel())
            lp, ep = self.level_ptr.tolist(), entry_ptr.tolist()
            level_groups = self.group_level_ptr.tolist()
            levels = []
            for lv in range(len(lp) - 1):
                s, t, es, et = lp[lv], lp[lv + 1], ep[lv], ep[lv + 1]
                g0, g1 = level_groups[lv], level_groups[lv + 1]
                ne = et - es
                local_rows = rows[es:et] - s
                entries = torch.arange(ne, device=dev)
                levels.append(Level(
                    start=s, stop=t, src=self.index[es:et], indptr=self.indptr[s:t + 1] - es, rows=local_rows,
                    entries=entries, transpose=CSR(torch.arange(ne + 1, device=dev), local_rows, entries),
                    group_perm=self.group_perm[es:et] - es, group_ptr=self.group_ptr[g0:g1 + 1] - es,
                    group_src=self.group_src[g0:g1]))
            self._levels = levels
        return self._levels


class _Propagate(torch.autograd.Function):
    """``H = propagate(step, H0)`` in positions; see :func:`propagate`. The backward recomputes each
    generation's step (nothing per generation is stored but the final buffer)."""

    @staticmethod
    def forward(ctx, h0, plan, step, *params):
        h = h0.clone()
        for lv in plan.levels:  # grad mode is off inside Function.forward
            h[lv.start:lv.stop] = step(h.index_select(0, lv.src), h0[lv.start:lv.stop], lv)
        ctx.plan, ctx.step = plan, step
        ctx.save_for_backward(h0, h, *params)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        h0, h, *params = ctx.saved_tensors
        h0, h = h0.detach(), h.detach()  # h is this node's own output: never differentiate into it
        trainable = [i for i, p in enumerate(params) if ctx.needs_input_grad[3 + i]]
        train_params = [params[i] for i in trainable]
        param_grads: list[torch.Tensor | None] = [None] * len(params)
        g = grad.clone()
        for lv in reversed(ctx.plan.levels):
            with torch.enable_grad():
                xs = h.index_select(0, lv.src).requires_grad_(True)
                hv = h0[lv.start:lv.stop].requires_grad_(True)
                out = ctx.step(xs, hv, lv)
                grads = torch.autograd.grad(out, [xs, hv, *train_params], g[lv.start:lv.stop], allow_unused=True)
            gx, gh = grads[0], grads[1]
            # the generation's rows were consumed: what reaches H0 there is d step / d H0
            g[lv.start:lv.stop] = gh if gh is not None else 0.0
            if gx is not None:
                # distinct predecessors only: index_add_ without repeated rows is deterministic
                g.index_add_(0, lv.group_src, ops.gather_segment_sum(gx, CSR(lv.group_ptr, lv.group_perm)))
            for i, pg in zip(trainable, grads[2:]):
                if pg is not None:
                    param_grads[i] = pg if param_grads[i] is None else param_grads[i] + pg
        return (g, None, None, *param_grads)


def propagate(step, h: torch.Tensor, plan: LevelPlan, params=None) -> torch.Tensor:
    """Run ``step`` generation by generation over the DAGs of ``plan``.

    Args:
        step: ``step(xs, hv, level) -> [R_l, F]`` computes the new states of the generation's nodes
            from ``xs [E_l, F]``, the current states of their predecessors (one row per entry; the
            predecessors were updated earlier in this pass), and ``hv [R_l, F]``, the nodes' states
            before the pass. It must be deterministic (no dropout): the backward recomputes it.
        h: ``[N, F]`` node states in node order.
        plan: the batch's :class:`LevelPlan` (forward or reversed graph).
        params: tensors ``step`` uses that need gradients (default: ``step.parameters()`` when
            ``step`` is an ``nn.Module``).

    Every generation is stepped, the first one with zero entries (``xs`` is ``[0, F]``; a step that
    should leave sources unchanged returns ``hv`` when ``level.src`` is empty). Returns ``[N, F]``
    in node order. Differentiable in ``h`` and ``params`` (first order).
    """
    if params is None:
        params = list(step.parameters()) if isinstance(step, torch.nn.Module) else []
    h_pos = h.index_select(0, plan.order)
    return _Propagate.apply(h_pos, plan, step, *params).index_select(0, plan.rank)
