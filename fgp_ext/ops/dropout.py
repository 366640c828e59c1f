"""Counter-based dropout: the mask is a hash of (seed, element index), the same on every device and
thread count, never stored (wrapper, autograd, fake kernel and CUDA fallback together)."""
from __future__ import annotations

import torch

from fgp_ext import reference as _ref
from fgp_ext.ops._library import CUDA_KERNELS, ops as _ops

__all__ = ["dropout", "draw_seed"]


def draw_seed() -> int:
    """The seed of a counter-based dropout mask, drawn from torch's default generator (so that
    ``torch.manual_seed`` makes :func:`dropout` and :func:`~fgp_ext.ops.dot_attention`'s masks repeat)."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


def dropout(x: torch.Tensor, p: float, training: bool = True, seed: int | None = None) -> torch.Tensor:
    """Dropout with a counter-based mask: element ``i`` is kept with probability ``1 - p`` by a hash
    of ``(seed, i)`` and scaled by ``1 / (1 - p)``.

    The mask is a pure function of ``seed`` (drawn from torch's default generator when ``None``, so
    ``torch.manual_seed`` makes runs repeat): the same on the CPU at any thread count and on CUDA,
    never stored (the backward reapplies it from the seed), and cheap to draw. Identity when
    ``training`` is false or ``p == 0``. Differentiable in ``x``.
    """
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or float(p) == 0.0:
        return x
    if seed is None:
        seed = draw_seed()
    return _ops.dropout(x, float(p), int(seed))


def _dropout_setup(ctx, inputs, output):
    _, ctx.p, ctx.seed = inputs


def _dropout_backward(ctx, grad):
    return _ops.dropout(grad.contiguous(), ctx.p, ctx.seed), None, None  # the same mask, from the seed


torch.library.register_autograd("fgp::dropout", _dropout_backward, setup_context=_dropout_setup)


@torch.library.register_fake("fgp::dropout")
def _dropout_fake(x, p, seed):
    return x.new_empty(x.shape)  # contiguous, as the kernels return


if not CUDA_KERNELS:
    torch.library.register_kernel("fgp::dropout", "cuda", _ref.dropout)
