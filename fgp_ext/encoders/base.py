"""The shared encoder interface and segment-mean pooling."""
from __future__ import annotations

import torch
from torch import nn

from fgp_ext import ops


def segment_mean(x: torch.Tensor, node_ptr: torch.Tensor) -> torch.Tensor:
    """Mean of the rows of ``x [N, d]`` per graph (``node_ptr [B+1]``); empty graphs give zeros.
    Uses the deterministic compiled ``segment_sum_csr``."""
    counts = node_ptr.diff().clamp_min(1).to(x.dtype).unsqueeze(-1)
    return ops.segment_sum_csr(x, node_ptr) / counts


class Dropout(nn.Module):
    """``nn.Dropout`` on :func:`fgp_ext.ops.dropout`: a counter-based mask, the same on every device
    for the same torch seed, never stored for the backward, and several times cheaper to draw than
    ATen's CPU ``bernoulli_``."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Encoder(nn.Module):
    """Base class: subclasses implement :meth:`node_embeddings`; :meth:`forward` pools them by
    segment mean. ``out_dim`` is the embedding width, ``config`` the constructor arguments."""

    name: str = "encoder"
    out_dim: int

    def __init__(self, num_ops: int, hidden: int = 128, dropout: float = 0.1):
        super().__init__()
        if int(num_ops) < 1:
            raise ValueError(f"num_ops must be >= 1, got {num_ops}")
        if int(hidden) < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_ops = int(num_ops)
        self.hidden = int(hidden)
        self.dropout = float(dropout)

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable); ``build_encoder(self.name, **config)``
        rebuilds the module."""
        return {"num_ops": self.num_ops, "hidden": self.hidden, "dropout": self.dropout}

    def _check(self, batch) -> None:
        if batch.num_nodes and int(batch.op.max()) >= self.num_ops:
            raise ValueError(f"batch has op id {int(batch.op.max())} but the encoder was built for "
                             f"{self.num_ops} ops")

    def node_embeddings(self, batch) -> torch.Tensor:  # pragma: no cover - abstract
        """``[N, out_dim]`` embedding of every node of ``batch``."""
        raise NotImplementedError

    def forward(self, batch) -> torch.Tensor:
        """``[B, out_dim]`` graph embeddings: segment mean of :meth:`node_embeddings`."""
        return segment_mean(self.node_embeddings(batch), batch.node_ptr)
