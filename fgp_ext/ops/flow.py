"""The fused flow pass of flow-aware encoders (FlowerFormer's attention + GRU step over every
generation of a level schedule, in one call), with its autograd, fake kernels and CUDA fallbacks.

``fgp::flow_pass`` is the public op; ``fgp::_flow_pass_forward`` computes it together with the
per-level intermediates that ``fgp::_flow_pass_backward`` reads. The public op is a composite of
the forward (registered below), so autograd, ``torch.compile`` and the fallbacks are defined once,
on the internal ops."""
from __future__ import annotations

import torch

from fgp_ext import reference as _ref
from fgp_ext.ops._library import CUDA_KERNELS, ops as _ops

__all__ = ["flow_pass"]

_NUM_INPUTS = 15
_FIRST_WEIGHT = 8  # h0, the 7 schedule tensors, then the 7 weights


def flow_pass(h0: torch.Tensor, plan, att_dst: torch.Tensor, att_src: torch.Tensor, att_bias: torch.Tensor,
              w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """One whole flow pass of a flow-aware encoder, fused in C++ (one call whatever the depth).

    ``h0 [N, F]`` holds the node states in the positions of ``plan`` (a
    :class:`fgp_ext.levels.LevelPlan`; ``h.index_select(0, plan.order)``). For every generation
    ``l`` and node ``v`` of it, over its predecessors ``u`` (already updated in this pass)::

        logit_u = att_dst . h0[v] + (att_src . h[u] + att_bias)
        m_v     = sum_u softmax(logit)_u * h[u]          # 0 in the first generation
        h[v]    = GRUCell(h0[v], m_v)    # input h0[v], hidden state m_v (torch.nn.GRUCell equations:
                                         # w_ih, w_hh [3F, F]; b_ih, b_hh [3F])

    Returns ``[N, F]`` in positions. Differentiable in ``h0`` and every weight; the backward walks
    the generations in reverse from intermediates saved by the forward, and sums gradients per
    distinct predecessor (no atomics).
    """
    return _ops._flow_pass_forward(h0, plan.level_ptr, plan.indptr, plan.index, plan.group_level_ptr,
                                   plan.group_perm, plan.group_ptr, plan.group_src, att_dst.reshape(-1),
                                   att_src.reshape(-1), att_bias.reshape(1), w_ih, w_hh, b_ih, b_hh)[0]


# The public op is the forward's first output: one definition of autograd and fake shapes.
_composite = torch.library.Library("fgp", "IMPL")
_composite.impl("flow_pass", lambda *args: _ops._flow_pass_forward(*args)[0], "CompositeImplicitAutograd")


# ---- autograd (on the internal forward, whose extra outputs are the saved intermediates) -------
def _forward_setup(ctx, inputs, output):
    ctx.save_for_backward(*output, *inputs)
    ctx.mark_non_differentiable(*output[1:])


def _forward_backward(ctx, grad, *unused_intermediate_grads):
    saved = ctx.saved_tensors
    outputs, inputs = saved[:len(saved) - _NUM_INPUTS], saved[len(saved) - _NUM_INPUTS:]
    grads = _ops._flow_pass_backward(grad.contiguous(), *outputs, *inputs)
    result = [None] * _NUM_INPUTS  # no gradient for the schedule tensors
    result[0] = grads[0]
    result[_FIRST_WEIGHT:] = grads[1:]
    return tuple(result)


torch.library.register_autograd("fgp::_flow_pass_forward", _forward_backward, setup_context=_forward_setup)


# ---- fake kernels -----------------------------------------------------------------------------
@torch.library.register_fake("fgp::_flow_pass_forward")
def _forward_fake(h0, level_ptr, indptr, index, *rest):
    n, f = h0.shape
    return (torch.empty_like(h0), h0.new_empty((n, f)), h0.new_empty((n, 2 * f)), h0.new_empty((n, f)),
            h0.new_empty((n, f)), h0.new_empty(index.shape))


@torch.library.register_fake("fgp::_flow_pass_backward")
def _backward_fake(grad, h, msg, rz, n, gh_n, logit, h0, *args):
    return (torch.empty_like(h0), *(torch.empty_like(p) for p in args[_FIRST_WEIGHT - 1:]))


# ---- CUDA fallbacks ---------------------------------------------------------------------------
if not CUDA_KERNELS:
    torch.library.register_kernel("fgp::_flow_pass_forward", "cuda", _ref.flow_pass_forward)
    torch.library.register_kernel("fgp::_flow_pass_backward", "cuda", _ref.flow_pass_backward)
