"""The FGP flow surrogate: the random draws of the published method and a batch-level entry point."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from fgp_ext import ops


class FlowParams(NamedTuple):
    """The random tensors of the surrogate: input vector ``r [k]``, op embeddings ``P [F, k]`` and
    the update matrix ``W [2k, k]``."""

    r: torch.Tensor
    P: torch.Tensor
    W: torch.Tensor


def flow_params(num_ops: int, k: int, std: float, seed: int = 0, dtype: torch.dtype = torch.float32) -> FlowParams:
    """Draw ``(r, P, W)`` exactly as the authors do: ``numpy.random.seed(seed)``, then
    ``r = uniform(0, 1, k)``, one unused ``uniform(0, 1, k)``, ``P = normal(0, std, (num_ops, k))``,
    ``W = normal(0, std, (2k, k))``, all cast to float32 (then to ``dtype``).

    Uses a private ``numpy.random.RandomState`` seeded like the global one, so it reproduces the
    global-seed draws without touching numpy's global state.
    """
    if int(num_ops) < 1 or int(k) < 1:
        raise ValueError(f"num_ops and k must be >= 1, got num_ops={num_ops}, k={k}")
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    rng = np.random.RandomState(seed)
    r = rng.uniform(0, 1, k).astype(np.float32)
    rng.uniform(0, 1, k)  # drawn and unused by the published code; kept for identical streams
    P = rng.normal(0, std, (num_ops, k)).astype(np.float32)
    W = rng.normal(0, std, (2 * k, k)).astype(np.float32)
    return FlowParams(*(torch.from_numpy(a).to(dtype) for a in (r, P, W)))


def flow_surrogate(batch, *, k: int, std: float, alpha: float = 0.5, seed: int = 0, num_ops: int | None = None,
                   dtype: torch.dtype = torch.float32, schedule: str = "auto") -> torch.Tensor:
    """The FGP surrogate ``[B, k]`` of every graph of an :class:`~fgp_ext.graph.ArchBatch`, with the
    authors' random draws for ``(seed, k, std)`` (see :func:`flow_params`). ``num_ops`` is the
    vocabulary size (default: ``max(op) + 1``; pass the space's vocabulary size to reproduce the
    published draws, since it sets the shape of ``P``)."""
    if num_ops is None:
        num_ops = int(batch.op.max()) + 1 if batch.num_nodes else 1
    params = flow_params(num_ops, k, std, seed, dtype)
    dev = batch.device
    return ops.flow_surrogate(batch.op, batch.in_csr, batch.node_ptr, batch.is_source,
                              params.r.to(dev), params.P.to(dev), params.W.to(dev), alpha, schedule)
